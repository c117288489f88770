#!/usr/bin/env bash
# The suite against the newest releases: a separate venv (.venv-latest, so the tested .venv stays as it is)
# installed with SEGCLIP_LATEST=1 (constraints.txt not applied), its versions and the CPU's INT8 instruction
# set printed, then pytest.  With --write, a passing run writes its versions into constraints.txt: the new
# tested set (commit it).  Other args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
write=0
if [ "${1:-}" = "--write" ]; then write=1; shift; fi
export SEGCLIP_LATEST=1 SEGCLIP_VENV=${SEGCLIP_VENV:-.venv-latest}
scripts/test.sh "$@"
if [ "$write" = 1 ]; then
  tmp=$(mktemp constraints.txt.XXXXXX)
  { sed -n '/^#/p;/^[^#]/q' constraints.txt
    "$SEGCLIP_VENV/bin/python" -m pip freeze --exclude-editable | grep -v '^segclip'; } > "$tmp"
  mv "$tmp" constraints.txt
  echo "constraints.txt: the versions of $SEGCLIP_VENV, which passed the suite"
fi
