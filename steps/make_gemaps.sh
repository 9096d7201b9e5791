#!/usr/bin/env bash
# eGeMAPS v02 (openSMILE) for a data dir, in parallel jobs (pyxv.features.gemaps).
#
#   steps/make_gemaps.sh [options] <data> <log-dir> <gemaps-dir>
#   e.g. steps/make_gemaps.sh --nj 2 --cmd "$train_cmd" data/demo/all exp/make_gemaps/data_demo_all gemaps
#
# Writes <gemaps-dir>/gemaps_{lld,func}_<set>.JOB.{ark,scp} (<set>: the data dir
# path, / -> _), then <data>/gemaps_lld.scp (T x 25 low-level descriptors,
# 100 frames/s) and <data>/gemaps.scp (the 88 functionals as a 1 x 88 matrix).
# openSMILE runs at about 35x real time per core for both, hence the jobs.
# Failed utterances are named in the logs and counted; they are left out of the
# two scp files (the data dir itself is not changed).
set -euo pipefail

nj=4
cmd=utils/parallel/run.py
sample_rate=0          # 0: analyse each file at its own rate
overwrite=false

help_message="Usage: $0 [options] <data> <log-dir> <gemaps-dir>
Options:
  --nj N               parallel jobs [$nj]
  --cmd CMD            job runner [$cmd]
  --sample-rate HZ     resample first (0: keep each file's rate) [$sample_rate]
  --overwrite BOOL     redo even when outputs are up to date [$overwrite]"

. ./path.sh
. utils/parse_options.sh
. utils/staged_outputs.sh

if [ $# -ne 3 ]; then echo "$help_message" >&2; exit 1; fi
data=${1%/}
logdir=$2
dir=$3
name=${data//\//_}

for f in "$data/wav.scp" "$data/utt2spk"; do
  [ -f "$f" ] || { echo "$0: $f does not exist" >&2; exit 1; }
done
newest=$data/wav.scp
for f in "$data/utt2spk" "$data/segments"; do [ -f "$f" ] && [ "$f" -nt "$newest" ] && newest=$f; done
if [ "$overwrite" != true ] && [ -f "$data/gemaps.scp" ] && [ -f "$data/gemaps_lld.scp" ] \
   && [ "$data/gemaps.scp" -nt "$newest" ] && [ "$data/gemaps_lld.scp" -nt "$newest" ]; then
  echo "$0: $data/gemaps.scp and gemaps_lld.scp are newer than $newest; nothing to do (--overwrite true redoes)"
  exit 0
fi

# This run's archives stay in $new until every job has succeeded, so a failed
# run leaves the previous complete outputs untouched (utils/staged_outputs.sh).
new=$dir/.new_$name
outputs=("gemaps_lld_$name:gemaps_lld.scp" "gemaps_func_$name:gemaps.scp")
mkdir -p "$logdir"
staged_prepare "$new" "gemaps_lld_$name" "gemaps_func_$name"
n=$(wc -l < "$data/utt2spk")
[ "$nj" -le "$n" ] || nj=$n
utils/split_data.sh "$data" "$nj" >/dev/null
sdata=$data/split$nj

echo "$0: eGeMAPS of $n utterances of $data in $nj jobs ($(date '+%T'))"
staged_run "$new" eGeMAPS "$data" "$logdir/make_gemaps_$name" \
  $cmd JOB=1:$nj "$logdir/make_gemaps_$name.JOB.log" \
  python -m pyxv.bin.compute_gemaps --sample-rate "$sample_rate" "$sdata/JOB" \
    "$new/gemaps_lld_$name.JOB.ark" "$new/gemaps_lld_$name.JOB.scp" \
    "$new/gemaps_func_$name.JOB.ark" "$new/gemaps_func_$name.JOB.scp"

staged_merge_scps "$new" "$nj" "$logdir/make_gemaps_$name" "$data" "${outputs[@]}"
staged_commit "$new" "$data" "${outputs[@]}"

m=$(wc -l < "$data/gemaps.scp")
[ "$m" -gt 0 ] || { echo "$0: no eGeMAPS written; see $logdir/make_gemaps_$name.*.log" >&2; exit 1; }
if [ "$m" -lt "$n" ]; then
  echo "$0: WARNING: $((n - m)) of $n utterances failed and are left out of $data/gemaps.scp and gemaps_lld.scp:" >&2
  grep -h "ERROR utterance" "$logdir"/make_gemaps_"$name".*.log | sed 's/^/  /' >&2 || true
fi
echo "$0: $m utterances in $data/gemaps.scp and $data/gemaps_lld.scp ($(date '+%T'))"
