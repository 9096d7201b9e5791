#!/usr/bin/env bash
# Import a published speaker encoder as the recipe's x-vector model.
#
#   local/import_encoder.sh [options] <encoder> <exp-dir>
#   e.g. local/import_encoder.sh ge2e exp/xvector_clean
#
# ge2e: the GE2E LSTM encoder of Resemblyzer 0.1.4 (Apache-2.0), taken from
# --weights, --wheel, the installed resemblyzer package, or else
# `pip download --no-deps resemblyzer==0.1.4` (this step is the only one that
# downloads, and only when nothing else is given). Writes <exp-dir>/final.pt
# (pyxv's format, model.type ge2e_lstm, no output layer), config.yaml and
# README.txt (where the weights came from, their sha256 and licence).
set -euo pipefail

weights=
wheel=
download=true
overwrite=false

help_message="Usage: $0 [options] <encoder> <exp-dir>
Encoders: ge2e
Options:
  --weights FILE    the weights file (Resemblyzer's pretrained.pt) [$weights]
  --wheel FILE      a downloaded Resemblyzer-0.1.4 wheel [$wheel]
  --download BOOL   allow pip download when nothing else is given [$download]
  --overwrite BOOL  import again even if <exp-dir>/final.pt exists [$overwrite]"

. ./path.sh
. utils/parse_options.sh

if [ $# -ne 2 ]; then echo "$help_message" >&2; exit 1; fi
encoder=$1
dir=$2
if [ "$overwrite" != true ] && [ -f "$dir/final.pt" ] && [ -f "$dir/README.txt" ]; then
  echo "$0: $dir/final.pt exists (imported: $(sed -n 's/^Weights *//p' "$dir/README.txt")); nothing to do"
  exit 0
fi
opts=()
[ -n "$weights" ] && opts+=(--weights "$weights")
[ -n "$wheel" ] && opts+=(--wheel "$wheel")
[ "$download" = true ] || opts+=(--no-download)
mkdir -p "$dir/log"
python -m pyxv.bin.import_encoder "${opts[@]}" "$encoder" "$dir" 2>&1 | tee "$dir/log/import.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
echo "$0: $encoder encoder imported into $dir/final.pt (see $dir/README.txt)"
