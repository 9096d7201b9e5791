#!/usr/bin/env bash
# Cross-corpus evaluation: score a trained emotion system's final model (stage 5's
# <system-dir>/final/) on another prepared corpus with the same classes.
#
#   steps/eval_emotion.sh [--label-map FILE] [--standardise true] <system-dir> <data-dir> <out-dir>
#   e.g. steps/eval_emotion.sh --label-map conf/label_map.txt \
#       exp/emotion/ravdess/frozen_lr_clean_clean data/demo/all exp/emotion/ravdess/cross/demo/frozen_lr_clean_clean
#
# <data-dir> needs utt2emo and the features the system reads, made with the source's
# feature configs (stage 2's feats.scp + vad.scp, gemaps*.scp; GE2E reads wav.scp).
# Writes <out-dir>/{posteriors,predictions.txt,classes.txt,metrics.json} (metrics.json
# last), with --standardise true also posteriors_standardised and
# predictions_standardised.txt (LR systems; the metrics inside metrics.json).
set -euo pipefail

cmd=utils/parallel/run.py
label_map=        # lines '<corpus label> <model class>'; '<label> -' leaves its utterances out
standardise=false # LR systems: also standardise the target's back-end inputs on its own statistics
target=           # target corpus name in the report [the data dir's parent for .../all, else its name]
use_gpu=false     # the networks on a GPU (the runner's --gpu 1)
overwrite=false

echo "$0 $*"
. ./path.sh
. utils/parse_options.sh

if [ $# -ne 3 ]; then
  cat >&2 <<USAGE
Usage: $0 [options] <system-dir> <data-dir> <out-dir>
 e.g.: $0 exp/emotion/ravdess/frozen_lr_clean_clean data/demo/all exp/emotion/ravdess/cross/demo/frozen_lr_clean_clean
Options:
  --cmd CMD             job runner [$cmd]
  --label-map FILE      '<corpus label> <model class>' lines; '<label> -' leaves its utterances out [$label_map]
  --standardise BOOL    LR systems: also score the target's back-end inputs standardised on the
                        target's own statistics (no labels used), beside the plain figure [$standardise]
  --target NAME         target corpus name [the data dir's corpus]
  --use-gpu BOOL        the networks (x-vectors, fine-tuned, random-init) on a GPU [$use_gpu]
  --overwrite BOOL      redo a finished evaluation [$overwrite]
USAGE
  exit 1
fi
sys=$1
data=$2
out=$3
[ -d "$sys" ] || { echo "$0: system dir $sys does not exist" >&2; exit 1; }
[ -f "$data/utt2emo" ] || { echo "$0: $data has no utt2emo (emotion labels)" >&2; exit 1; }
[ -z "$label_map" ] || [ -f "$label_map" ] || { echo "$0: label map $label_map does not exist" >&2; exit 1; }
case $use_gpu in true) gpu_opt=(--gpu 1); dev=yes ;; false) gpu_opt=(--gpu 0); dev=no ;;
  *) echo "$0: --use-gpu must be true or false, not '$use_gpu'" >&2; exit 1 ;; esac
case $standardise in true) std=yes ;; false) std=no ;;
  *) echo "$0: --standardise must be true or false, not '$standardise'" >&2; exit 1 ;; esac
if [ -z "$target" ]; then
  target=$(basename "$data"); [ "$target" != all ] || target=$(basename "$(dirname "$data")")
fi

if [ "$overwrite" != true ] && [ -f "$out/metrics.json" ]; then
  stale=false
  for f in "$sys/final/final.json" "$data/utt2emo" "$data"/feats.scp "$data"/gemaps.scp $label_map; do
    if [ -e "$f" ] && [ "$f" -nt "$out/metrics.json" ]; then stale=true; fi
  done
  # Standardised scores exist only for the systems with a back-end (the table's LR methods).
  lr_systems=$(python -m pyxv.bin.train_emotion --list-systems --method frozen_lr,reference | cut -f1 | paste -sd'|' -)
  if [ $stale = false ] && { [ $std = no ] || [ -f "$out/posteriors_standardised" ] || \
      ! grep -Eq "\"system\": \"($lr_systems)\"" "$out/metrics.json"; }; then
    echo "$0: $out/metrics.json is newer than its inputs; skipping (--overwrite true redoes)"
    exit 0
  fi
fi
mkdir -p "$out/log"
$cmd "${gpu_opt[@]}" "$out/log/eval.log" python -m pyxv.bin.eval_emotion ${label_map:+--label-map "$label_map"} \
  --use-gpu $dev --standardise $std --target "$target" "$sys" "$data" "$out" || {
  echo "$0: failed; see $out/log/eval.log" >&2; exit 1; }
grep -h "weighted F1" "$out/log/eval.log" | tail -n 1 | sed 's/^.*INFO //'
