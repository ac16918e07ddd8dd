"""One job per resource: an exclusive, process-owned lock on a file.

``hold(lock_path, resource, fix)`` takes ``fcntl.flock`` on ``lock_path`` for as long as
the ``with`` block runs and writes the holder into the file (pid, host, start time,
command line), so a second job is refused at once with one line naming the first
one and the fix.

Stale locks cannot block anyone: the kernel drops an ``flock`` when its process
exits, however it exits (SIGKILL included). A lock file that still names a holder
when the lock is free is the trace of a job that died without releasing it; the next
job takes the lock over and says so (``warnings.warn``). A normal exit empties the
file. The file itself stays (deleting it would race with a job opening it).

The lock is advisory and local: it does not protect a directory on a network file
system shared by several machines.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
import warnings
from typing import Any, Dict, Iterator, Optional


class RunLockError(RuntimeError):
  """Another process holds the lock."""


def holder_record() -> Dict[str, Any]:
  """What the lock file says about this process."""
  return {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "command": " ".join(sys.argv)[:500]}


def read_holder(fd: int) -> Optional[Dict[str, Any]]:
  """The holder written in an open lock file (``None`` for an empty file); a file
  written by an older version (a bare pid) reads as ``{"pid": ...}``."""
  text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
  if not text:
    return None
  try:
    record = json.loads(text)
  except json.JSONDecodeError:
    return {"pid": text}
  return record if isinstance(record, dict) else {"pid": text}


def describe(record: Optional[Dict[str, Any]]) -> str:
  """``process 123 on host h (started ..., command ...)``."""
  if not record:
    return "another process"
  out = f"process {record.get('pid', '?')}"
  if record.get("host"):
    out += f" on host {record['host']}"
  details = [f"started {record['started']}" if record.get("started") else "",
             f"command: {record['command']}" if record.get("command") else ""]
  details = [d for d in details if d]
  return out + (f" ({'; '.join(details)})" if details else "")


@contextlib.contextmanager
def hold(lock_path: str, resource: str, fix: str) -> Iterator[None]:
  """Holds an exclusive lock on ``lock_path`` (created) while the block runs.

  Args:
    lock_path: the lock file.
    resource: what the lock protects, for the message (``run directory runs/x``).
    fix: what the user should do instead (ends the one-line message).

  Raises:
    RunLockError: another process holds it: ``<resource> is in use by process N on
      host H (started T; command: C); <fix>``.
  """
  parent = os.path.dirname(os.path.abspath(lock_path))
  os.makedirs(parent, exist_ok=True)
  fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise RunLockError(f"{resource} is in use by {describe(read_holder(fd))}; "
                         f"{fix}") from None
    stale = read_holder(fd)
    if stale:
      warnings.warn(f"{lock_path}: {describe(stale)} held this lock and did not release it "
                    f"(killed?); taking it over.", stacklevel=3)
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder_record()) + "\n").encode(), 0)
    os.fsync(fd)
    try:
      yield
    finally:
      os.ftruncate(fd, 0)  # A clean release: the next job sees no stale holder.
  finally:
    os.close(fd)  # Releases the lock.
