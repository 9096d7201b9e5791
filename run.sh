#!/usr/bin/env bash
# pyxv: x-vectors meet emotions (Pappagari et al., ICASSP 2020), as a recipe.
#
# 1. A ResNet-34 x-vector network with 32-head attention pooling is trained to
#    tell speakers apart, once on clean speech (ResNet-clean) and once on clean
#    plus noise/music/babble/reverb copies (ResNet-aug).
# 2. Its knowledge is reused for speech emotion recognition: logistic regression
#    on frozen x-vectors, and the whole network fine-tuned with an emotion
#    output layer; compared with the same network trained from scratch on MFCC
#    and on GeMAPS, each on clean and on clean+augmented emotion data.
# 3. Speaker verification on the emotion corpus, every utterance against every
#    other of the same gender, scored per (enrolment, test) emotion pair.
#
# Run everything:        ./run.sh
# One stage or a range:  ./run.sh --stage 3 --stop-stage 4
set -euo pipefail
cd "$(dirname "$0")"

# Options (--name value; ./run.sh --help prints these lines with their defaults)
stage=0                          # first stage to run
stop_stage=100                   # last stage to run
corpus=demo                      # demo|ravdess|iemocap|msp_podcast|crema_d|manifest
nj=2                             # parallel jobs for data and feature steps
gpus=0                           # GPUs for x-vector training, 0 for CPU; per node with --nodes > 1
nodes=1                          # nodes for x-vector training (a Slurm $cuda_cmd; needs --gpus > 0)
use_gpu=false                    # stages 4 and 5 (x-vector extraction, emotion networks, cross-corpus runs)
                                 # on GPUs, one per job, through $cuda_cmd; false: on the CPU, no GPU visible
demo_root=data/local/demo_corpus # where the synthetic demo corpus is written
demo_size=full                   # full|small; small is a reduced demo for quick checks (tests)
ravdess_root=                    # RAVDESS root (Actor_01 ... Actor_24)
iemocap_root=                    # IEMOCAP_full_release
msp_podcast_root=                # MSP-PODCAST root (Audios/, Labels/)
msp_test_set=Test1               # MSP-Podcast test partition
crema_d_root=                    # CREMA-D root (AudioWAV/, VideoDemographics.csv)
manifest=                        # any corpus: a CSV with path,speaker,emotion[,utt,gender,split,start,end]
manifest_folds=5                 # speaker-independent folds for a manifest without a split column
voxceleb_root=                   # VoxCeleb 1/2 wav tree for pre-training (real corpora)
musan_root=                      # MUSAN root (real corpora); the demo makes its own
rirs_root=                       # RIRS_NOISES root (real corpora); the demo makes its own
pretrain_data=                   # a prepared data dir to pre-train on instead (overrides --voxceleb-root)
mfcc_config=conf/mfcc_8k.conf    # Kaldi-style MFCC options
vad_config=conf/vad.conf         # Kaldi-style energy VAD options
augment_config=conf/augment.yaml # augmentation SNRs and sources
xvector_config=                  # x-vector model and training (with --xvector-init ge2e: the random-init
                                 # rows' ResNet) [conf/xvector_demo.yaml for demo, else conf/xvector_resnet34.yaml]
xvector_init=scratch             # scratch: train the ResNet x-vector (the paper); ge2e: import Resemblyzer's
                                 # pre-trained GE2E speaker encoder as the clean model and adapt it on the
                                 # clean+augmented pre-training data as the aug model (the only download)
xvector_adapt_config=conf/xvector_ge2e_adapt.yaml  # with --xvector-init ge2e: adaptation of the imported encoder
emotion_config=conf/emotion.yaml # emotion systems
emotion_final=true               # after the folds, train each system once on all labelled data into
                                 # exp/emotion/<corpus>/<system>_<data>/final/ (what pyxv emotion uses)
emotion_nj=                      # stage 5 jobs per system and data setting, the folds shared out among them
                                 # [local runner: --nj / 2, clean and clean+aug side by side; a cluster: a fold each]
cross_corpus=                    # after stage 5, each system's final model on other prepared corpora:
                                 # "NAME:DATA-DIR[:LABEL-MAP] ...", e.g. "demo:data/demo/all" (DATA-DIR with
                                 # utt2emo and this recipe's features; LABEL-MAP lines '<its label> <our class>',
                                 # '<label> -' leaves it out) -> exp/emotion/<corpus>/cross/NAME/, RESULTS.md
cross_standardise=true           # also score with the target's back-end inputs standardised on its own
                                 # statistics (LR systems; no labels used)
cross_systems=                   # systems the cross-corpus evaluation scores [every system of stage 5]
sv_config=conf/sv.yaml           # speaker-verification back-ends
sv_emotion_config=conf/sv_emotion.yaml  # emotion-compensated SV back-end of stage 6, per fold
dry_run=false                    # print the stages that would run, do nothing

. utils/recipe_lib.sh            # --help, the options' checks, the run lock, run_stage/end_stage
[ "$dry_run" = true ] || { . ./path.sh; . ./cmd.sh; }   # the environment (set up on first use), the job runners

# Where things live (data flows one way through these).
emo=data/$corpus                 # all/, all_aug/, and the protocol: fold<k>/{train,dev,test} or {train,dev,test}
pre=data/pretrain                # train/ (speakers for the x-vector), train_aug/, train_combined/
noise=data/noise                 # musan_{noise,music,speech}/, rirs/

# data: make the demo corpus (demo only); Kaldi data dirs for the emotion corpus,
# its protocol (folds or train/dev/test), the pre-training speakers, MUSAN and RIRs
if run_stage 0 "data directories"; then
  local/prepare_data.sh --corpus "$corpus" --nj "$nj" --demo-root "$demo_root" --demo-size "$demo_size" \
    --ravdess-root "$ravdess_root" --iemocap-root "$iemocap_root" \
    --msp-podcast-root "$msp_podcast_root" --msp-test-set "$msp_test_set" \
    --crema-d-root "$crema_d_root" --manifest "$manifest" --manifest-folds "$manifest_folds" \
    --voxceleb-root "$voxceleb_root" --musan-root "$musan_root" --rirs-root "$rirs_root" \
    --pretrain-data "$pretrain_data" "$emo" "$pre" "$noise"
  end_stage 0
fi

# augmentation: reverb/noise/music/babble copies of the pre-training data
# (for ResNet-aug) and of the emotion data (for Clean+aug training)
if run_stage 1 "augmentation"; then
  steps/augment_data_dir.sh --nj "$nj" --cmd "$train_cmd" --config "$augment_config" $pre/train $noise $pre/train_aug
  utils/combine_data.sh $pre/train_combined $pre/train $pre/train_aug
  steps/augment_data_dir.sh --nj "$nj" --cmd "$train_cmd" --config "$augment_config" $emo/all $noise $emo/all_aug
  end_stage 1
fi

# features: 23-dim MFCC and energy VAD for every data dir; eGeMAPS LLDs and
# functionals for the emotion data
if run_stage 2 "features"; then
  for d in $pre/train $pre/train_aug $emo/all $emo/all_aug; do
    steps/make_mfcc.sh --nj "$nj" --cmd "$train_cmd" --mfcc-config "$mfcc_config" $d exp/make_mfcc/${d//\//_} mfcc
    steps/compute_vad.sh --nj "$nj" --cmd "$train_cmd" --vad-config "$vad_config" $d exp/make_vad/${d//\//_} mfcc
  done
  utils/combine_data.sh $pre/train_combined $pre/train $pre/train_aug
  for d in $emo/all $emo/all_aug; do
    steps/make_gemaps.sh --nj "$nj" --cmd "$train_cmd" $d exp/make_gemaps/${d//\//_} gemaps
  done
  # The protocol's subsets take their features from all/ and all_aug/.
  local/propagate_features.sh $emo
  end_stage 2
fi

# x-vector training: ResNet-clean on clean, ResNet-aug on clean+augmented speech
# (--xvector-init ge2e: the imported GE2E encoder, and GE2E adapted on clean+augmented speech)
if run_stage 3 "x-vector training"; then
  xv_opts=(--gpus "$gpus")
  [ "$nodes" -gt 1 ] && xv_opts=(--nodes "$nodes" --gpus-per-node "$gpus")
  set_aside_xvectors_of_another_init   # a switch of --xvector-init starts the models afresh, the old ones kept
  if [ "$xvector_init" = ge2e ]; then
    # A published speaker encoder stands in for the ResNet: as is for the clean model,
    # adapted to the clean+augmented pre-training speakers for the aug model.
    local/import_encoder.sh ge2e exp/xvector_clean
    steps/train_xvector.sh --cmd "$cuda_cmd" "${xv_opts[@]}" --config "$xvector_adapt_config" \
      --init-from exp/xvector_clean/final.pt $pre/train_combined exp/xvector_aug
  else
    if [ "$corpus" != demo ] && [ -z "$voxceleb_root$pretrain_data" ] && [ "$gpus" -eq 0 ]; then
      echo "run.sh: NOTE: about to train the x-vector ($xvector_config) on CPU on the synthetic demo voices (no --voxceleb-root or --pretrain-data); for real speaker knowledge use --xvector-init ge2e (a pre-trained GE2E encoder)"
    fi
    steps/train_xvector.sh --cmd "$cuda_cmd" "${xv_opts[@]}" --config "$xvector_config" $pre/train exp/xvector_clean
    steps/train_xvector.sh --cmd "$cuda_cmd" "${xv_opts[@]}" --config "$xvector_config" $pre/train_combined exp/xvector_aug
  fi
  # Rewritten only when it changes: the report's up-to-date test reads exp/.
  [ "$(cat exp/xvector_clean/xvector_init 2>/dev/null)" = "$xvector_init" ] \
    || echo "$xvector_init" > exp/xvector_clean/xvector_init
  end_stage 3
fi

# x-vector extraction: emotion data and back-end training data, both models
if run_stage 4 "x-vector extraction"; then
  extract_cmd=$train_cmd; [ "$use_gpu" = false ] || extract_cmd=$cuda_cmd
  for model in clean aug; do
    for d in $emo/all $emo/all_aug $pre/train; do
      steps/extract_xvectors.sh --nj "$nj" --cmd "$extract_cmd" --use-gpu "$use_gpu" exp/xvector_$model $d \
        exp/xvector_$model/xvectors_${d#data/}
    done
  done
  end_stage 4
fi

# emotion recognition: the paper's six systems (random-init GeMAPS/MFCC, frozen+LR and
# fine-tuned ResNet-clean/-aug) and two references, each on clean and on clean+aug
# training data (the table of systems: pyxv/emotion/spec.py, listed by --help)
if run_stage 5 "emotion recognition"; then
  # An imported encoder is not a ResNet: the random-init rows take the x-vector config's.
  arch_opt=()
  [ "$xvector_init" = scratch ] || arch_opt=(--architecture "$xvector_config")
  steps/train_emotion_systems.sh --cmd "$cuda_cmd" --use-gpu "$use_gpu" --nj "$emotion_nj" --total-nj "$nj" \
    --final "$emotion_final" --config "$emotion_config" "${arch_opt[@]}" $emo exp/emotion/$corpus
  # Cross-corpus: each system's final model on the other corpora.
  eval_cmd=$train_cmd; [ "$use_gpu" = false ] || eval_cmd=$cuda_cmd
  [ -z "$cross_corpus" ] || steps/eval_emotion_systems.sh --cmd "$eval_cmd" --use-gpu "$use_gpu" \
    --standardise "$cross_standardise" --systems "$cross_systems" exp/emotion/$corpus $cross_corpus
  end_stage 5
fi

# speaker verification by emotion: all same-gender trials, cosine and PLDA,
# EER/minDCF per enrolment x test emotion
if run_stage 6 "speaker verification by emotion"; then
  for model in clean aug; do
    for backend in cosine plda; do
      steps/score_sv.sh --backend $backend --config "$sv_config" \
        --backend-train exp/xvector_$model/xvectors_pretrain/train \
        exp/xvector_$model/xvectors_$corpus/all $emo/all exp/sv/$corpus/xvector_$model/$backend
    done
    # Per-fold protocol (back-ends learned on each fold's training speakers): plain cosine beside the
    # emotion-compensated back-end, trial emotions from stage 5's recogniser when it has posteriors.
    if [ -f $emo/fold1/train/utt2spk ]; then
      post=exp/emotion/$corpus/frozen_lr_${model}_clean; ls $post/*/posteriors >/dev/null 2>&1 || post=
      for b in cosine_folds:$sv_config compensated_folds:$sv_emotion_config; do
        steps/score_sv.sh --folds $emo --config ${b#*:} --emotion-posteriors "$post" \
          exp/xvector_$model/xvectors_$corpus/all $emo/all exp/sv/$corpus/xvector_$model/${b%%:*}
      done
    fi
  done
  end_stage 6
fi

# report: exp/RESULTS.md, results.csv and pictures
if run_stage 7 "report"; then
  local/make_report.py --if-stale --corpus "$corpus" exp exp/RESULTS.md
  end_stage 7
  echo "run.sh: results in exp/RESULTS.md"
fi
