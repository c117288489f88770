#!/usr/bin/env bash
# Install segclip on a fresh machine: .venv with torch + torchvision (a matching pair from the
# registry; the CUDA build also runs on CPU-only machines), segclip itself (editable, with the test
# tools), and the separate Triton server-side environment (numpy<2 + onnxruntime + nvidia-pytriton)
# that `segclip serve` uses when no `tritonserver` is on PATH.  Safe to re-run.
#
# The versions are the tested set of constraints.txt (pip -c): CI and a fresh clone get what the suite
# passed with, not whatever the registry serves that day.  SEGCLIP_LATEST=1 installs the newest releases
# instead (scripts/upgrade-check.sh does, into .venv-latest); SEGCLIP_VENV picks the venv (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${SEGCLIP_VENV:-.venv}
if [ "${SEGCLIP_LATEST:-0}" = 1 ]; then
  PIN=(--upgrade --upgrade-strategy eager)
  echo "SEGCLIP_LATEST=1: installing the newest releases into $VENV (constraints.txt not applied)"
else
  PIN=(-c constraints.txt)
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
# The CUDA build of torch is several GB from the registry: a dropped connection must not fail the
# install.  pip resumes a broken download (--resume-retries), and the whole step is retried.
pip_install() {
  local try
  for try in 1 2 3; do
    "$VENV/bin/python" -m pip install -q --retries 10 --resume-retries 20 "$@" && return 0
    echo "pip install $* failed (try $try of 3); retrying" >&2
    sleep $((try * 10))
  done
  return 1
}
# torch and torchvision together, so pip picks builds that match each other.
pip_install "${PIN[@]}" torch torchvision
pip_install "${PIN[@]}" -e ".[dev]"
# the server env is its own venv with its own requirements (segclip.serving.env): no constraints.txt there
"$VENV/bin/segclip" serve-env
echo "segclip installed: $("$VENV/bin/segclip" --version)"
