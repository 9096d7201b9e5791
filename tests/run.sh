#!/usr/bin/env bash
# The one test command: sets up the environments on first use, then runs pytest.
#   tests/run.sh                 the whole suite
#   tests/run.sh -k mfcc -x      pytest options pass through
#
# Two environments: .venv is the recipe's, exactly what ./run.sh sets up on a
# fresh machine; .venv-test (utils/setup_test_env.sh) adds the test-only
# packages on top of it. pytest runs in .venv-test; every recipe script a test
# starts sources path.sh and so runs in .venv, where the test-only packages are
# not importable, as on a user's machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./path.sh
utils/setup_test_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv-test/bin/python -m pytest -q -ra "$@"
