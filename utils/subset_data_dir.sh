#!/usr/bin/env bash
# Make a data dir from part of another.
# Usage: utils/subset_data_dir.sh --utt-list F | --spk-list F | --first N | --last N |
#                                  --random N [--seed S]  <src> <dest>
#    or (Kaldi): utils/subset_data_dir.sh [--first|--last] <src> <N> <dest>
#        (without --first/--last: N utterances at random, --seed S, default 0)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=python3  # the venv's when path.sh is sourced; else the repo's .venv
[ -z "${VIRTUAL_ENV:-}" ] && [ -x "$root/.venv/bin/python" ] && py=$root/.venv/bin/python
PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} exec "$py" -m pyxv.bin.datadir_tools subset "$@"
