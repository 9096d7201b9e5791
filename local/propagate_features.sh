#!/usr/bin/env bash
# After the feature stage: copy feats.scp, vad.scp, utt2num_frames, gemaps_lld.scp
# and gemaps.scp from data/<corpus>/all (and all_aug for augmented utterances)
# into every protocol subset (fold*/train|dev|test, train, dev, test), filtered
# to the subset's utterances; name utterances that lack a feature.
# Usage: local/propagate_features.sh [--strict true] data/<corpus>
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=python3  # the venv's when path.sh is sourced; else the repo's .venv
[ -z "${VIRTUAL_ENV:-}" ] && [ -x "$root/.venv/bin/python" ] && py=$root/.venv/bin/python
PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} exec "$py" -m pyxv.bin.datadir_tools propagate "$@"
