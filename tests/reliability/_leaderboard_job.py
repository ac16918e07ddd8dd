"""A leaderboard job for the kill test: ``python -m tests.reliability._leaderboard_job
SUITE_JSON DB PAUSE_S`` runs the tiny suite (adam + sgd) and prints its stats as JSON.

``PAUSE_S`` sleeps after each run is trained (before it is stored), so that a kill
lands at a random point of a job whose runs otherwise take milliseconds; it does not
change any number.
"""

import json
import sys
import time

from metaopt.eval import leaderboard
from metaopt.eval.runner import Runner
from tests.eval import tiny


def main() -> None:
  suite_path, db, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
  tiny.register()
  execute = Runner.execute

  def slow_execute(self, *args, **kwargs):
    out = execute(self, *args, **kwargs)
    time.sleep(pause)
    return out

  Runner.execute = slow_execute
  stats = leaderboard.run_leaderboard(suite_path, ["sgd"], db_path=db, progress=False,
                                      log=lambda m: None)
  print(json.dumps(stats), flush=True)


if __name__ == "__main__":
  main()
