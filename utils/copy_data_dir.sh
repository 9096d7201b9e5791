#!/usr/bin/env bash
# Copy a data dir, renaming utterances/speakers as Kaldi's copy_data_dir.sh does
# (new id = prefix + id + suffix; recordings take the utterance prefix/suffix),
# re-sorted; when utterance ids change, utt2orig maps new ids to the source's.
# Usage: utils/copy_data_dir.sh [--utt-prefix P] [--utt-suffix S] [--spk-prefix P] [--spk-suffix S] <src> <dest>
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=python3  # the venv's when path.sh is sourced; else the repo's .venv
[ -z "${VIRTUAL_ENV:-}" ] && [ -x "$root/.venv/bin/python" ] && py=$root/.venv/bin/python
PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} exec "$py" -m pyxv.bin.datadir_tools copy "$@"
