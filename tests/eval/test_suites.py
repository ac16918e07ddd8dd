"""Suites: validation, content hashes, version pinning, database version guard."""

import copy
import json

import pytest

from metaopt.eval import suites
from metaopt.eval.store import ResultsDB, SuiteMismatchError
from tests.eval import tiny


def test_shipped_suites_load_and_released_ones_are_pinned():
  lock = json.load(open(suites.LOCK_PATH))
  for name in suites.suite_names():
    s = suites.load(name)
    if all(t.target for t in s.tasks):  # Released: its targets are frozen.
      assert lock[s.id] == s.hash, f"{s.id} is not pinned in LOCK.json"
    assert s.tuning_seed not in s.seeds
  assert {"demo", "v2", "v3"} <= set(suites.suite_names())


def test_the_v1_protocol_is_retired():
  content = tiny.suite_content()
  content["protocol"] = "v1"
  with pytest.raises(suites.SuiteError, match="retired"):
    suites.from_dict(content)


def test_shipped_suite_tasks_exist():
  import tasks  # pylint: disable=import-outside-toplevel
  known = set(tasks.task_names())
  for name in suites.suite_names():
    missing = [t.task for t in suites.load(name).tasks if t.task not in known]
    assert not missing, f"suite {name} names unknown tasks {missing}"


def test_changed_content_without_version_bump_is_refused():
  content = tiny.suite_content()
  s = suites.from_dict(content)
  lock = {s.id: s.hash}
  assert suites.from_dict(copy.deepcopy(content), lock=lock).hash == s.hash
  changed = copy.deepcopy(content)
  changed["tasks"][0]["steps"] = 90
  with pytest.raises(suites.SuiteError, match="without bumping its version"):
    suites.from_dict(changed, lock=lock)
  changed["version"] = 2  # A new version is a new suite: accepted.
  assert suites.from_dict(changed, lock=lock).id == "tiny@2"


def test_database_refuses_same_version_with_other_content(tmp_path):
  content = tiny.suite_content()
  with ResultsDB(str(tmp_path / "r.db")) as db:
    db.register_suite(suites.from_dict(content))
    db.register_suite(suites.from_dict(content))  # Same content: fine.
    changed = copy.deepcopy(content)
    changed["seeds"] = [0, 1, 5]
    with pytest.raises(SuiteMismatchError, match="version bump"):
      db.register_suite(suites.from_dict(changed))
    changed["version"] = 2
    db.register_suite(suites.from_dict(changed))
    assert db.suite_hash("tiny", 1) != db.suite_hash("tiny", 2)


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.update(bogus=1), "unknown key"),
    (lambda c: c.pop("version"), "missing required key 'version'"),
    (lambda c: c.update(tuning_seed=0), "separate validation seed"),
    (lambda c: c["tasks"][0].update(eval_every=7), "must be positive and divide"),
    (lambda c: c["tasks"][0].update(budget=3), "unknown key"),
    (lambda c: c["target_setting"].update(grid=3), "unknown 'target_setting' key"),
    (lambda c: c.update(search_spaces={"adam": {"learning_rate": ["cubic", 1, 2]}}),
     "search_spaces.adam.*expected \\[KIND"),
    (lambda c: c.update(seeds=[0, 1]), ">= 3 studies"),
    (lambda c: c.update(tasks=[c["tasks"][0], c["tasks"][0]]), "duplicate task"),
    (lambda c: c.update(r_max=1.0), "r_max"),
])
def test_bad_suites_give_clear_errors(mutate, message):
  content = tiny.suite_content()
  mutate(content)
  with pytest.raises(suites.SuiteError, match=message):
    suites.from_dict(content)


def test_unknown_suite_lists_shipped(tmp_path):
  with pytest.raises(suites.SuiteError, match="Known: .*demo.*not a suite file's path"):
    suites.load("nope")
  with pytest.raises(suites.SuiteError, match="Did you mean v3"):
    suites.load("v33")
  bad = tmp_path / "bad.json"
  bad.write_text("{")
  with pytest.raises(suites.SuiteError, match="not valid JSON"):
    suites.load(str(bad))
