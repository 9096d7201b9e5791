#!/usr/bin/env bash
# Cross-corpus evaluation of stage 5's systems: each system's final model, trained on
# clean and on clean+aug data, scored on each target corpus through
# steps/eval_emotion.sh (one system dir on one target).
#
#   steps/eval_emotion_systems.sh [options] <exp-emotion-corpus-dir> <target> [<target> ...]
#   e.g. steps/eval_emotion_systems.sh --systems "frozen_lr_clean ref_egemaps_lr" \
#       exp/emotion/ravdess demo:data/demo/all:conf/label_map.txt
#
# A target is NAME:DATA-DIR[:LABEL-MAP] (run.sh's --cross-corpus checks them first);
# results go to <exp-emotion-corpus-dir>/cross/NAME/<system>_<data>/. Every evaluation
# runs, one after another; a failure is named in one line at the end (exit 1).
set -euo pipefail

cmd=utils/parallel/run.py
systems=          # the systems to score [every system of the table, pyxv/emotion/spec.py]
use_gpu=false     # the networks on a GPU
standardise=true  # LR systems: also score the target's inputs standardised on its own statistics

echo "$0 $*"
. ./path.sh
. utils/parse_options.sh

if [ $# -lt 2 ]; then
  cat >&2 <<USAGE
Usage: $0 [options] <exp-emotion-corpus-dir> <NAME:DATA-DIR[:LABEL-MAP]> ...
 e.g.: $0 --systems "frozen_lr_clean ref_egemaps_lr" exp/emotion/ravdess demo:data/demo/all
Options:
  --cmd CMD              job runner [$cmd]
  --systems LIST         systems to score [every system: python -m pyxv.bin.train_emotion --list-systems]
  --use-gpu BOOL         the networks on a GPU [$use_gpu]
  --standardise BOOL     LR systems: also standardised on the target's own statistics [$standardise]
USAGE
  exit 1
fi
exp=$1
shift
[ -n "$systems" ] || systems=$(python -m pyxv.bin.train_emotion --list-systems | cut -f1)

failed=()
for target in "$@"; do
  IFS=: read -r name tdata tmap <<< "$target"
  for system in $systems; do
    for tag in clean clean_aug; do
      steps/eval_emotion.sh --cmd "$cmd" --use-gpu "$use_gpu" --standardise "$standardise" \
        ${tmap:+--label-map "$tmap"} --target "$name" $exp/${system}_$tag "$tdata" $exp/cross/$name/${system}_$tag \
        || failed+=("$name:${system}_$tag")
    done
  done
done
[ ${#failed[@]} = 0 ] || { echo "$0: cross-corpus evaluation failed for ${failed[*]}" >&2; exit 1; }
