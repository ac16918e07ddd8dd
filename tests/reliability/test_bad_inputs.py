"""Bad inputs end in one clear error naming the value and the fix, not a traceback or a
wrong answer (docs/reliability.md)."""

import pytest

from metaopt.meta import config as config_lib


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", ""])
def test_run_name_that_escapes_the_run_dir_is_refused(name):
  with pytest.raises(ValueError, match=r"run.name=.*not a plain file name.*run.run_dir"):
    config_lib.from_dict({"run.name": name})
