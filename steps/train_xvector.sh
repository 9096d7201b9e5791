#!/usr/bin/env bash
# Train the x-vector network (ResNet + multi-head attention pooling) on the
# speakers of a data dir.
#
#   steps/train_xvector.sh [options] <train-data> <exp-dir>
#   e.g. steps/train_xvector.sh --cmd "$cuda_cmd" --gpus 0 --config conf/xvector_demo.yaml data/pretrain/train exp/xvector_clean
#
# 1. The network input is written once into <exp-dir>/feats/ in --nj parallel
#    jobs, through the front-end of the config's model.type: for the ResNet
#    sliding CMN, then voiced frames only (Kaldi's prepare_feats_for_egs); for
#    GE2E mel spectrograms of the audio.
# 2. Training (random chunks, margin softmax over speakers) runs as one job
#    through --cmd; with --gpus N > 1 as torchrun with N DDP processes, each
#    taking the config's train.batch_size chunks (global batch N x batch_size;
#    train.lr_scale_ref_batch scales the lr with it).
# Outputs: final.pt (model + config + speaker list + feature confs), config.yaml,
# mfcc.conf, vad.conf, log/train.log, log/history.json, checkpoints/epoch_N[_step_S].pt.
# Run again after an interruption (kill, preemption, Ctrl-C), training continues
# from the newest checkpoint when config, data, initial model and global batch are
# unchanged (a code edit is logged, not a reason to start over), and ends with the
# weights an uninterrupted run gives. Otherwise it says what changed, moves the old
# training state into <exp-dir>/stale_<YYYYmmdd-HHMMSS>/ and starts over; on another
# number of processes at another global batch it stops and says how to go on.
# Nothing trained is ever deleted: --resume false and --overwrite true move it aside too.
set -euo pipefail

cmd=utils/parallel/run.py
gpus=0                  # 0: CPU; 1: one GPU; N > 1: torchrun with N processes (DDP), train.batch_size each
config=
resume=true             # continue from the newest checkpoint (false: start over, the old state moved aside)
nj=2                    # jobs for feature preparation
cpu_procs=1             # N > 1: N DDP processes on CPU (gloo), when --gpus 0
num_threads=1           # CPU threads of CPU training (more threads on a busy machine can be 10x slower)
mfcc_config=conf/mfcc_8k.conf   # what the features were made with (copied into exp-dir)
vad_config=conf/vad.conf
overwrite=false         # true: prepare features and train again (the old training state moved aside)
prepare_only=false      # stop after writing the network input (e.g. to launch multi-node training by hand)
init_from=              # start from this model file (all but the output layer), e.g. an imported encoder

help_message="Usage: $0 [options] <train-data> <exp-dir>
Options:
  --cmd CMD            job runner [$cmd]
  --gpus N             0 for CPU, N > 1 for torchrun DDP; train.batch_size is per process [$gpus]
  --config FILE        x-vector YAML config (required)
  --resume BOOL        continue from the newest checkpoint of an unchanged run; false starts over,
                       moving the old checkpoints and models into <exp-dir>/stale_<time>/ [$resume]
  --nj N               feature preparation jobs [$nj]
  --cpu-procs N        with --gpus 0: N > 1 runs torchrun with N gloo processes on CPU [$cpu_procs]
  --num-threads N      CPU threads for training (per process) [$num_threads]
  --mfcc-config FILE   MFCC config the features were made with [$mfcc_config]
  --vad-config FILE    VAD config the features were made with [$vad_config]
  --overwrite BOOL     prepare the input and retrain from scratch even when final.pt is up to date
                       (the old training state is moved into <exp-dir>/stale_<time>/) [$overwrite]
  --prepare-only BOOL  only prepare the network input in <exp-dir>/feats [$prepare_only]
  --init-from FILE     start from this model (all layers but the output layer), e.g. an imported
                       encoder to adapt; its type and size must match --config [$init_from]"

. ./path.sh
. utils/parse_options.sh

if [ $# -ne 2 ]; then echo "$help_message" >&2; exit 1; fi
data=$1
dir=$2
[ -n "$config" ] || { echo "$0: --config is required" >&2; exit 1; }
[ -f "$config" ] || { echo "$0: $config does not exist" >&2; exit 1; }
[[ "$gpus" =~ ^[0-9]+$ ]] || { echo "$0: --gpus must be a non-negative integer" >&2; exit 1; }
# Check the config before any work (unknown keys, wrong types); the files its
# encoder type reads (feats.scp + vad.scp for the ResNet, wav.scp for GE2E).
# The answer is kept in $dir while newer than the config (Python is slow to start).
cache=$dir/.train_inputs
if [ -f "$cache" ] && [ "$cache" -nt "$config" ] && [ "$(head -n 1 "$cache")" = "$config $data" ]; then
  needs=$(tail -n +2 "$cache")
else
  needs=$(python -m pyxv.bin.prepare_feats --config "$config" --requirements "$data") \
    || { echo "$0: bad config $config" >&2; exit 1; }
  mkdir -p "$dir" && printf '%s\n%s\n' "$config $data" "$needs" > "$cache"
fi
input=$data/${needs%%$'\n'*}
for f in $needs; do
  [ -f "$data/$f" ] || { echo "$0: $data/$f does not exist" >&2; exit 1; }
done
for f in "$data/utt2spk" "$mfcc_config" "$vad_config" ${init_from:+"$init_from"}; do
  [ -f "$f" ] || { echo "$0: $f does not exist" >&2; exit 1; }
done

if [ "$overwrite" != true ] && [ -f "$dir/final.pt" ] \
   && [ "$dir/final.pt" -nt "$input" ] && [ "$dir/final.pt" -nt "$config" ]; then
  echo "$0: $dir/final.pt is newer than $input and $config; nothing to do (--overwrite true redoes)"
  exit 0
fi
if [ "$overwrite" = true ]; then
  # The network input is remade from the data; the trained state is moved aside by
  # the trainer (--start-over below), never deleted.
  rm -rf "$dir/feats"
  resume=false
fi
mkdir -p "$dir/log" "$dir/feats"
cp "$mfcc_config" "$dir/mfcc.conf"
cp "$vad_config" "$dir/vad.conf"

# 1. Network input, once.
feats=$dir/feats
if [ ! -f "$feats/feats.scp" ] || [ "$input" -nt "$feats/feats.scp" ] || [ "$config" -nt "$feats/feats.scp" ]; then
  echo "$0: preparing training features of $data in $nj jobs ($(date '+%T'))"
  # feats.scp goes too: should this fail, the next run prepares again instead of
  # trusting a feats.scp whose archives are gone.
  rm -f "$feats"/feats.scp "$feats"/feats.*.scp "$feats"/feats.*.ark "$feats"/feats.*.utt2num_frames \
        "$feats"/.feats.*.tmp.*
  $cmd JOB=1:$nj "$dir/log/prepare_feats.JOB.log" \
    python -m pyxv.bin.prepare_feats --config "$config" --job JOB --nj $nj "$data" "$feats"
  for j in $(seq $nj); do cat "$feats/feats.$j.utt2num_frames"; done | sort > "$feats/utt2num_frames.tmp"
  for j in $(seq $nj); do cat "$feats/feats.$j.scp"; done | sort > "$feats/feats.scp.tmp"
  mv "$feats/utt2num_frames.tmp" "$feats/utt2num_frames"
  mv "$feats/feats.scp.tmp" "$feats/feats.scp"
  n_in=$(wc -l < "$input"); n_out=$(wc -l < "$feats/feats.scp")
  echo "$0: prepared $n_out of $n_in utterances (skipped ones are named in $dir/log/prepare_feats.*.log)"
  [ "$n_out" -gt 0 ] || { echo "$0: no utterance left after feature preparation" >&2; exit 1; }
fi

[ "$prepare_only" = true ] && { echo "$0: --prepare-only: features are in $feats"; exit 0; }

# 2. Training.
args=(--config "$config" --feats-dir "$feats" --labels "$data/utt2spk"
      --extra-file "mfcc.conf=$mfcc_config" --extra-file "vad.conf=$vad_config")
[ -n "$init_from" ] && args+=(--init-from "$init_from")
[ "$resume" = true ] || args+=(--start-over)
if ls "$dir"/checkpoints/epoch_*.pt >/dev/null 2>&1 && [ -f "$dir/log/train.log" ]; then
  # keep the interrupted run's log beside the new one
  mv "$dir/log/train.log" "$dir/log/train.before-resume.$(date +%Y%m%d-%H%M%S).log"
fi
if [ "$gpus" -eq 0 ] && [ "$cpu_procs" -gt 1 ]; then
  launcher=(torchrun --standalone --nproc_per_node "$cpu_procs" -m pyxv.bin.train_xvector --use-gpu no)
  gpu_opt=(--gpu 0 --num-threads "$num_threads")
elif [ "$gpus" -eq 0 ]; then
  launcher=(python -m pyxv.bin.train_xvector --use-gpu no)
  gpu_opt=(--gpu 0 --num-threads "$num_threads")
elif [ "$gpus" -eq 1 ]; then
  launcher=(python -m pyxv.bin.train_xvector --use-gpu yes)
  gpu_opt=(--gpu 1)
else
  # One node, N processes; for several nodes see the README (srun + torchrun rendezvous).
  launcher=(torchrun --standalone --nproc_per_node "$gpus" -m pyxv.bin.train_xvector --use-gpu yes)
  gpu_opt=(--gpu "$gpus")
fi
echo "$0: training on $data -> $dir (log: $dir/log/train.log) ($(date '+%T'))"
$cmd "${gpu_opt[@]}" "$dir/log/train.log" "${launcher[@]}" "${args[@]}" "$data" "$dir" \
  || { echo "$0: training failed, see $dir/log/train.log" >&2; tail -n 5 "$dir/log/train.log" >&2; exit 1; }
# Say whether it resumed, or why it started over.
grep -h -m1 -o "resuming from .*\|starting over: .*" "$dir/log/train.log" | sed "s#^#$0: #" || true
[ -f "$dir/final.pt" ] || { echo "$0: training ended without $dir/final.pt" >&2; exit 1; }
python - "$dir/log/history.json" <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))[-1]
v = f"valid loss {h['valid_loss']:.3f} acc {h['valid_acc']:.3f}" if h.get("valid_acc") is not None else "no validation set"
print(f"steps/train_xvector.sh: epoch {h['epoch']}: train loss {h['train_loss']:.3f} acc {h['train_acc']:.3f}, {v}")
PY
