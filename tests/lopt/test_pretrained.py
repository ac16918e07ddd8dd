"""The learned optimizers shipped in ``metaopt/pretrained`` load by name and work."""

import jax
import numpy as np
import optax
import pytest

import metaopt
import tasks
from metaopt.lopt import io
from metaopt.train import train


def test_every_shipped_file_loads_with_provenance():
  names = io.pretrained_names()
  assert "mlp-digits-v1" in names
  for name in names:
    lopt, theta, meta = io.load_meta_params(name)
    assert meta["trained_on"], name  # The leaderboard's leakage guard needs it.
    assert meta["meta_training_device_hours"] > 0
    assert meta["license"]
    assert jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda x: bool(np.all(np.isfinite(x))), theta))


def test_mlp_digits_v1_beats_untrained_and_default_adam_on_held_out_tasks():
  """Fresh tasks of the meta-training family (seeds never used in meta-training)."""
  family = tasks.get_family("mlp_digits_w32_d2_family")
  lopt, _, _ = io.load_meta_params("mlp-digits-v1")
  opts = {"learned": metaopt.load("mlp-digits-v1"),
          "untrained": lopt.transform(lopt.init_meta_params(jax.random.PRNGKey(0))),
          "adam": optax.adam(1e-3)}
  steps, final = 150, {k: [] for k in opts}
  for i in range(2):
    task = family.task(family.sample(jax.random.PRNGKey(20_000 + i)))
    for name, opt in opts.items():
      loss = train(task, opt, steps, seed=20_000 + i, eval_every=steps).train_loss
      final[name].append(float(np.mean(loss[-15:])))
  learned, untrained, adam = (np.mean(final[k]) for k in ("learned", "untrained", "adam"))
  assert np.isfinite(learned)
  assert learned < 0.5 * adam, final
  assert learned < 0.5 * untrained, final


def test_unknown_shipped_name_lists_known_ones():
  with pytest.raises(Exception, match="mlp-digits-v1"):
    metaopt.load("mlp-digits-v2")
