#!/usr/bin/env bash
# Train and test one emotion system on every fold of an emotion corpus's protocol.
#
#   steps/train_emotion.sh [--cmd CMD] [--config conf/emotion.yaml] --system NAME \
#       [--train-data clean|clean+aug] <emo-data-dir> <exp-emotion-corpus-dir>
#   e.g. steps/train_emotion.sh --cmd "$cuda_cmd" --system frozen_lr_clean --train-data clean+aug \
#       data/demo exp/emotion/demo
#
# Folds are <emo>/fold<k>/{train,dev,test} (natural order), else <emo>/{train,dev,test}
# as one split called "split". One job per fold through $cmd (--nj N < folds: N jobs,
# job k running folds k, k+N, ... in one process, which saves the others' start-up;
# the results are the same); then the folds are pooled. --use-gpu true trains the
# network systems on a GPU (one per job: $cmd --gpu 1); otherwise, and for the LR
# systems always, jobs run on the CPU with no GPU visible ($cmd --gpu 0). Writes
# <exp>/<system>_<clean|clean_aug>/<fold>/{log/,model.*,predictions.txt,posteriors,
# classes.txt,metrics.json} and <exp>/<system>_<data>/summary.json.
# After the folds, one more job trains the final model on all labelled data (train
# + dev for a fixed split) with the folds' settings into <exp>/<system>_<data>/final/
# ({model.*,classes.txt,README.txt,final.json}; final.json last); --final false skips it.
# Pre-emption (SIGTERM, or Slurm's SIGUSR1 warning): the jobs stop, a network at its
# next log point with a checkpoint, and exit 75; the Slurm runner requeues them, the
# local runner reports it and this step exits 75: run it again to resume (folds
# finished before the stop are kept, a network resumes from its checkpoint).
set -euo pipefail

cmd=utils/parallel/run.py
config=conf/emotion.yaml
system=
train_data=clean
profile=          # config profile [the corpus name, e.g. demo, when the config has it]
num_threads=1
use_gpu=false     # the network systems on a GPU, one per job
nj=0              # jobs to share the folds out among [0: one job per fold]
overwrite=false
final=true        # also train the final model on all labelled data (<system>_<data>/final/)
architecture=     # x-vector YAML of the random-init networks [nnet.architecture, else the clean model's own]

echo "$0 $*"
. ./path.sh
. utils/parse_options.sh

if [ $# -ne 2 ] || [ -z "$system" ]; then
  cat >&2 <<USAGE
Usage: $0 [options] --system NAME <emo-data-dir> <exp-emotion-corpus-dir>
 e.g.: $0 --system frozen_lr_clean --train-data clean+aug data/demo exp/emotion/demo
Options:
  --cmd CMD                  job runner [$cmd]
  --config FILE              emotion systems config [$config]
  --system NAME              an emotion system of the table (python -m pyxv.bin.train_emotion --list-systems)
  --train-data DATA          clean|clean+aug [$train_data]
  --profile NAME             config profile [the corpus name when the config has one]
  --num-threads N            threads per fold job [$num_threads]
  --use-gpu BOOL             train the network systems on a GPU, one per job (the LR systems stay on
                             the CPU) [$use_gpu]
  --nj N                     jobs to share the folds out among; job k runs folds k, k+N, ...
                             [$nj: one job per fold]
  --overwrite BOOL           redo finished work [$overwrite]
  --final BOOL               after the folds, train the final model on all labelled data into
                             <exp>/<system>_<data>/final/ [$final]
  --architecture FILE        x-vector YAML of the random-init systems [nnet.architecture of the config,
                             else the clean x-vector model's own; needed when that is not a ResNet]
USAGE
  exit 1
fi
emo=$1
out=$2
case $train_data in
  clean) tag=clean ;;
  clean+aug) tag=clean_aug ;;
  *) echo "$0: --train-data must be clean or clean+aug, not '$train_data'" >&2; exit 1 ;;
esac
[ -f "$config" ] || { echo "$0: config $config does not exist" >&2; exit 1; }
[ -d "$emo" ] || { echo "$0: emotion data dir $emo does not exist" >&2; exit 1; }
corpus=$(basename "$emo")
[ -n "$profile" ] || profile=$corpus
dir=$out/${system}_$tag

# Folds: <emo>/fold*/ (the Python side checks each has train/ and test/), else one split.
nf=$(find "$emo" -mindepth 1 -maxdepth 1 -type d -name 'fold*' | wc -l)
[ "$nf" -gt 0 ] || nf=1
case $nj in ''|*[!0-9]*) echo "$0: --nj must be a number, not '$nj'" >&2; exit 1 ;; esac
{ [ "$nj" -gt 0 ] && [ "$nj" -lt "$nf" ]; } || nj=$nf

# Inputs whose change makes the results stale.
inputs=("$config" "$emo"/all/utt2emo)
arch_opt=()
if [ -n "$architecture" ]; then arch_opt=(--architecture "$architecture"); inputs+=("$architecture"); fi
for f in "$emo"/fold*/*/utt2spk "$emo"/{train,dev,test}/utt2spk; do [ -f "$f" ] && inputs+=("$f"); done
# The system's other inputs (x-vectors, features, models) come from Python, which
# is slow to start: the list is kept in $dir/.inputs and reused while it is newer
# than the config and the protocol and names only files that exist.
key="$config $profile $system $train_data $emo ${arch_opt[*]}"
listed=$dir/.inputs
extra=
if [ -f "$listed" ] && [ "$(head -n 1 "$listed")" = "$key" ]; then
  extra=$(tail -n +2 "$listed")
  for f in "${inputs[@]}"; do [ "$f" -nt "$listed" ] && extra=; done
  while read -r f; do [ -z "$f" ] || [ -e "$f" ] || extra=; done <<< "$extra"
fi
if [ -z "$extra" ]; then
  known=$(python -m pyxv.bin.train_emotion --list-systems | cut -f1)
  grep -qxF -- "$system" <<< "$known" \
    || { echo "$0: unknown --system '$system' (one of:" $known")" >&2; exit 1; }
  extra=$(python -m pyxv.bin.train_emotion --list-inputs --config "$config" --profile "$profile" "${arch_opt[@]}" \
    --system "$system" --train-data "$train_data" "$emo") || { echo "$0: inputs missing (see above)" >&2; exit 1; }
  mkdir -p "$dir"
  printf '%s\n%s\n' "$key" "$extra" > "$listed"
fi
while read -r f; do [ -z "$f" ] || inputs+=("$f"); done <<< "$extra"

fresh() {  # fresh FILE: it exists and no input is newer
  [ "$overwrite" != true ] && [ -f "$1" ] || return 1
  local f
  for f in "${inputs[@]}"; do
    if [ -e "$f" ] && [ "$f" -nt "$1" ]; then return 1; fi
  done
}
folds_done=false; final_done=false
fresh "$dir/summary.json" && folds_done=true
{ [ "$final" != true ] || fresh "$dir/final/final.json"; } && final_done=true
if [ $folds_done = true ] && [ $final_done = true ]; then
  what="$dir/summary.json is"; [ "$final" != true ] || what="$dir/summary.json and final/ are"
  echo "$0: $what complete and newer than the inputs; skipping (--overwrite true redoes)"
  exit 0
fi

mkdir -p "$dir/log"
cp "$config" "$dir/emotion.yaml"
# A fold's (and the final model's) network training resumes from its checkpoints unless told to start over.
if [ "$overwrite" = true ]; then rm -rf "$dir"/*/checkpoints "$dir"/*/best.pt; fi
# Only the networks (the table's randinit and finetune methods) have work for a GPU; a job
# asked not to use one sees none.
gpu_opt=(--gpu 0); dev=no; where=
if [ "$use_gpu" = true ] && python -m pyxv.bin.train_emotion --list-systems --method randinit,finetune \
    | cut -f1 | grep -qx "$system"; then
  gpu_opt=(--gpu 1); dev=yes; where=", a GPU each"
fi
start=$(date +%s)
preempted() {  # preempted WHAT: the jobs stopped for pre-emption (exit 75)
  echo "$0: $1 stopped for pre-emption; finished folds and the networks' checkpoints are kept: run the same" \
       "command again to resume" >&2
  exit 75
}
if [ $folds_done = false ]; then
  rm -f "$dir/summary.json" "$dir"/log/train.*.log
  # Folds whose metrics.json is newer than this stamp were finished by this run, also by
  # an attempt that a pre-emption stopped (a requeued job keeps them): a new run touches it,
  # a rerun after a pre-emption (folds.preempted, no input newer) keeps the old one.
  stamp=$dir/log/folds.started
  fresh "$dir/log/folds.preempted" && [ -f "$stamp" ] || touch "$stamp"
  rm -f "$dir/log/folds.preempted"
  echo "$0: $system on $train_data data, $nf fold(s) of $emo in $nj job(s)$where -> $dir"
  rc=0
  $cmd "${gpu_opt[@]}" --num-threads "$num_threads" JOB=1:"$nj" "$dir/log/train.JOB.log" \
    python -m pyxv.bin.train_emotion --config "$config" --profile "$profile" "${arch_opt[@]}" --system "$system" \
      --train-data "$train_data" --use-gpu $dev --fold JOB --nj "$nj" --keep-finished-since "$stamp" \
      "$emo" "$out" || rc=$?
  if [ $rc -eq 75 ]; then touch "$dir/log/folds.preempted"; preempted "the folds"; fi
  [ $rc -eq 0 ] || { echo "$0: a fold failed; see the logs named above ($dir/log/train.*.log)" >&2; exit 1; }
  # Pool the folds (each fold's own log is <fold>/log/train.log).
  python -m pyxv.bin.train_emotion --summarize --corpus "$corpus" --system "$system" --train-data "$train_data" \
    "$emo" "$out" | tee "$dir/log/summary.log"
  echo "$0: folds done in $(( $(date +%s) - start ))s: $dir/summary.json"
fi
if [ $final_done = false ]; then
  # After the folds: a network's epoch count comes from the epochs its folds kept.
  rm -f "$dir/final/final.json"
  echo "$0: final model of $system on all labelled $train_data data of $emo$where -> $dir/final"
  rc=0
  $cmd "${gpu_opt[@]}" --num-threads "$num_threads" "$dir/log/final.log" \
    python -m pyxv.bin.train_emotion --config "$config" --profile "$profile" "${arch_opt[@]}" --system "$system" \
      --train-data "$train_data" --use-gpu $dev --final "$emo" "$out" || rc=$?
  [ $rc -ne 75 ] || preempted "the final model"
  [ $rc -eq 0 ] || { echo "$0: the final model failed; see $dir/log/final.log" >&2; exit 1; }
  echo "$0: done in $(( $(date +%s) - start ))s: $dir/final/ ($dir/final/README.txt says how it was trained)"
fi
