#!/usr/bin/env bash
# The one test command: sets up the environment on first use, then runs pytest.
#   tests/run.sh                 the whole suite
#   tests/run.sh -k mfcc -x      pytest options pass through
set -euo pipefail
cd "$(dirname "$0")/.."
. ./path.sh
# Test-only references: Resemblyzer's own GE2E code (and the librosa and webrtcvad it
# imports); tests/test_ge2e.py compares pyxv's encoder with it. --no-deps because its
# webrtcvad pin needs a compiler; webrtcvad-wheels provides the same module.
if ! python -c 'import resemblyzer, librosa, webrtcvad' >/dev/null 2>&1; then
  { pip install -q --disable-pip-version-check --no-deps resemblyzer==0.1.4 \
      && pip install -q --disable-pip-version-check librosa webrtcvad-wheels; } \
    || echo "tests/run.sh: could not install resemblyzer/librosa/webrtcvad-wheels; the GE2E comparisons will skip" >&2
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec python -m pytest -q -ra "$@"
