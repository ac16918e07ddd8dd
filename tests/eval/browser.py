"""Headless Chromium for the leaderboard page tests (Debian's `chromium`, installed by
scripts/setup.sh when run as root)."""

import os
import shutil
import subprocess
from typing import Optional


def chromium() -> Optional[str]:
  """Path of a Chromium binary, or None."""
  for name in ("chromium", "chromium-browser", "google-chrome"):
    path = shutil.which(name)
    if path:
      return path
  return None


def dump_dom(index: str, profile_dir) -> str:
  """The DOM of the page ``index`` after its JavaScript ran (5 s virtual time)."""
  cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile_dir}",
         "--virtual-time-budget=5000", "--dump-dom", f"file://{os.path.abspath(index)}"]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
