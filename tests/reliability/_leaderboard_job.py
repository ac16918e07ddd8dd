"""A leaderboard job for the kill test: ``python -m tests.reliability._leaderboard_job
SUITE_JSON DB PAUSE_S`` runs the tiny suite (adam + sgd) and prints its stats as JSON.

``PAUSE_S`` sleeps before each finished run is stored, so that a kill lands at a
random point of a job whose runs otherwise take milliseconds; it does not change any
number.
"""

import json
import sys
import time

from metaopt.eval import protocol
from tests.eval import tiny


def main() -> None:
  suite_path, db, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
  tiny.register()
  store = protocol.store_outcome

  def slow_store(*args, **kwargs):
    time.sleep(pause)
    return store(*args, **kwargs)

  protocol.store_outcome = slow_store
  stats = protocol.run_leaderboard(suite_path, ["sgd"], db_path=db, progress=False,
                                   log=lambda m: None)
  print(json.dumps(stats), flush=True)


if __name__ == "__main__":
  main()
