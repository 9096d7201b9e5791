#!/usr/bin/env bash
# Stage 5's jobs: several emotion systems, each on clean and on clean+aug training
# data, through steps/train_emotion.sh (one system, one data setting, every fold).
#
#   steps/train_emotion_systems.sh [options] <emo-data-dir> <exp-emotion-corpus-dir>
#   e.g. steps/train_emotion_systems.sh --cmd "$cuda_cmd" --systems "frozen_lr_clean ref_egemaps_lr" \
#       data/demo exp/emotion/demo
#
# One system at a time, its clean and clean+aug runs side by side: their fold jobs
# share the machine (or the queue), so no core waits for the slowest fold of one of
# them. Each run skips what it finished before (train_emotion.sh's own test).
# Exit status: 0; 75 when a run stopped for pre-emption and none failed (run the same
# command again to resume; finished systems skip, networks resume from checkpoints);
# 1 when a run failed. The systems after the one that stopped are not started.
set -euo pipefail

cmd=utils/parallel/run.py
config=conf/emotion.yaml
systems=          # the systems to train, in this order [every system of the table, pyxv/emotion/spec.py]
use_gpu=false     # the network systems on a GPU, one per job
nj=               # jobs per system and data setting, the folds shared out among them [the local runner:
                  # half of --total-nj, as the two settings run side by side; another runner: one job per fold]
total_nj=2        # with the local runner and no --nj: the jobs the two settings share
final=true        # also train each system's final model on all labelled data
architecture=     # x-vector YAML of the random-init networks (train_emotion.sh --architecture)

echo "$0 $*"
. ./path.sh
. utils/parse_options.sh

if [ $# -ne 2 ]; then
  cat >&2 <<USAGE
Usage: $0 [options] <emo-data-dir> <exp-emotion-corpus-dir>
 e.g.: $0 --cmd "\$cuda_cmd" --systems "frozen_lr_clean ref_egemaps_lr" data/demo exp/emotion/demo
Options:
  --cmd CMD                  job runner [$cmd]
  --config FILE              emotion systems config [$config]
  --systems LIST             systems to train, in order [every system: python -m pyxv.bin.train_emotion --list-systems]
  --use-gpu BOOL             the network systems on a GPU, one per job [$use_gpu]
  --nj N                     jobs per system and data setting [local runner: --total-nj / 2; else one per fold]
  --total-nj N               with the local runner and no --nj: the jobs the two settings share [$total_nj]
  --final BOOL               also train each system's final model on all labelled data [$final]
  --architecture FILE        x-vector YAML of the random-init networks [train_emotion.sh's default]
USAGE
  exit 1
fi
emo=$1
out=$2
[ -n "$systems" ] || systems=$(python -m pyxv.bin.train_emotion --list-systems | cut -f1)
if [ -z "$nj" ]; then
  # Locally the folds of a setting share the cores with the other setting's; a cluster takes one job a fold.
  case $cmd in *parallel/run.py*) nj=$(( total_nj > 1 ? total_nj / 2 : 1 )) ;; *) nj=0 ;; esac
fi
arch_opt=()
[ -z "$architecture" ] || arch_opt=(--architecture "$architecture")

for system in $systems; do
  pids=()
  for train_data in clean clean+aug; do
    steps/train_emotion.sh --cmd "$cmd" --use-gpu "$use_gpu" --nj "$nj" --final "$final" --config "$config" \
      "${arch_opt[@]}" --system "$system" --train-data $train_data "$emo" "$out" &
    pids+=($!)
  done
  # 75: stopped for pre-emption with a checkpoint (rerun to resume); anything else: a failure.
  failed=0 stopped=0
  for pid in "${pids[@]}"; do
    rc=0; wait "$pid" || rc=$?
    case $rc in 0) ;; 75) stopped=1 ;; *) failed=1 ;; esac
  done
  [ $failed = 0 ] || { echo "$0: $system failed (see the messages above)" >&2; exit 1; }
  [ $stopped = 0 ] || { echo "$0: $system stopped for pre-emption; run the same command again to resume" >&2; exit 75; }
done
