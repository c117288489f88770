#!/usr/bin/env bash
# Install everything (scripts/install.sh: the tested versions of constraints.txt, or the newest with
# SEGCLIP_LATEST=1) and run the test suite.  Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
VENV=${SEGCLIP_VENV:-.venv}
# What this run tested with: INT8 results depend on the library versions and on the CPU's instruction
# set (VNNI or not: segclip.cpu), so the log says both before the first test.
echo "python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())'); CPU: $("$VENV/bin/python" -m segclip.cpu)"
"$VENV/bin/python" -m pip list --format=freeze 2>/dev/null \
  | grep -iE '^(torch|torchvision|numpy|onnx|onnxruntime|onnxruntime-gpu|onnxruntime_extensions|onnxslim|onnxconverter-common|openvino|tensorrt|tritonclient|open_clip_torch|rasterio)==' \
  | tr '\n' ' '
echo
"$VENV/bin/python" -m pytest -q "$@"
