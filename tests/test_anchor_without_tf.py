"""benchmarks/anchor_without_tf.py: where TensorFlow is absent, the script it runs sees
inert stand-ins for tensorflow (and its submodules) and tensorflow_datasets (and flax's
TensorBoard writer, where flax is installed), and receives its own arguments."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRAPPER = os.path.join(ROOT, "benchmarks", "anchor_without_tf.py")


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                    reason="TensorFlow is installed: the wrapper leaves it alone")
def test_stand_ins_replace_tensorflow_and_arguments_pass_through(tmp_path):
  script = tmp_path / "uses_tf.py"
  script.write_text(
      "import sys\n"
      "import tensorflow.compat.v2 as tf\n"
      "import tensorflow_datasets as tfds\n"
      "class Model(tf.Module):\n"
      "  pass\n"
      "tf.zeros(3)(1)[0].anything\n"
      "assert list(tfds.load('x')) == []\n"
      "print('ran', sys.argv[1:], type(tf).__name__)\n")
  out = subprocess.run([sys.executable, WRAPPER, str(script), "--flag", "7"],
                       capture_output=True, text=True, check=True).stdout
  assert "stand-ins for ['tensorflow', 'tensorflow_datasets', 'flax.metrics.tensorboard']" in out
  assert "ran ['--flag', '7'] _InertModule" in out


def test_without_a_script_it_explains_itself():
  proc = subprocess.run([sys.executable, WRAPPER], capture_output=True, text=True)
  assert proc.returncode != 0 and "anchor_without_tf.py PATH/TO/lo_pes_bench.py" in proc.stderr
