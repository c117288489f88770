#!/usr/bin/env bash
# Install everything (scripts/install.sh) and run the test suite.  Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/python -m pytest -q "$@"
