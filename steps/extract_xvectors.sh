#!/usr/bin/env bash
# Extract x-vectors of every utterance of a data dir with a trained model.
#
#   steps/extract_xvectors.sh [options] <exp-dir> <data> <xvector-dir>
#   e.g. steps/extract_xvectors.sh --nj 2 --cmd "$train_cmd" exp/xvector_clean data/demo/all exp/xvector_clean/xvectors_demo/all
#
# The model's encoder type says what it reads (its front-end, settings inside
# final.pt): the ResNet the data dir's feats.scp + vad.scp, processed as in
# training (sliding CMN, voiced frames), very long utterances in chunks whose
# embeddings are averaged; GE2E the audio of wav.scp (mel spectrogram), whole
# utterances as the mean of 1.6 s partial windows. On a GPU (--use-gpu true)
# utterances of different lengths share padded batches of up to --batch-frames
# frames (lower it if the GPU runs out of memory; the job then says so).
# Outputs: xvector.{ark,scp}, spk_xvector.{ark,scp} (speaker means), num_utts.ark.
set -euo pipefail

nj=2
cmd=utils/parallel/run.py
use_gpu=false
chunk_frames=0          # 0: extract.chunk_frames of the model's config
batch_frames=0          # 0: extract.batch_frames of the model's config
overwrite=false

help_message="Usage: $0 [options] <exp-dir> <data> <xvector-dir>
Options:
  --nj N               parallel jobs [$nj]
  --cmd CMD            job runner [$cmd]
  --use-gpu BOOL       extract on a GPU [$use_gpu]
  --chunk-frames N     chunk length for long utterances, 0: from the model [$chunk_frames]
  --batch-frames N     frames per GPU batch (lower it if the GPU runs out of memory), 0: from the model [$batch_frames]
  --overwrite BOOL     redo even when outputs are up to date [$overwrite]"

. ./path.sh
. utils/parse_options.sh

if [ $# -ne 3 ]; then echo "$help_message" >&2; exit 1; fi
exp=$1
data=$2
dir=$3
model=$exp/final.pt
[ -f "$model" ] || { echo "$0: $model does not exist" >&2; exit 1; }
# The data-dir file the encoder reads (feats.scp, or wav.scp for audio front-ends);
# kept beside the model while newer than it (Python is slow to start).
cache=$exp/.extract_inputs
if [ -f "$cache" ] && [ "$cache" -nt "$model" ] && [ -s "$cache" ]; then
  needs=$(cat "$cache")
else
  needs=$(python -m pyxv.bin.extract_xvectors inputs "$model") || exit 1
  printf '%s\n' "$needs" > "$cache.$$" && mv "$cache.$$" "$cache"
fi
input=$data/${needs%%$'\n'*}
for f in "$input" "$data/utt2spk"; do
  [ -f "$f" ] || { echo "$0: $f does not exist" >&2; exit 1; }
done

if [ "$overwrite" != true ] && [ -f "$dir/xvector.scp" ] && [ -f "$dir/spk_xvector.scp" ] && [ -f "$dir/num_utts.ark" ] \
   && [ "$dir/xvector.scp" -nt "$model" ] && [ "$dir/xvector.scp" -nt "$input" ]; then
  echo "$0: $dir is newer than $model and $input; nothing to do (--overwrite true redoes)"
  exit 0
fi
mkdir -p "$dir/log"
rm -f "$dir"/xvector.*.ark "$dir"/xvector.*.scp

if [ "$use_gpu" = true ]; then gpu_opt=(--gpu 1); dev=yes; else gpu_opt=(--gpu 0); dev=no; fi
n=$(wc -l < "$input")
[ "$nj" -le "$n" ] || nj=$n
echo "$0: extracting x-vectors of $n utterances of $data with $model in $nj jobs ($(date '+%T'))"
$cmd "${gpu_opt[@]}" JOB=1:$nj "$dir/log/extract.JOB.log" \
  python -m pyxv.bin.extract_xvectors extract --use-gpu $dev --job JOB --nj $nj --chunk-frames $chunk_frames \
    --batch-frames $batch_frames \
    "$model" "$data" "$dir/xvector.JOB.ark"
$cmd "$dir/log/merge.log" python -m pyxv.bin.extract_xvectors merge --nj $nj "$data" "$dir"
m=$(wc -l < "$dir/xvector.scp")
echo "$0: $m of $n utterances have x-vectors in $dir/xvector.scp; $(wc -l < "$dir/spk_xvector.scp") speaker means"
[ "$m" -gt 0 ] || { echo "$0: no x-vector extracted, see $dir/log/extract.*.log" >&2; exit 1; }
[ "$m" -eq "$n" ] || echo "$0: WARNING: $((n - m)) utterances failed (named in $dir/log/extract.*.log)" >&2
