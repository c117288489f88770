"""Static checks over the whole tree (ruff.toml): undefined names, unused imports and variables,
syntax errors.  Most TensorRT and GPU code cannot run on a CPU-only machine; this test still reads
every line of it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_no_undefined_names_or_dead_imports():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
