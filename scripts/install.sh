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
# The CUDA build of torch is several GB from the registry: a dropped connection must not fail the
# install.  pip resumes a broken download (--resume-retries), and the whole step is retried.
pip_install() {
  local try
  for try in 1 2 3; do
    .venv/bin/python -m pip install -q --retries 10 --resume-retries 20 "$@" && return 0
    echo "pip install $* failed (try $try of 3); retrying" >&2
    sleep $((try * 10))
  done
  return 1
}
# torch and torchvision together, so pip picks builds that match each other.
pip_install torch torchvision
pip_install -e ".[dev]"
.venv/bin/segclip serve-env
echo "segclip installed: $(.venv/bin/segclip --version)"
