"""Every ```python / ```bash block of README.md and docs/*.md runs, or says why not.

A block is executed as written (python: a fresh interpreter; bash: ``bash -euo
pipefail``), in a temporary folder where ``configs``, ``scripts`` and ``benchmarks``
link to the checkout's, on CPU with wandb disabled. An HTML comment on the line before
the opening fence changes that:

* ``<!-- not-run: REASON -->``: not executed (a usage line, minutes of work, several
  hosts); the reason is required.
* ``<!-- run: [slow;] OLD => NEW[; OLD => NEW ...] -->``: executed after the textual
  replacements (tiny step counts, ``--print-config``), each of which must still match;
  ``slow`` runs it only with ``-m slow``.

Blocks without a language (program output, diagrams) are not code. ``PENDING`` gives
the marker of blocks in files this test's owner does not edit, keyed by file and the
block's first line, until the file carries the marker itself.
"""

import dataclasses
import glob
import os
import re
import subprocess
import sys
from typing import List, Optional, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LANGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
MARKER = re.compile(r"^\s*<!--\s*(not-run|run)\s*:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
LINKED = ("configs", "scripts", "benchmarks")
TIMEOUT_S = 600

# Markers for blocks of files whose owner has not added them yet, keyed by file and the
# block's first line: ``{(path, first line): "not-run: reason" | "run: ..."}``. Empty
# when every file carries its own markers (the test fails on an entry that stops
# matching, so it cannot go stale).
PENDING = {}


@dataclasses.dataclass
class Block:
  path: str  # relative to ROOT
  line: int  # of the opening fence, 1-based
  lang: str  # python | bash
  code: str
  marker: Optional[Tuple[str, str]]  # (kind, argument) or None

  @property
  def id(self):
    return f"{self.path}:{self.line}"


def doc_files() -> List[str]:
  return ["README.md"] + sorted(os.path.relpath(p, ROOT)
                                for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))


def blocks(path: str) -> List[Block]:
  lines = open(os.path.join(ROOT, path), encoding="utf-8").read().split("\n")
  out, i = [], 0
  while i < len(lines):
    m = FENCE.match(lines[i])
    if not m:
      i += 1
      continue
    j = i + 1
    while j < len(lines) and not lines[j].strip().startswith("```"):
      j += 1
    lang = LANGS.get(m.group(2).lower())
    if lang:
      k = i - 1
      while k >= 0 and not lines[k].strip():
        k -= 1
      mm = MARKER.match(lines[k]) if k >= 0 else None
      code = "\n".join(lines[i + 1:j]) + "\n"
      marker = (mm.group(1), mm.group(2)) if mm else None
      if marker is None:
        first = next((ln.strip() for ln in lines[i + 1:j] if ln.strip()), "")
        pending = next((v for (f, start), v in PENDING.items()
                        if f == path and first.startswith(start)), None)
        if pending:
          kind, arg = pending.split(":", 1)
          marker = (kind, arg.strip())
      out.append(Block(path, i + 1, lang, code, marker))
    i = j + 1
  return out


def all_blocks() -> List[Block]:
  return [b for f in doc_files() for b in blocks(f)]


def _params():
  out = []
  for b in all_blocks():
    if b.marker and b.marker[0] == "not-run":
      continue
    slow = bool(b.marker) and b.marker[1].split(";")[0].strip() == "slow"
    out.append(pytest.param(b, id=b.id, marks=[pytest.mark.slow] if slow else []))
  return out


def prepared(block: Block) -> str:
  """The block's code after its marker's replacements (each must match)."""
  code = block.code
  if not block.marker:
    return code
  parts = [p.strip() for p in block.marker[1].split(";") if p.strip()]
  for part in parts:
    if part == "slow":
      continue
    old, sep, new = part.partition("=>")
    assert sep, f"{block.id}: marker part {part!r} is not 'OLD => NEW'"
    old, new = old.strip(), new.strip()
    assert old in code, f"{block.id}: marker replaces {old!r}, which the block no longer has"
    code = code.replace(old, new)
  return code


def test_every_code_block_runs_or_says_why_not():
  seen = set()
  for b in all_blocks():
    if b.marker:
      kind, arg = b.marker
      assert kind != "not-run" or arg, f"{b.id}: not-run needs a reason"
      if kind == "run":
        prepared(b)  # Its replacements still match.
    seen.add(b.path)
  used = {(f, start) for (f, start) in PENDING for b in blocks(f)
          if b.code.lstrip().startswith(start)}
  assert used == set(PENDING), f"PENDING entries that match no block: {set(PENDING) - used}"
  assert "README.md" in seen


@pytest.mark.parametrize("block", _params())
def test_code_block(block, tmp_path):
  for name in LINKED:
    os.symlink(os.path.join(ROOT, name), tmp_path / name)
  env = dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="disabled",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
             MPLBACKEND="Agg")
  code = prepared(block)
  cmd = ([sys.executable, "-c", code] if block.lang == "python"
         else ["bash", "-euo", "pipefail", "-c", code])
  proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=TIMEOUT_S)
  assert proc.returncode == 0, (f"{block.id} failed (exit {proc.returncode}):\n{code}\n"
                                f"--- stdout ---\n{proc.stdout[-3000:]}\n"
                                f"--- stderr ---\n{proc.stderr[-3000:]}")
