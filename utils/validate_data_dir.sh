#!/usr/bin/env bash
# Check a Kaldi data dir; print every problem in words, exit 1 if any.
# Usage: utils/validate_data_dir.sh [--no-feats] [--no-text] [--no-wav] <data-dir>
# Checks C-locale order, unique keys, utt2spk/spk2utt agreement, that every
# per-utterance file covers exactly the utterances of utt2spk, wav.scp files
# exist (pipes trusted), frame counts of feats.scp/vad.scp/utt2num_frames agree,
# spk2gender is m/f, utt2emo labels are lower-case words. Logic: pyxv.datadir.validate.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=python3  # the venv's when path.sh is sourced; else the repo's .venv
[ -z "${VIRTUAL_ENV:-}" ] && [ -x "$root/.venv/bin/python" ] && py=$root/.venv/bin/python
PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} exec "$py" -m pyxv.bin.datadir_tools validate "$@"
