#!/usr/bin/env bash
# Install segclip on a fresh machine: .venv with torch + torchvision (a matching pair from the
# registry; the CUDA build also runs on CPU-only machines), segclip itself (editable, with the test
# tools), and the separate Triton server-side environment (numpy<2 + onnxruntime + nvidia-pytriton)
# that `segclip serve` uses when no `tritonserver` is on PATH.  Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
# torch and torchvision together, so pip picks builds that match each other.
.venv/bin/python -m pip install -q torch torchvision
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/segclip serve-env
echo "segclip installed: $(.venv/bin/segclip --version)"
