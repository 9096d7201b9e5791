#!/usr/bin/env bash
# Stage 0 of run.sh: Kaldi data dirs for the emotion corpus (with its protocol),
# the pre-training speakers and the augmentation sources.
#
#   <emo-dir>/all + fold<k>/{train,[dev,]test} or {train,dev,test}
#   <pretrain-dir>/train
#   <noise-dir>/{musan_noise,musan_music,musan_speech,rirs}
#
# The synthetic demo corpus is made (once) when --corpus demo, and also when a
# real corpus comes without pre-training data or without MUSAN/RIRs: then its
# voices / its noises stand in, and the log says so.
set -euo pipefail

corpus=demo
nj=2
demo_root=data/local/demo_corpus
demo_size=full
demo_seed=777
ravdess_root=
iemocap_root=
msp_podcast_root=
msp_test_set=Test1
crema_d_root=
crema_d_split=conf/crema_d_split.txt
manifest=
manifest_folds=5
voxceleb_root=
musan_root=
rirs_root=
pretrain_data=
overwrite=false

help_message="Usage: $0 [options] <emo-dir> <pretrain-dir> <noise-dir>
 e.g.: $0 --corpus demo data/demo data/pretrain data/noise
Options:
  --corpus NAME            demo|ravdess|iemocap|msp_podcast|crema_d|manifest [$corpus]
  --nj N                   parallel workers (synthesis, audio header reads) [$nj]
  --demo-root DIR          synthetic demo corpus location [$demo_root]
  --demo-size SIZE         full|small [$demo_size]
  --demo-seed N            seed of the demo corpus [$demo_seed]
  --ravdess-root DIR / --iemocap-root DIR / --msp-podcast-root DIR / --crema-d-root DIR
  --msp-test-set NAME      Test1|Test2 [$msp_test_set]
  --crema-d-split FILE     committed CREMA-D actor split [$crema_d_split]
  --manifest CSV           path,speaker,emotion[,utt,gender,split,start,end]
  --manifest-folds K       speaker folds when the manifest has no split column [$manifest_folds]
  --voxceleb-root DIR      VoxCeleb wav tree for pre-training
  --pretrain-data DIR      a prepared data dir to pre-train on (overrides --voxceleb-root)
  --musan-root DIR         MUSAN root
  --rirs-root DIR          RIRS_NOISES root
  --overwrite BOOL         redo even when the outputs are complete [$overwrite]"

. utils/parse_options.sh

if [ $# -ne 3 ]; then printf '%s\n' "$help_message" >&2; exit 1; fi
emo=$1; pre=$2; noise=$3
me=prepare_data.sh

# If an earlier run with the same options finished and nothing it wrote was
# changed since (another corpus's run may rewrite data/pretrain or data/noise),
# there is nothing to do.
opts="corpus=$corpus demo_root=$demo_root demo_size=$demo_size demo_seed=$demo_seed \
ravdess=$ravdess_root iemocap=$iemocap_root msp=$msp_podcast_root msp_test=$msp_test_set \
crema=$crema_d_root crema_split=$crema_d_split manifest=$manifest folds=$manifest_folds \
vox=$voxceleb_root pretrain=$pretrain_data musan=$musan_root rirs=$rirs_root"
need_demo=false
[ "$corpus" = demo ] && need_demo=true
[ -z "$pretrain_data" ] && [ -z "$voxceleb_root" ] && need_demo=true
{ [ -z "$musan_root" ] || [ -z "$rirs_root" ]; } && need_demo=true
if $need_demo; then
  # Reused when complete; regenerated when the seed, size or generator changed.
  local/make_demo_corpus.py --seed "$demo_seed" --size "$demo_size" --nj "$nj" "$demo_root"
fi

stamp=$emo/.prepared
if [ "$overwrite" != true ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$opts" ] \
   && { ! $need_demo || [ "$stamp" -nt "$demo_root/.demo_done" ]; } \
   && [ -f "$emo/all/utt2dur" ] && [ "$stamp" -nt "$pre/train/wav.scp" ] \
   && [ "$stamp" -nt "$noise/musan_noise/wav.scp" ] && [ "$stamp" -nt "$noise/musan_music/wav.scp" ] \
   && [ "$stamp" -nt "$noise/musan_speech/wav.scp" ] && [ "$stamp" -nt "$noise/rirs/wav.scp" ]; then
  echo "$me: $emo, $pre/train and $noise are complete for these options; skipping (--overwrite true redoes)"
  exit 0
fi
rm -f "$stamp"


# 1. The emotion corpus and its protocol.
case $corpus in
  demo)
    local/prepare_manifest.py --nj "$nj" --emotions neutral,happy,sad,angry \
      "$demo_root/emotion.csv" "$emo" ;;
  ravdess)
    local/prepare_ravdess.py --nj "$nj" "$ravdess_root" "$emo" ;;
  iemocap)
    local/prepare_iemocap.py --nj "$nj" "$iemocap_root" "$emo" ;;
  msp_podcast)
    local/prepare_msp_podcast.py --nj "$nj" --test-set "$msp_test_set" "$msp_podcast_root" "$emo" ;;
  crema_d)
    local/prepare_crema_d.py --nj "$nj" --split "$crema_d_split" "$crema_d_root" "$emo" ;;
  manifest)
    local/prepare_manifest.py --nj "$nj" --folds "$manifest_folds" "$manifest" "$emo" ;;
  *) echo "$me: unknown corpus '$corpus'" >&2; exit 1 ;;
esac

# 2. Pre-training speakers.
if [ -n "$pretrain_data" ]; then
  echo "$me: pre-training data: a copy of $pretrain_data"
  python -c "import sys; from pyxv.corpora.common import copy_datadir; copy_datadir(sys.argv[1], sys.argv[2], nj=int(sys.argv[3]))" \
    "$pretrain_data" "$pre/train" "$nj"
elif [ -n "$voxceleb_root" ]; then
  local/prepare_voxceleb.py --nj "$nj" "$voxceleb_root" "$pre/train"
else
  if [ "$corpus" != demo ]; then
    echo "$me: NOTE: no --voxceleb-root or --pretrain-data given: the x-vector will be pre-trained"
    echo "$me: NOTE: on the SYNTHETIC demo voices of $demo_root (a smoke test, not the paper's setting)."
  fi
  local/prepare_manifest.py --nj "$nj" --no-protocol --subset-name train "$demo_root/pretrain.csv" "$pre"
fi
# No speaker of a test set may be seen in pre-training.
python - "$pre/train" "$emo" <<'EOF'
import sys
from pyxv.io import read_table
from pyxv.corpora.common import test_speakers_in
pre = set(read_table(sys.argv[1] + "/utt2spk").values())
clash = sorted(pre & test_speakers_in(sys.argv[2]))
if clash:
    sys.exit(f"prepare_data.sh: ERROR: {len(clash)} pre-training speakers are in {sys.argv[2]}'s test sets, "
             f"e.g. {' '.join(clash[:5])}")
EOF

# 3. Augmentation sources.
if [ -n "$musan_root" ]; then
  local/prepare_musan.py --nj "$nj" "$musan_root" "$noise"
else
  [ "$corpus" != demo ] && echo "$me: NOTE: no --musan-root: using the demo corpus's SYNTHETIC noise, music and babble"
  local/prepare_musan.py --nj "$nj" "$demo_root/musan" "$noise"
fi
if [ -n "$rirs_root" ]; then
  local/prepare_rirs.py --nj "$nj" "$rirs_root" "$noise/rirs"
else
  [ "$corpus" != demo ] && echo "$me: NOTE: no --rirs-root: using the demo corpus's SYNTHETIC room impulse responses"
  local/prepare_rirs.py --nj "$nj" "$demo_root/RIRS_NOISES" "$noise/rirs"
fi

# 4. Validate everything we wrote.
dirs=$(find "$emo" -name utt2spk -not -path '*/split*' -not -path '*_aug*' -printf '%h\n' | sort)
dirs="$dirs $pre/train $noise/musan_noise $noise/musan_music $noise/musan_speech $noise/rirs"
if [ -x utils/validate_data_dir.sh ]; then
  for d in $dirs; do
    utils/validate_data_dir.sh --no-feats "$d" >/dev/null || { echo "$me: ERROR: $d does not validate" >&2; exit 1; }
  done
else
  # shellcheck disable=SC2086
  python -m pyxv.corpora.check $dirs || { echo "$me: ERROR: inconsistent data dirs (above)" >&2; exit 1; }
fi

echo "$opts" > "$stamp"
echo "$me: done: $emo ($(wc -l < "$emo/all/utt2spk") utterances), $pre/train ($(wc -l < "$pre/train/utt2spk") utterances," \
  "$(wc -l < "$pre/train/spk2utt") speakers), $noise ($(cat "$noise"/{musan_noise,musan_music,musan_speech,rirs}/utt2spk | wc -l) files)"
