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

stage=0
stop_stage=100
corpus=demo                      # demo | ravdess | iemocap | msp_podcast | crema_d | manifest
nj=2                             # parallel jobs for data and feature steps
gpus=0                           # GPUs for x-vector training (0: CPU); per node with --nodes
nodes=1                          # nodes for x-vector training (Slurm, through $cuda_cmd)
use_gpu=false                    # stages 4 and 5 on GPUs, one per job, through $cuda_cmd
demo_root=data/local/demo_corpus # where the synthetic demo corpus is written
demo_size=full                   # full | small (a reduced demo corpus, for tests)
ravdess_root=
iemocap_root=
msp_podcast_root=
msp_test_set=Test1               # MSP-Podcast test partition
crema_d_root=
manifest=                        # CSV with path,speaker,emotion[,utt,gender,split,start,end]
manifest_folds=5                 # speaker-independent folds when the manifest has no split column
voxceleb_root=                   # VoxCeleb 1/2 wav tree for pre-training (real corpora)
musan_root=                      # MUSAN (real corpora); the demo makes its own
rirs_root=                       # RIRS_NOISES (real corpora); the demo makes its own
pretrain_data=                   # a prepared data dir to pre-train on instead (overrides voxceleb_root)
mfcc_config=conf/mfcc_8k.conf
vad_config=conf/vad.conf
augment_config=conf/augment.yaml
xvector_config=                  # default: conf/xvector_demo.yaml for demo, conf/xvector_resnet34.yaml otherwise
xvector_init=scratch             # scratch: train the paper's ResNet | ge2e: import the pre-trained GE2E encoder
xvector_adapt_config=conf/xvector_ge2e_adapt.yaml  # with --xvector-init ge2e: adaptation for the aug model
emotion_config=conf/emotion.yaml
emotion_final=true               # stage 5 also trains each system's final model on all labelled data
emotion_nj=                      # stage 5 jobs per system and data setting, the folds shared out among them
                                 # [local runner: half of --nj, as clean and clean+aug run side by side;
                                 # a cluster's: one job per fold]
cross_corpus=                    # cross-corpus evaluation after stage 5: "NAME:DATA-DIR[:LABEL-MAP] ..."
cross_standardise=true           # ... also with the target's back-end inputs standardised on its own statistics
cross_systems=                   # ... of these systems [every system of stage 5]
sv_config=conf/sv.yaml
sv_emotion_config=conf/sv_emotion.yaml   # the emotion-compensated SV back-end of stage 6
dry_run=false                    # print the stages that would run, do nothing

help_message="Usage: ./run.sh [options]

Options (default in brackets):
  --stage N               first stage to run [$stage]
  --stop-stage N          last stage to run [$stop_stage]
  --corpus NAME           demo|ravdess|iemocap|msp_podcast|crema_d|manifest [$corpus]
  --nj N                  parallel jobs for data and feature steps [$nj]
  --gpus N                GPUs for x-vector training, 0 for CPU; per node with --nodes > 1 [$gpus]
  --nodes N               nodes for x-vector training (a Slurm \$cuda_cmd; needs --gpus > 0) [$nodes]
  --use-gpu BOOL          x-vector extraction (stage 4), the emotion networks and their cross-corpus runs (stage 5)
                          on GPUs, one per job, through \$cuda_cmd; false: on the CPU, no GPU visible [$use_gpu]
  --demo-root DIR         where the synthetic demo corpus is written [$demo_root]
  --demo-size SIZE        full|small; small is a reduced demo for quick checks [$demo_size]
  --ravdess-root DIR      RAVDESS root (Actor_01 ... Actor_24) [$ravdess_root]
  --iemocap-root DIR      IEMOCAP_full_release [$iemocap_root]
  --msp-podcast-root DIR  MSP-PODCAST root (Audios/, Labels/) [$msp_podcast_root]
  --msp-test-set NAME     MSP-Podcast test partition [$msp_test_set]
  --crema-d-root DIR      CREMA-D root (AudioWAV/, VideoDemographics.csv) [$crema_d_root]
  --manifest CSV          any corpus: path,speaker,emotion[,utt,gender,split,start,end] [$manifest]
  --manifest-folds K      speaker-independent folds for a manifest without split [$manifest_folds]
  --voxceleb-root DIR     VoxCeleb wav tree for pre-training [$voxceleb_root]
  --musan-root DIR        MUSAN root [$musan_root]
  --rirs-root DIR         RIRS_NOISES root [$rirs_root]
  --pretrain-data DIR     a prepared data dir to pre-train on instead [$pretrain_data]
  --mfcc-config FILE      Kaldi-style MFCC options [$mfcc_config]
  --vad-config FILE       Kaldi-style energy VAD options [$vad_config]
  --augment-config FILE   augmentation SNRs and sources [$augment_config]
  --xvector-config FILE   x-vector model and training (with --xvector-init ge2e: the random-init rows' ResNet)
                          [conf/xvector_demo.yaml for demo, else conf/xvector_resnet34.yaml]
  --xvector-init NAME     scratch: train the ResNet x-vector (the paper); ge2e: import the pre-trained
                          GE2E speaker encoder of Resemblyzer (thousands of real speakers) as the clean
                          model and adapt it on the clean+augmented pre-training data as the aug model
                          (local/import_encoder.sh; uses the installed resemblyzer package or pip
                          download, the recipe's only download) [$xvector_init]
  --xvector-adapt-config FILE  adaptation of the imported encoder [$xvector_adapt_config]
  --emotion-config FILE   emotion systems [$emotion_config]
  --emotion-final BOOL    after the folds, train each system once on all labelled data into
                          exp/emotion/<corpus>/<system>_<data>/final/ (what pyxv emotion uses) [$emotion_final]
  --emotion-nj N          stage 5 jobs per system and data setting; fewer jobs than folds save the
                          start-up of one process per fold [local runner: --nj / 2; a cluster: one per fold]
  --cross-corpus SPEC     after stage 5, score each system's final model on other prepared corpora:
                          space-separated NAME:DATA-DIR[:LABEL-MAP], e.g. \"demo:data/demo/all\";
                          DATA-DIR has utt2emo and the features the systems read, made with this
                          recipe's configs; LABEL-MAP lines '<its label> <our class>' ('<label> -'
                          leaves it out) -> exp/emotion/<corpus>/cross/NAME/, RESULTS.md [$cross_corpus]
  --cross-standardise BOOL  also score with the target's back-end inputs standardised on its own
                          statistics (LR systems; no labels used) [$cross_standardise]
  --cross-systems LIST    systems the cross-corpus evaluation scores [all eight]
  --sv-config FILE        speaker-verification back-ends [$sv_config]
  --sv-emotion-config F   emotion-compensated SV back-end, per fold [$sv_emotion_config]
  --dry-run BOOL          print the stages that would run, do nothing [$dry_run]

Stages:
  0  data: make the demo corpus (demo only); Kaldi data dirs for the emotion corpus,
     its protocol (folds or train/dev/test), the pre-training speakers, MUSAN and RIRs
  1  augmentation: reverb/noise/music/babble copies of the pre-training data
     (for ResNet-aug) and of the emotion data (for Clean+aug training)
  2  features: 23-dim MFCC and energy VAD for every data dir; eGeMAPS LLDs and
     functionals for the emotion data
  3  x-vector training: ResNet-clean on clean, ResNet-aug on clean+augmented speech
     (--xvector-init ge2e: the imported GE2E encoder, and GE2E adapted on clean+augmented speech)
  4  x-vector extraction: emotion data and back-end training data, both models
  5  emotion recognition: 6 systems (random-init GeMAPS/MFCC, frozen+LR and
     fine-tuned ResNet-clean/-aug) and 2 references (eGeMAPS functionals + LR,
     MFCC mean/std + LR) x clean and clean+aug training data
  6  speaker verification by emotion: all same-gender trials, cosine and PLDA,
     EER/minDCF per enrolment x test emotion
  7  report: exp/RESULTS.md, results.csv and pictures
"

. utils/parse_options.sh
# Stage 5's systems: the paper's Table 2 rows, then the two references.
emotion_systems="randinit_gemaps randinit_mfcc frozen_lr_clean frozen_lr_aug finetune_clean finetune_aug
  ref_egemaps_lr ref_mfccstats_lr"
cross_systems=${cross_systems:-$emotion_systems}

if [ $# -gt 0 ]; then echo "run.sh: unexpected argument '$1' (see ./run.sh --help)" >&2; exit 1; fi
for n in stage stop_stage nj gpus nodes manifest_folds ${emotion_nj:+emotion_nj}; do
  [[ "${!n}" =~ ^[0-9]+$ ]] || { echo "run.sh: --${n//_/-} must be a non-negative integer, not '${!n}'" >&2; exit 1; }
done
if [ "$nodes" -lt 1 ] || { [ "$nodes" -gt 1 ] && [ "$gpus" -eq 0 ]; }; then
  echo "run.sh: --nodes $nodes needs --nodes >= 1 and, above 1, --gpus > 0 (GPUs per node); CPU training over nodes: steps/train_xvector.sh --nodes N --procs-per-node P" >&2; exit 1
fi
if [ "$stop_stage" -lt "$stage" ]; then
  echo "run.sh: --stop-stage $stop_stage is before --stage $stage" >&2; exit 1
fi
case $corpus in
  demo) ;;
  ravdess)     root_opt=ravdess_root ;;
  iemocap)     root_opt=iemocap_root ;;
  msp_podcast) root_opt=msp_podcast_root ;;
  crema_d)     root_opt=crema_d_root ;;
  manifest)    root_opt=manifest ;;
  *) echo "run.sh: unknown corpus '$corpus' (demo|ravdess|iemocap|msp_podcast|crema_d|manifest)" >&2; exit 1 ;;
esac
if [ "$corpus" != demo ]; then
  root=${!root_opt}
  [ -n "$root" ] || { echo "run.sh: --corpus $corpus needs --${root_opt//_/-}" >&2; exit 1; }
  [ -e "$root" ] || { echo "run.sh: --${root_opt//_/-} $root does not exist" >&2; exit 1; }
fi
for opt in voxceleb_root musan_root rirs_root pretrain_data; do
  v=${!opt}
  if [ -n "$v" ] && [ ! -e "$v" ]; then echo "run.sh: --${opt//_/-} $v does not exist" >&2; exit 1; fi
done
if [ -z "$xvector_config" ]; then
  if [ "$corpus" = demo ]; then xvector_config=conf/xvector_demo.yaml; else xvector_config=conf/xvector_resnet34.yaml; fi
  # The small demo (tests) trains the same demo network for fewer steps.
  if [ "$corpus" = demo ] && [ "$demo_size" = small ]; then xvector_config=conf/xvector_demo_small.yaml; fi
fi
case $xvector_init in
  scratch|ge2e) ;;
  *) echo "run.sh: unknown --xvector-init '$xvector_init' (scratch|ge2e)" >&2; exit 1 ;;
esac
for spec in $cross_corpus; do
  IFS=: read -r name tdata tmap extra <<< "$spec"
  if [ -z "$name" ] || [ -z "$tdata" ] || [ -n "$extra" ]; then
    echo "run.sh: --cross-corpus '$spec': expected NAME:DATA-DIR[:LABEL-MAP]" >&2; exit 1
  fi
  [ -f "$tdata/utt2emo" ] || { echo "run.sh: --cross-corpus $spec: $tdata has no utt2emo (a prepared emotion data dir?)" >&2; exit 1; }
  [ -z "$tmap" ] || [ -f "$tmap" ] || { echo "run.sh: --cross-corpus $spec: label map $tmap does not exist" >&2; exit 1; }
done
case $cross_standardise in true|false) ;; *) echo "run.sh: --cross-standardise must be true or false" >&2; exit 1 ;; esac
case $emotion_final in true|false) ;; *) echo "run.sh: --emotion-final must be true or false" >&2; exit 1 ;; esac
for f in mfcc_config vad_config augment_config xvector_config xvector_adapt_config emotion_config sv_config sv_emotion_config; do
  [ -f "${!f}" ] || { echo "run.sh: --${f//_/-} ${!f} does not exist" >&2; exit 1; }
done

# Where things live (data flows one way through these).
emo=data/$corpus                 # all/, all_aug/, and the protocol: fold<k>/{train,dev,test} or {train,dev,test}
pre=data/pretrain                # train/ (speakers for the x-vector), train_aug/, train_combined/
noise=data/noise                 # musan_{noise,music,speech}/, rirs/
mkdir -p exp

# One recipe at a time in this directory: the kernel drops the lock when this run
# (and the jobs it started) ends, however it ends; the file says who holds it.
lock=exp/.run.lock
if [ "$dry_run" != true ]; then
  exec 9<>"$lock"
  flock -n 9 || { echo "run.sh: another ./run.sh is running in $PWD ($(cat "$lock")); wait for it or stop it" >&2; exit 1; }
  echo "pid $$, stage $stage, since $(date '+%F %T')" > "$lock"
fi

# Each stage logs its wall time to exp/stage_times (read by the report).
run_stage() {  # run_stage N description
  local n=$1; shift
  if [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ]; then
    echo "=== stage $n: $* ($(date '+%F %T'))"
    [ "$dry_run" = true ] && return 1
    echo "pid $$, stage $n ($*), since $(date '+%F %T')" > "$lock"
    stage_start=$(date +%s)
    return 0
  fi
  return 1
}
end_stage() {  # end_stage N
  local t=$(( $(date +%s) - stage_start ))
  echo "$1 $t" >> exp/stage_times
  echo "=== stage $1 done in ${t}s"
}

if [ "$dry_run" != true ]; then
  . ./path.sh
  . ./cmd.sh
fi

if run_stage 0 "data directories"; then
  local/prepare_data.sh --corpus "$corpus" --nj "$nj" --demo-root "$demo_root" --demo-size "$demo_size" \
    --ravdess-root "$ravdess_root" --iemocap-root "$iemocap_root" \
    --msp-podcast-root "$msp_podcast_root" --msp-test-set "$msp_test_set" \
    --crema-d-root "$crema_d_root" --manifest "$manifest" --manifest-folds "$manifest_folds" \
    --voxceleb-root "$voxceleb_root" --musan-root "$musan_root" --rirs-root "$rirs_root" \
    --pretrain-data "$pretrain_data" "$emo" "$pre" "$noise"
  end_stage 0
fi

if run_stage 1 "augmentation"; then
  steps/augment_data_dir.sh --nj "$nj" --cmd "$train_cmd" --config "$augment_config" $pre/train $noise $pre/train_aug
  utils/combine_data.sh $pre/train_combined $pre/train $pre/train_aug
  steps/augment_data_dir.sh --nj "$nj" --cmd "$train_cmd" --config "$augment_config" $emo/all $noise $emo/all_aug
  end_stage 1
fi

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

if run_stage 3 "x-vector training"; then
  xv_opts=(--gpus "$gpus")
  [ "$nodes" -gt 1 ] && xv_opts=(--nodes "$nodes" --gpus-per-node "$gpus")
  # Switching between a trained and an imported encoder starts the models afresh;
  # the old ones move into a dated folder, never deleted.
  if [ -f exp/xvector_clean/xvector_init ] && [ "$(cat exp/xvector_clean/xvector_init)" != "$xvector_init" ]; then
    stale=exp/stale_$(date +%Y%m%d-%H%M%S)
    echo "run.sh: exp/xvector_{clean,aug} were made with --xvector-init $(cat exp/xvector_clean/xvector_init); moving them to $stale/ for $xvector_init (delete it when no longer needed)"
    mkdir -p "$stale"
    for m in clean aug; do
      if [ -e exp/xvector_$m ]; then mv exp/xvector_$m "$stale/"; fi
    done
  fi
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

if run_stage 5 "emotion recognition"; then
  if [ -z "$emotion_nj" ]; then
    # Locally the folds of a setting share the cores with the other setting's; a cluster takes one job a fold.
    case $cuda_cmd in *parallel/run.py*) emotion_nj=$(( nj > 1 ? nj / 2 : 1 )) ;; *) emotion_nj=0 ;; esac
  fi
  # An imported encoder is not a ResNet: the random-init rows take the x-vector config's.
  arch_opt=()
  [ "$xvector_init" = scratch ] || arch_opt=(--architecture "$xvector_config")
  for system in $emotion_systems; do
    # clean and clean+aug side by side: their fold jobs share the machine (or the
    # queue), so no core waits for the slowest fold of one of them.
    pids=()
    for train_data in clean clean+aug; do
      steps/train_emotion.sh --cmd "$cuda_cmd" --use-gpu "$use_gpu" --nj "$emotion_nj" --final "$emotion_final" \
        --config "$emotion_config" \
        "${arch_opt[@]}" --system $system --train-data $train_data $emo exp/emotion/$corpus &
      pids+=($!)
    done
    # 75: stopped for pre-emption with a checkpoint (rerun to resume); anything else: a failure.
    failed=0 stopped=0
    for pid in "${pids[@]}"; do
      rc=0; wait $pid || rc=$?
      case $rc in 0) ;; 75) stopped=1 ;; *) failed=1 ;; esac
    done
    [ $failed = 0 ] || { echo "run.sh: stage 5: $system failed (see the messages above)" >&2; exit 1; }
    [ $stopped = 0 ] || { echo "run.sh: stage 5: $system stopped for pre-emption; run the same command again to resume" >&2; exit 75; }
  done
  # Cross-corpus: each system's final model on the other corpora (one line per failure, then stop).
  failed=()
  eval_cmd=$train_cmd; [ "$use_gpu" = false ] || eval_cmd=$cuda_cmd
  for spec in $cross_corpus; do
    IFS=: read -r name tdata tmap <<< "$spec"
    for system in $cross_systems; do
      for tag in clean clean_aug; do
        steps/eval_emotion.sh --cmd "$eval_cmd" --use-gpu "$use_gpu" --standardise "$cross_standardise" ${tmap:+--label-map "$tmap"} \
          --target "$name" exp/emotion/$corpus/${system}_$tag "$tdata" exp/emotion/$corpus/cross/$name/${system}_$tag \
          || failed+=("$name:${system}_$tag")
      done
    done
  done
  [ ${#failed[@]} = 0 ] || { echo "run.sh: stage 5: cross-corpus evaluation failed for ${failed[*]}" >&2; exit 1; }
  end_stage 5
fi

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

if run_stage 7 "report"; then
  # Rebuilt when a result, a data dir or the report code is newer than it
  # (stage times and dot files aside), or when it leads with another corpus.
  newer=$(find exp data pyxv/report local/make_report.py \( -path exp/RESULTS.md -o -path exp/results.csv \
    -o -path exp/report -o -path exp/stage_times -o -name '.*' -o -name __pycache__ \) -prune \
    -o -type f -newer exp/RESULTS.md -print -quit 2>/dev/null || echo missing)
  if [ -f exp/RESULTS.md ] && [ -z "$newer" ] && head -n 1 exp/RESULTS.md | grep -qE "^# pyxv results: $corpus(,|\$)"; then
    echo "run.sh: exp/RESULTS.md is newer than every result; not rebuilt"
  else
    local/make_report.py --corpus "$corpus" exp exp/RESULTS.md
  fi
  end_stage 7
  echo "run.sh: results in exp/RESULTS.md"
fi
