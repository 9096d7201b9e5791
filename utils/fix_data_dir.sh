#!/usr/bin/env bash
# Make a data dir consistent: keep the utterances present in every per-utterance
# file, drop duplicates, re-sort, rebuild spk2utt, drop speakers without
# utterances; say how many utterances were dropped and why. Originals are kept
# in <data-dir>/.backup/.
# Usage: utils/fix_data_dir.sh <data-dir>
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=python3  # the venv's when path.sh is sourced; else the repo's .venv
[ -z "${VIRTUAL_ENV:-}" ] && [ -x "$root/.venv/bin/python" ] && py=$root/.venv/bin/python
PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} exec "$py" -m pyxv.bin.datadir_tools fix "$@"
