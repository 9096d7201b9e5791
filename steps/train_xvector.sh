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
#    through --cmd; with several processes (--gpus N > 1, or --nodes N
#    --gpus-per-node G: N x G; on CPU --procs-per-node P) as DDP through
#    pyxv.launch (torchrun's agent, one per node), each taking the config's
#    train.batch_size chunks (global batch processes x batch_size;
#    train.lr_scale_ref_batch scales the lr with it). --nodes N > 1 needs the
#    Slurm runner: one job of N nodes, one launcher per node (srun), which meet
#    at the first node's NodeAddr (conf/slurm.conf: net_interface, rdzv_timeout).
#    On compute nodes the training runs in .venv (utils/parallel/venv.sh) without
#    path.sh's set-up, so they need neither espeak-ng nor sox.
# Outputs: final.pt (model + config + speaker list + feature confs), config.yaml,
# mfcc.conf, vad.conf, log/train.log, log/history.json, checkpoints/epoch_N[_step_S].pt.
# Pre-emption: SIGTERM/SIGUSR1 stop the training at its next log point with a
# checkpoint (exit 75); the Slurm runner requeues the job (conf/slurm.conf:
# gpu_max_attempts, signal), the local one and this script say "run again".
# Run again after an interruption (kill, preemption, Ctrl-C), training continues
# from the newest checkpoint when config, data, initial model and global batch are
# unchanged (a code edit is logged, not a reason to start over), and ends with the
# weights an uninterrupted run gives. Otherwise it says what changed, moves the old
# training state into <exp-dir>/stale_<YYYYmmdd-HHMMSS>/ and starts over; on another
# number of processes at another global batch it stops and says how to go on.
# Nothing trained is ever deleted: --resume false and --overwrite true move it aside too.
set -euo pipefail

cmd=utils/parallel/run.py
gpus=0                  # 0: CPU; 1: one GPU; N > 1: N DDP processes on one node, train.batch_size each
nodes=1                 # N > 1: one training over N nodes (Slurm runner), --gpus-per-node or --procs-per-node each
gpus_per_node=          # GPUs (= processes) on each node; with --nodes 1 the same as --gpus
procs_per_node=         # with --gpus 0: CPU processes (gloo) on each node [--cpu-procs]
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
  --gpus N             GPUs on one node: 0 for CPU, N > 1 for DDP; train.batch_size is per process [$gpus]
  --nodes N            train over N nodes at once (the Slurm runner; 1: this machine or one node) [$nodes]
  --gpus-per-node G    with --nodes: GPUs (DDP processes) on each node [$gpus_per_node]
  --procs-per-node P   with --gpus 0: DDP processes (gloo, CPU) on each node [same as --cpu-procs]
  --config FILE        x-vector YAML config (required)
  --resume BOOL        continue from the newest checkpoint of an unchanged run; false starts over,
                       moving the old checkpoints and models into <exp-dir>/stale_<time>/ [$resume]
  --nj N               feature preparation jobs [$nj]
  --cpu-procs N        with --gpus 0 and one node: N > 1 gloo processes on CPU [$cpu_procs]
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
for v in gpus:$gpus nodes:$nodes gpus-per-node:${gpus_per_node:-0} procs-per-node:${procs_per_node:-1} \
         cpu-procs:$cpu_procs; do
  [[ "${v#*:}" =~ ^[0-9]+$ ]] || { echo "$0: --${v%%:*} must be a non-negative integer, not '${v#*:}'" >&2; exit 1; }
done
[ "$nodes" -ge 1 ] || { echo "$0: --nodes must be at least 1" >&2; exit 1; }
# GPUs per node: --gpus-per-node, or --gpus on one node. --gpus N with --nodes > 1
# is ambiguous (total or per node?): refused.
if [ -n "$gpus_per_node" ]; then
  if [ "$gpus" -ne 0 ] && [ "$gpus" -ne "$gpus_per_node" ]; then
    echo "$0: --gpus $gpus and --gpus-per-node $gpus_per_node disagree (--gpus is for one node: leave it out)" >&2
    exit 1
  fi
elif [ "$nodes" -gt 1 ] && [ "$gpus" -gt 0 ]; then
  echo "$0: with --nodes $nodes give the GPUs of each node as --gpus-per-node (--gpus $gpus is for one node)" >&2
  exit 1
else
  gpus_per_node=$gpus
fi
if [ "$nodes" -gt 1 ]; then
  case " $cmd " in
    *parallel/run.py*) echo "$0: --nodes $nodes needs the Slurm runner (--cmd '$cmd' runs jobs on this one" \
                            "machine; cmd.sh selects utils/parallel/slurm.py)" >&2; exit 1 ;;
  esac
fi
procs_per_node=${procs_per_node:-$cpu_procs}
if [ "$gpus_per_node" -gt 0 ]; then
  procs=$gpus_per_node
else
  procs=$procs_per_node
  [ "$procs" -ge 1 ] || { echo "$0: --procs-per-node must be at least 1" >&2; exit 1; }
fi
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
if ls "$dir"/checkpoints/epoch_*.pt >/dev/null 2>&1 && [ -s "$dir/log/train.log" ]; then
  # keep the interrupted run's log beside the new one
  mv "$dir/log/train.log" "$dir/log/train.before-resume.$(date +%Y%m%d-%H%M%S).log"
fi
# What is left is a run's that trained nothing; the runner would overwrite it: the
# cause of a failure below must not be read from it (nor from an old Slurm job id).
: > "$dir/log/train.log"
rm -f "$dir/log/q/train.jobid"
# Every process and node starts from the same command in .venv (venv.sh: no apt
# checks on compute nodes); more than one process goes through pyxv.launch
# (torchrun's agent; exit 75 when the training stopped for pre-emption).
if [ "$gpus_per_node" -gt 0 ]; then
  use_gpu=yes
  # CPUs of the job on each node: a loader's workers + the training process, per GPU.
  workers=$(python -c 'import sys; from pyxv.nnet.config import load_config
print(load_config(sys.argv[1])["train"]["num_workers"])' "$config") || { echo "$0: bad config $config" >&2; exit 1; }
  run_opt=(--gpu "$gpus_per_node" --num-threads $(( gpus_per_node * (workers + 1) )))
  threads=1
else
  use_gpu=no
  run_opt=(--gpu 0 --num-threads $(( procs * num_threads )))
  threads=$num_threads
fi
[ "$nodes" -gt 1 ] && run_opt+=(--nodes "$nodes")
if [ $(( nodes * procs )) -eq 1 ]; then
  launcher=(utils/parallel/venv.sh python -m pyxv.bin.train_xvector --use-gpu $use_gpu)
else
  launcher=(utils/parallel/venv.sh python -m pyxv.launch --nnodes "$nodes" --nproc-per-node "$procs"
            --threads-per-proc "$threads" -m pyxv.bin.train_xvector --use-gpu $use_gpu)
fi
where=; [ "$nodes" -gt 1 ] && where=" on $nodes nodes"
echo "$0: training on $data -> $dir$where, $(( nodes * procs )) process(es) (log: $dir/log/train.log) ($(date '+%T'))"
rc=0
$cmd "${run_opt[@]}" "$dir/log/train.log" "${launcher[@]}" "${args[@]}" "$data" "$dir" || rc=$?
if [ $rc -eq 75 ]; then
  echo "$0: training stopped for pre-emption; its checkpoint is in $dir/checkpoints: run the same command" \
       "again to resume" >&2
  exit 75
elif [ $rc -ne 0 ]; then
  # One line with the cause: the trainer's own error line, else the launcher's with the
  # last exception a training process raised (torch prefixes them [rankN]), else the log's last line.
  log=$dir/log/train.log
  why=$(grep -h -m1 "^train_xvector: " "$log" 2>/dev/null) \
    || why=$(grep -h -m1 "^pyxv.launch: .*\(failed\|rendezvous with\|must \|stopped\)" "$log" 2>/dev/null) \
    || why=$(grep -v "^#" "$log" 2>/dev/null | grep . | tail -n 1) || true
  err=$(grep -h "^\[rank[0-9]*\]: [A-Za-z_.]*\(Error\|Exception\|Interrupt\)\b" "$log" 2>/dev/null | tail -n 1 \
        | sed 's/^\[rank[0-9]*\]: //' | cut -c1-300) || true
  case $why in pyxv.launch:*failed*) [ -z "$err" ] || why="$why: $err" ;; esac
  # Several nodes: when another node's task ended first (srun says which), that is the cause.
  first=$(grep -h -m1 "^srun: error: [^ ]*: task [0-9]*: " "$log" 2>/dev/null | sed 's/^srun: error: //') || true
  if [ -n "$first" ]; then
    case $why in *"(${first%%:*})"*) ;; *) why="node ${first%%:*} ended first (srun: $first); $why" ;; esac
  fi
  jobid=$(cat "$dir/log/q/train.jobid" 2>/dev/null || true)
  echo "$0: training failed${jobid:+ (Slurm job $jobid)}: ${why:-see above}; log: $dir/log/train.log" >&2
  tail -n 5 "$dir/log/train.log" >&2
  exit 1
fi
# Say whether it resumed, or why it started over.
grep -h -m1 -o "resuming from .*\|starting over: .*" "$dir/log/train.log" | sed "s#^#$0: #" || true
[ -f "$dir/final.pt" ] || { echo "$0: training ended without $dir/final.pt" >&2; exit 1; }
python - "$dir/log/history.json" <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))[-1]
v = f"valid loss {h['valid_loss']:.3f} acc {h['valid_acc']:.3f}" if h.get("valid_acc") is not None else "no validation set"
print(f"steps/train_xvector.sh: epoch {h['epoch']}: train loss {h['train_loss']:.3f} acc {h['train_acc']:.3f}, {v}")
PY
