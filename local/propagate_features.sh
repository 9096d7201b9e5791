#!/usr/bin/env bash
# After the feature stage: copy feats.scp, vad.scp, utt2num_frames, gemaps_lld.scp
# and gemaps.scp from data/<corpus>/all (and all_aug for augmented utterances)
# into every protocol subset (fold*/train|dev|test, train, dev, test), filtered
# to the subset's utterances; name utterances that lack a feature.
# Done once per change: with no file under data/<corpus> (split dirs aside)
# newer than data/<corpus>/.propagated, it is skipped without starting Python.
# Usage: local/propagate_features.sh [--strict true] data/<corpus>
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=python3  # the venv's when path.sh is sourced; else the repo's .venv
[ -z "${VIRTUAL_ENV:-}" ] && [ -x "$root/.venv/bin/python" ] && py=$root/.venv/bin/python

corpus=${!#}
stamp=$corpus/.propagated
if [ $# -ge 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$*" ] && [ -f "$corpus/all/feats.scp" ] \
   && [ -z "$(find "$corpus" -name 'split[0-9]*' -prune -o -type f -newer "$stamp" -print -quit)" ]; then
  echo "propagate_features.sh: the subsets of $corpus are up to date"
  exit 0
fi
rm -f "$stamp"
PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} "$py" -m pyxv.bin.datadir_tools propagate "$@" || exit
echo "$*" > "$stamp"
