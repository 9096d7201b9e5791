#!/usr/bin/env bash
# Split a data dir into <data-dir>/splitN/{1..N} (every per-utterance file split
# consistently). By utterance (default) or --per-spk (whole speakers per part).
# A split newer than the data dir and made the same way is reused.
# Usage: utils/split_data.sh [--per-spk] <data-dir> <N>
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=python3  # the venv's when path.sh is sourced; else the repo's .venv
[ -z "${VIRTUAL_ENV:-}" ] && [ -x "$root/.venv/bin/python" ] && py=$root/.venv/bin/python
PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} exec "$py" -m pyxv.bin.datadir_tools split "$@"
