#!/usr/bin/env bash
# Augmented copies of a data dir: reverberation (RIRs) and additive noise, music
# and babble (MUSAN) at Kaldi's SNRs (pyxv.augment; settings in conf/augment.yaml).
#
#   steps/augment_data_dir.sh [options] --config conf/augment.yaml <in-data> <noise-dir> <out-data>
#   e.g. steps/augment_data_dir.sh --nj 2 --cmd "$train_cmd" --config conf/augment.yaml \
#          data/demo/all data/noise data/demo/all_aug
#
# <noise-dir> holds the data dirs musan_noise, musan_music, musan_speech and rirs.
# Augmented audio is materialised: one 16-bit FLAC per copy under
# <out-data>/audio/<speaker>/<utt>-<type>.flac (deterministic by the config's
# seed, whatever --nj), written by parallel jobs. Outputs: per-type data dirs
# <out-parent>/<in-name>_{reverb,noise,music,babble} and the combined <out-data>,
# with utterance ids <utt>-<type>, utt2orig (the clean source), utt2spk,
# spk2gender, utt2emo and utt2dur carried over, and augment_info.jsonl (what was
# drawn for each copy: SNRs, noise files, RIR).
set -euo pipefail

nj=4
cmd=utils/parallel/run.py
config=conf/augment.yaml
overwrite=false

help_message="Usage: $0 [options] --config FILE <in-data> <noise-dir> <out-data>
Options:
  --nj N               parallel jobs [$nj]
  --cmd CMD            job runner [$cmd]
  --config FILE        augmentation settings (YAML) [$config]
  --overwrite BOOL     redo even when outputs are up to date [$overwrite]"

. ./path.sh
. utils/parse_options.sh
. utils/staged_outputs.sh

if [ $# -ne 3 ]; then echo "$help_message" >&2; exit 1; fi
in=${1%/}
noise=${2%/}
out=${3%/}

for f in "$in/wav.scp" "$in/utt2spk" "$config"; do
  [ -f "$f" ] || { echo "$0: $f does not exist" >&2; exit 1; }
done

newest=$in/wav.scp
for f in "$in/utt2spk" "$in/segments"; do [ -f "$f" ] && [ "$f" -nt "$newest" ] && newest=$f; done
if [ "$overwrite" != true ] && [ -f "$out/wav.scp" ] && [ -f "$out/utt2orig" ] && [ "$out/wav.scp" -nt "$newest" ] \
   && cmp -s "$config" "$out/conf/augment.yaml"; then
  echo "$0: $out is newer than $newest and made with $config; nothing to do (--overwrite true redoes)"
  exit 0
fi
# Bad config or missing sources stop here, before any work (after the up-to-date
# test, as in make_mfcc.sh).
python - "$config" "$noise" <<'PY'
import sys
from pathlib import Path
from pyxv.augment import SOURCE_DIRS, load_config
from pyxv.config import ConfigError
try:
    cfg = load_config(sys.argv[1])
except ConfigError as e:
    sys.exit(f"augment_data_dir.sh: {e}")
for t in cfg["types"]:
    d = Path(sys.argv[2]) / SOURCE_DIRS[t]
    if not (d / "wav.scp").is_file():
        sys.exit(f"augment_data_dir.sh: {d}/wav.scp does not exist (needed for '{t}')")
PY

name=$(basename "$in")
parent=$(dirname "$out")
logdir=$out/log
# This run's copies stay in $new until every job has succeeded, so a failed run
# leaves the previous complete outputs untouched.
new=$out/.new
rm -rf "$new" "$out/.info"   # what a killed run left
mkdir -p "$logdir" "$new/info"
n=$(wc -l < "$in/utt2spk")
[ "$nj" -le "$n" ] || nj=$n
utils/split_data.sh "$in" "$nj" >/dev/null
sdata=$in/split$nj

echo "$0: augmenting $n utterances of $in into $out ($config) in $nj jobs ($(date '+%T'))"
staged_run "$new" augmentation "$in" "$logdir/augment" \
  $cmd JOB=1:$nj "$logdir/augment.JOB.log" \
  python -m pyxv.bin.augment_data augment --config "$config" --noise-dir "$noise" \
    --audio-dir "$new/audio" --info "$new/info/JOB.jsonl" "$sdata/JOB"

infos=()
for j in $(seq "$nj"); do
  [ -f "$new/info/$j.jsonl" ] || { echo "$0: job $j left no results; see $logdir/augment.$j.log" >&2; exit 1; }
  infos+=("$new/info/$j.jsonl")
done
sed -i 's#/\.new/audio/#/audio/#' "${infos[@]}"   # where the copies will be
# The old outputs go first: an interruption from here on leaves no wav.scp (the
# step redoes), never a data dir naming copies of two runs.
for t in reverb noise music babble; do rm -rf "${parent:?}/${name}_$t"; done
rm -f "$out"/{wav.scp,utt2spk,spk2utt,utt2orig,utt2dur,utt2emo,spk2gender,unknown_spk_utts,feats.scp,vad.scp,utt2num_frames}
rm -rf "$out/audio"
if [ -d "$new/audio" ]; then mv "$new/audio" "$out/audio"; fi
python -m pyxv.bin.augment_data assemble --config "$config" "$in" "$out" "${infos[@]}"
mkdir -p "$out/conf"
cp "$config" "$out/conf/augment.yaml"
rm -rf "$new"

failed=$(grep -h "ERROR utterance" "$logdir"/augment.*.log || true)
if [ -n "$failed" ]; then
  echo "$0: WARNING: $(echo "$failed" | wc -l) of $n utterances failed and have no augmented copy:" >&2
  echo "$failed" | sed 's/^/  /' >&2
fi
for d in "$out" "$parent/${name}"_{reverb,noise,music,babble}; do
  [ -d "$d" ] || continue
  utils/validate_data_dir.sh --no-feats "$d" >/dev/null || { utils/validate_data_dir.sh --no-feats "$d" >&2; exit 1; }
done
echo "$0: $(wc -l < "$out/utt2spk") augmented utterances in $out ($(date '+%T'))"
