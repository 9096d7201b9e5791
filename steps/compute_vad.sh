#!/usr/bin/env bash
# Kaldi compute-vad (energy VAD on MFCC c0) for a data dir with feats.scp.
#
#   steps/compute_vad.sh [options] <data> <log-dir> <vad-dir>
#   e.g. steps/compute_vad.sh --nj 2 --cmd "$train_cmd" --vad-config conf/vad.conf \
#          data/demo/all exp/make_vad/data_demo_all mfcc
#
# Writes <vad-dir>/vad_<set>.JOB.{ark,scp} (<set>: the data dir path, / -> _),
# then <data>/vad.scp (one 0/1 float vector per utterance, Kaldi's format) and
# a copy of the config in <data>/conf/vad.conf.
set -euo pipefail

nj=4
cmd=utils/parallel/run.py
vad_config=conf/vad.conf
overwrite=false

help_message="Usage: $0 [options] <data> <log-dir> <vad-dir>
Options:
  --nj N               parallel jobs [$nj]
  --cmd CMD            job runner [$cmd]
  --vad-config FILE    Kaldi-style VAD options [$vad_config]
  --overwrite BOOL     redo even when outputs are up to date [$overwrite]"

. ./path.sh
. utils/parse_options.sh
. utils/staged_outputs.sh

if [ $# -ne 3 ]; then echo "$help_message" >&2; exit 1; fi
data=${1%/}
logdir=$2
vaddir=$3
name=${data//\//_}

for f in "$data/feats.scp" "$vad_config"; do
  [ -f "$f" ] || { echo "$0: $f does not exist" >&2; exit 1; }
done

if [ "$overwrite" != true ] && [ -f "$data/vad.scp" ] && cmp -s "$vad_config" "$data/conf/vad.conf" \
   && [ "$data/vad.scp" -nt "$data/feats.scp" ]; then
  echo "$0: $data/vad.scp is newer than $data/feats.scp and made with $vad_config; nothing to do (--overwrite true redoes)"
  exit 0
fi
# A broken config stops here (after the up-to-date test, as in make_mfcc.sh).
python -c "import sys; from pyxv.features.vad import VadOptions; VadOptions.from_conf(sys.argv[1])" "$vad_config"

# This run's archives stay in $new until every job has succeeded, so a failed
# run leaves the previous complete outputs untouched (utils/staged_outputs.sh).
new=$vaddir/.new_$name
mkdir -p "$logdir"
staged_prepare "$new" "vad_$name"
n=$(wc -l < "$data/feats.scp")
[ "$nj" -le "$n" ] || nj=$n
utils/split_data.sh "$data" "$nj" >/dev/null
sdata=$data/split$nj

echo "$0: VAD of $n utterances of $data ($vad_config) in $nj jobs ($(date '+%T'))"
staged_run "$new" VAD "$data" "$logdir/vad_$name" \
  $cmd JOB=1:$nj "$logdir/vad_$name.JOB.log" \
  python -m pyxv.bin.compute_vad --config "$vad_config" \
    "$sdata/JOB/feats.scp" "$new/vad_$name.JOB.ark" "$new/vad_$name.JOB.scp"

staged_merge_scps "$new" "$nj" "$logdir/vad_$name" "$data" "vad_$name:vad.scp"
staged_commit "$new" "$data" "vad_$name:vad.scp"
mkdir -p "$data/conf"
cp "$vad_config" "$data/conf/vad.conf"

m=$(wc -l < "$data/vad.scp")
[ "$m" -gt 0 ] || { echo "$0: no VAD written; see $logdir/vad_$name.*.log" >&2; exit 1; }
if [ "$m" -lt "$n" ]; then
  echo "$0: WARNING: $((n - m)) of $n utterances failed and are left out of $data/vad.scp:" >&2
  grep -h "ERROR utterance" "$logdir"/vad_"$name".*.log | sed 's/^/  /' >&2 || true
  utils/fix_data_dir.sh "$data"
  touch "$data/feats.scp" "$data/utt2num_frames"; touch "$data/vad.scp"   # in this order: up to date
fi
utils/validate_data_dir.sh --no-wav "$data" >/dev/null || { utils/validate_data_dir.sh --no-wav "$data" >&2; exit 1; }
voiced=$(python - "$data/vad.scp" <<'PY'
import sys, kaldiio
n = v = 0
for _, x in kaldiio.load_scp_sequential(sys.argv[1]):
    n += len(x); v += int(x.sum())
print(f"{v} of {n} frames ({100.0 * v / max(n, 1):.1f}%) voiced")
PY
)
echo "$0: $m utterances in $data/vad.scp; $voiced ($(date '+%T'))"
