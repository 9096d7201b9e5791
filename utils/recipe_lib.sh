#!/usr/bin/env bash
# run.sh's plumbing, sourced by it once its options have their defaults:
#   --help        the usage text, made from run.sh's own comments: its header, each stage's
#                 comment (the lines above `if run_stage N`), each option line
#                 `name=default  # description` (continued by indented comment lines) with
#                 its default, then the emotion systems of the table
#   the options   parsed (utils/parse_options.sh) and checked: a bad one is one line on
#                 stderr before any work, and no set-up starts
#   the run lock  one ./run.sh at a time in this directory (exp/.run.lock)
#   run_stage N DESCRIPTION, end_stage N
#                 whether stage N is in the asked range, its banner, its wall time
#                 appended to exp/stage_times (the report reads it)
#   set_aside_xvectors_of_another_init
#                 stage 3's step aside: models made with another --xvector-init move
#                 into a dated folder before the new ones are made

# run.sh's option block: the lines above the one that sources this file, from the
# first option on; the last line of each option (its continuations included) ends
# with a tab and the option's name.
recipe_option_lines() {
  awk '
    function flush(  i) { for (i = 0; i < n; i++) print lines[i] (i == n - 1 ? "\t" name : ""); n = 0; name = "" }
    /^\. utils\/recipe_lib\.sh/ { exit }
    /^[a-z][a-z0-9_]*=/ { flush(); name = $0; sub(/=.*/, "", name); lines[n++] = $0; next }
    name != "" && /^[ \t]+#/ { lines[n++] = $0; next }
    { flush() }
    END { flush() }
  ' "$1"
}

recipe_help() {  # recipe_help SCRIPT
  local script=$1 line last name desc meta
  echo "Usage: ./${script##*/} [options]"
  echo
  while IFS= read -r line; do   # the header comment
    case $line in '#!'*) continue ;; '#'*) ;; *) break ;; esac
    line=${line#\#}; echo "${line# }"
  done < "$script"
  echo
  echo "Stages:"   # each from the comment above its `if run_stage N` line
  awk '/^#/ { text[n++] = substr($0, 3); next }
       /^if run_stage [0-9]+ / { for (i = 0; i < n; i++) printf "  %-3s%s\n", (i ? "" : $3), text[i] }
       { n = 0 }' "$script"
  echo
  echo "Options (default in brackets):"
  while IFS= read -r line; do
    last=; if [[ $line == *$'\t'* ]]; then last=${line##*$'\t'}; line=${line%$'\t'*}; fi
    if [[ $line =~ ^([a-z][a-z0-9_]*)=[^#]*(#[[:space:]]?(.*))?$ ]]; then
      name=${BASH_REMATCH[1]}; desc=${BASH_REMATCH[3]}
      case ${!name}:$name in   # what the value is, from its default and its name
        true:*|false:*) meta=BOOL ;;
        *:*_config) meta=FILE ;;
        *:*_root|*:*_data) meta=DIR ;;
        *:*_nj) meta=N ;;
        *) if [[ ${!name} =~ ^[0-9]+$ ]]; then meta=N; else meta=${name##*_}; meta=${meta^^}; fi ;;
      esac
      line=$(printf '  %-23s %s' "--${name//_/-} $meta" "$desc")
    else
      [[ $line =~ ^[[:space:]]+#[[:space:]]?(.*)$ ]]
      desc=${BASH_REMATCH[1]}; line=$(printf '  %-23s %s' "" "$desc")
    fi
    # An empty default goes unsaid; a description may close with its own [default].
    if [ -n "$last" ] && [ -n "${!last}" ] && [[ $desc != *']' ]]; then line+=" [${!last}]"; fi
    echo "$line"
  done < <(recipe_option_lines "$script")
  echo
  echo "Emotion systems of stage 5 (pyxv/emotion/spec.py), the names --cross-systems takes:"
  # The table is standard-library Python: any python3 lists it, before the set-up too.
  python3 -m pyxv.bin.train_emotion --list-systems 2>/dev/null | awk -F'\t' '{ printf "  %-23s %s\n", $1, $2 }' \
    || echo "  (python3 -m pyxv.bin.train_emotion --list-systems lists them)"
}

# --help is built only when asked for (it reads run.sh and the table of systems).
for __arg in "$@"; do
  case $__arg in --help|-h) help_message=$(recipe_help "${0##*/}"); break ;; esac   # run.sh is in its own folder now
done
unset __arg
. utils/parse_options.sh

# Every check before any work: a bad option is one line, and nothing starts.
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

# Stage 3: switching between a trained and an imported encoder starts the models
# afresh; the old ones move into a dated folder, never deleted.
set_aside_xvectors_of_another_init() {
  local made stale m
  made=$(cat exp/xvector_clean/xvector_init 2>/dev/null) || return 0
  [ "$made" != "$xvector_init" ] || return 0
  stale=exp/stale_$(date +%Y%m%d-%H%M%S)
  echo "run.sh: exp/xvector_{clean,aug} were made with --xvector-init $made; moving them to $stale/ for $xvector_init (delete it when no longer needed)"
  mkdir -p "$stale"
  for m in clean aug; do
    if [ -e exp/xvector_$m ]; then mv exp/xvector_$m "$stale/"; fi
  done
}
