#!/usr/bin/env bash
# Combine data dirs. Every file present in all sources is merged; a file in only
# some is left out with a warning; a repeated utterance id is an error.
# Unchanged outputs are not rewritten (re-running is harmless).
# Usage: utils/combine_data.sh <dest-data-dir> <src-data-dir1> <src-data-dir2> ...
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=python3  # the venv's when path.sh is sourced; else the repo's .venv
[ -z "${VIRTUAL_ENV:-}" ] && [ -x "$root/.venv/bin/python" ] && py=$root/.venv/bin/python
PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} exec "$py" -m pyxv.bin.datadir_tools combine "$@"
