#!/usr/bin/env bash
# Speaker verification by emotion: fit a back-end (cosine or PLDA) on training
# x-vectors, score every unordered same-gender pair of the data dir's
# utterances (or a trials file), and write EER/minDCF per (enrolment emotion,
# test emotion) cell.
#
# With --folds <corpus-dir> (fold<k>/{train,test}): the per-fold protocol, a
# back-end fitted per fold on its training speakers only, trials = all
# same-gender pairs of its test speakers, tables pooled over the folds.
# The emotion-aware pieces (conf/sv.yaml: nap, asnorm.emotion_aware,
# calibration) take trial-side emotions from utt2emo or, with
# --emotion-posteriors, from a stage-5 emotion system's per-fold posteriors.
#
# Outputs in <out-dir>: eer_by_emotion.csv, eer_by_emotion.md, summary.json,
# det.png, backend.json + backend.npz (fitted back-end + EER threshold, stored as
# parameters; with --folds one pair per fold in backends/), scores (if asked), log/score_sv.log. With --folds on a
# corpus that cannot give per-fold back-ends with target and nontarget trials
# (e.g. every gender has one speaker), only not_possible.txt (the reason, one
# line): the step says why and exits 0, so stage 6 goes on with the plain ones.
set -euo pipefail

backend=cosine          # cosine | plda
config=conf/sv.yaml
backend_train=          # x-vector dir to fit the back-end on (empty: the evaluation set itself)
backend_train_data=     # its data dir (utt2spk); default: exp/xvector_M/xvectors_X/Y -> data/X/Y
trials=                 # Kaldi trials file (enroll test target|nontarget) instead of all pairs
skip_unknown=false      # with --trials: skip trials naming utterances without x-vector/emotion
folds=                  # corpus dir with fold<k>/{train,test}: per-fold protocol
emotion_posteriors=     # stage-5 emotion system dir (<dir>/<fold>/posteriors) for trial-side emotions
write_scores=false      # write <out-dir>/scores (Kaldi 'enroll test score'); large for big sets
cmd=${train_cmd:-}      # job runner; empty runs here
overwrite=false

help_message="Usage: $0 [options] <xvector-dir> <data> <out-dir>
 e.g.: $0 --backend plda --config conf/sv.yaml --backend-train exp/xvector_clean/xvectors_pretrain/train \\
          exp/xvector_clean/xvectors_demo/all data/demo/all exp/sv/demo/xvector_clean/plda
Options:
  --backend cosine|plda          scorer [$backend]
  --config FILE                  back-end settings [$config]
  --backend-train DIR            x-vectors to fit the back-end on [the evaluation set]
  --backend-train-data DIR       data dir with their utt2spk [derived from --backend-train]
  --folds DIR                    per-fold protocol over DIR/fold<k>/{train,test} [off]
  --emotion-posteriors DIR       trial-side emotions from this stage-5 system [utt2emo]
  --trials FILE                  score this trials file instead of all same-gender pairs
  --skip-unknown BOOL            skip trials with unknown utterances instead of failing [$skip_unknown]
  --write-scores BOOL            write <out-dir>/scores [$write_scores]
  --cmd CMD                      job runner [\$train_cmd]
  --overwrite BOOL               redo even when the outputs are up to date [$overwrite]"

if [ -f path.sh ]; then . ./path.sh; else . "$(dirname "$0")/../path.sh"; fi
. "$PYXV_ROOT/utils/parse_options.sh"

if [ $# -ne 3 ]; then echo "$help_message" >&2; exit 1; fi
xdir=$1; data=$2; dir=$3

case $backend in cosine|plda) ;; *) echo "$0: --backend must be cosine or plda, not '$backend'" >&2; exit 1 ;; esac
for f in $xdir/xvector.scp $data/utt2spk $data/utt2emo; do
  [ -f "$f" ] || { echo "$0: expected file $f to exist" >&2; exit 1; }
done
[ -f "$config" ] || { echo "$0: config $config does not exist" >&2; exit 1; }
if [ -n "$backend_train" ] && [ ! -f "$backend_train/xvector.scp" ]; then
  echo "$0: expected file $backend_train/xvector.scp to exist (--backend-train)" >&2; exit 1
fi
if [ -n "$trials" ] && [ ! -f "$trials" ]; then echo "$0: trials file $trials does not exist" >&2; exit 1; fi
if [ -n "$folds" ] && [ ! -f "$folds/fold1/train/utt2spk" ]; then
  echo "$0: --folds $folds: expected $folds/fold1/train/utt2spk (run stage 0)" >&2; exit 1
fi
if [ -n "$emotion_posteriors" ] && ! ls "$emotion_posteriors"/*/posteriors >/dev/null 2>&1; then
  echo "$0: --emotion-posteriors $emotion_posteriors: no <fold>/posteriors there (run stage 5)" >&2; exit 1
fi

mkdir -p "$dir/log"
opts="--backend $backend --config $config --backend-train '$backend_train' --backend-train-data '$backend_train_data'"
opts="$opts --trials '$trials' --skip-unknown $skip_unknown --write-scores $write_scores"
opts="$opts --folds '$folds' --emotion-posteriors '$emotion_posteriors'"

# Up to date: every output newer than every input and made with the same options.
inputs="$xdir/xvector.scp $data/utt2spk $data/utt2emo $config"
for f in $data/spk2gender $data/unknown_spk_utts ${backend_train:+$backend_train/xvector.scp} $trials \
         ${folds:+$folds/fold*/train/utt2spk $folds/fold*/test/utt2spk} \
         ${emotion_posteriors:+$emotion_posteriors/*/posteriors}; do
  [ -f "$f" ] && inputs="$inputs $f"
done
outputs="$dir/eer_by_emotion.csv $dir/eer_by_emotion.md $dir/summary.json"
[ -z "$folds" ] && outputs="$outputs $dir/backend.json $dir/backend.npz"
[ "$write_scores" = true ] && outputs="$outputs $dir/scores"
not_possible=$dir/not_possible.txt
made=$outputs
[ -n "$folds" ] && [ -f "$not_possible" ] && made=$not_possible   # an earlier run found it not possible
if [ "$overwrite" != true ] && [ -f "$dir/.options" ] && [ "$(cat "$dir/.options")" = "$opts" ]; then
  uptodate=true
  for o in $made; do
    [ -f "$o" ] || { uptodate=false; break; }
    for i in $inputs; do [ "$i" -nt "$o" ] && { uptodate=false; break 2; }; done
  done
  if $uptodate; then
    echo "$0: $dir is already up to date (use --overwrite true to redo)"
    [ "$made" = "$not_possible" ] && echo "$0: per-fold back-ends not possible for $folds: $(head -n 1 "$not_possible")"
    exit 0
  fi
fi
rm -f "$dir/.options"

args=(--backend "$backend" --config "$config" --write-scores "$write_scores" --skip-unknown "$skip_unknown")
[ -n "$backend_train" ] && args+=(--backend-train "$backend_train")
[ -n "$backend_train_data" ] && args+=(--backend-train-data "$backend_train_data")
[ -n "$trials" ] && args+=(--trials "$trials")
[ -n "$folds" ] && args+=(--folds "$folds")
[ -n "$emotion_posteriors" ] && args+=(--emotion-posteriors "$emotion_posteriors")

echo "$0: scoring $xdir ($backend) -> $dir"
runner=${cmd%% *}
if [ -n "$cmd" ] && { [ -x "$runner" ] || command -v "$runner" >/dev/null 2>&1; }; then
  $cmd "$dir/log/score_sv.log" python -m pyxv.bin.score_sv "${args[@]}" "$xdir" "$data" "$dir" || {
    echo "$0: scoring failed; see $dir/log/score_sv.log" >&2; tail -n 20 "$dir/log/score_sv.log" >&2; exit 1; }
else
  python -m pyxv.bin.score_sv "${args[@]}" "$xdir" "$data" "$dir" > "$dir/log/score_sv.log" 2>&1 || {
    echo "$0: scoring failed; see $dir/log/score_sv.log" >&2; tail -n 20 "$dir/log/score_sv.log" >&2; exit 1; }
fi

if [ -n "$folds" ] && [ -f "$not_possible" ]; then
  echo "$opts" > "$dir/.options"
  echo "$0: per-fold back-ends not possible for $folds ($config): $(head -n 1 "$not_possible"); only the plain back-ends are scored"
  exit 0
fi
for o in $outputs; do
  [ -s "$o" ] || { echo "$0: expected output $o is missing or empty" >&2; exit 1; }
done
echo "$opts" > "$dir/.options"
grep -E "left out|skipped|EER .*minDCF|cross-emotion mean|Cllr|merges emotion folds|not scored:" "$dir/log/score_sv.log" | sed 's/^.*score_sv: /  /' || true
echo "$0: tables in $dir/eer_by_emotion.md"
