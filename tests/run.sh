#!/usr/bin/env bash
# The one test command: sets up the environment on first use, then runs pytest.
#   tests/run.sh                 the whole suite
#   tests/run.sh -k mfcc -x      pytest options pass through
set -euo pipefail
cd "$(dirname "$0")/.."
. ./path.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec python -m pytest -q -ra "$@"
