#!/usr/bin/env bash
# Kaldi compute-mfcc-feats for a data dir, in parallel jobs (pyxv.features.mfcc).
#
#   steps/make_mfcc.sh [options] <data> <log-dir> <mfcc-dir>
#   e.g. steps/make_mfcc.sh --nj 2 --cmd "$train_cmd" --mfcc-config conf/mfcc_8k.conf \
#          data/demo/all exp/make_mfcc/data_demo_all mfcc
#
# Writes <mfcc-dir>/raw_mfcc_<set>.JOB.{ark,scp} (<set>: the data dir path with
# / -> _, so sets never collide), then <data>/feats.scp, <data>/utt2num_frames
# and a copy of the config in <data>/conf/mfcc.conf. Audio at another rate than
# --sample-frequency is resampled in the job. Utterances that fail (unreadable,
# too short, failing pipe) are named in the job logs, counted here and dropped
# from the data dir with utils/fix_data_dir.sh.
set -euo pipefail

nj=4
cmd=utils/parallel/run.py
mfcc_config=conf/mfcc_8k.conf
seed=0                 # dither seed
overwrite=false

help_message="Usage: $0 [options] <data> <log-dir> <mfcc-dir>
Options:
  --nj N               parallel jobs [$nj]
  --cmd CMD            job runner [$cmd]
  --mfcc-config FILE   Kaldi-style MFCC options [$mfcc_config]
  --seed N             dither seed [$seed]
  --overwrite BOOL     redo even when outputs are up to date [$overwrite]"

. ./path.sh
. utils/parse_options.sh
. utils/staged_outputs.sh

if [ $# -ne 3 ]; then echo "$help_message" >&2; exit 1; fi
data=${1%/}
logdir=$2
mfccdir=$3
name=${data//\//_}

for f in "$data/wav.scp" "$data/utt2spk" "$mfcc_config"; do
  [ -f "$f" ] || { echo "$0: $f does not exist" >&2; exit 1; }
done

newest=$data/wav.scp
for f in "$data/utt2spk" "$data/segments"; do [ -f "$f" ] && [ "$f" -nt "$newest" ] && newest=$f; done
if [ "$overwrite" != true ] && [ -f "$data/feats.scp" ] && [ -f "$data/utt2num_frames" ] \
   && cmp -s "$mfcc_config" "$data/conf/mfcc.conf" && [ "$data/feats.scp" -nt "$newest" ]; then
  echo "$0: $data/feats.scp is newer than $newest and made with $mfcc_config; nothing to do (--overwrite true redoes)"
  exit 0
fi
# A broken config stops here, before any job starts (checked after the up-to-date
# test: outputs made with this very config vouch for it, and Python starts slowly).
python -c "import sys; from pyxv.features.mfcc import MfccOptions; MfccOptions.from_conf(sys.argv[1])" "$mfcc_config"

# This run's archives stay in $new until every job has succeeded, so a failed
# run leaves the previous complete outputs untouched (utils/staged_outputs.sh).
new=$mfccdir/.new_$name
mkdir -p "$logdir"
rm -rf "$logdir"/utt2num_frames.*   # what a killed run left
staged_prepare "$new" "raw_mfcc_$name"
n=$(wc -l < "$data/utt2spk")
[ "$nj" -le "$n" ] || nj=$n
utils/split_data.sh "$data" "$nj" >/dev/null
sdata=$data/split$nj

echo "$0: MFCC of $n utterances of $data ($mfcc_config) in $nj jobs ($(date '+%T'))"
staged_run "$new" MFCC "$data" "$logdir/make_mfcc_$name" \
  $cmd JOB=1:$nj "$logdir/make_mfcc_$name.JOB.log" \
  python -m pyxv.bin.compute_mfcc --config "$mfcc_config" --seed "$seed" \
    --num-frames "$logdir/utt2num_frames.JOB" \
    "$sdata/JOB" "$new/raw_mfcc_$name.JOB.ark" "$new/raw_mfcc_$name.JOB.scp"

staged_merge_scps "$new" "$nj" "$logdir/make_mfcc_$name" "$data" "raw_mfcc_$name:feats.scp"
for j in $(seq "$nj"); do cat "$logdir/utt2num_frames.$j"; done | sort > "$data/.utt2num_frames.tmp"
# utt2num_frames goes in with feats.scp, after the old feats.scp has gone.
staged_commit "$new" "$data" "raw_mfcc_$name:feats.scp" -- utt2num_frames
mkdir -p "$data/conf"
cp "$mfcc_config" "$data/conf/mfcc.conf"

m=$(wc -l < "$data/feats.scp")
if [ "$m" -eq 0 ]; then
  echo "$0: no utterance of $data has features; see $logdir/make_mfcc_$name.*.log" >&2; exit 1
fi
if [ "$m" -lt "$n" ]; then
  echo "$0: WARNING: $((n - m)) of $n utterances failed and are left out of $data/feats.scp:" >&2
  grep -h "ERROR utterance" "$logdir"/make_mfcc_"$name".*.log | sed 's/^/  /' >&2 || true
  utils/fix_data_dir.sh "$data"
  touch "$data/feats.scp" "$data/utt2num_frames"   # consistent with the fixed dir: up to date
fi
utils/validate_data_dir.sh --no-wav "$data" >/dev/null || { utils/validate_data_dir.sh --no-wav "$data" >&2; exit 1; }
echo "$0: $m utterances in $data/feats.scp ($(date '+%T'))"
