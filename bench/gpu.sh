#!/usr/bin/env bash
# The GPU check: every GPU figure of the recipe from one prepared script (bench/gpu.py says what it measures).
#
#   bench/gpu.sh [--out DIR]       on a GPU machine: a few minutes, under 10; without a GPU one line, exit 0
#   bench/gpu.sh --dry-run-cpu     every part on the CPU at tiny sizes (what CI runs)
#   bench/gpu.sh --pack [DIR]      here, with PyPI: wheels a bare GPU machine may lack -> DIR [bench/wheels]
#
# Runs ${PYTHON:-python3} as it is: on a bare GPU machine the one with torch. Not
# path.sh, which would build .venv from the network.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" "$root/bench/gpu.py" "$@"
