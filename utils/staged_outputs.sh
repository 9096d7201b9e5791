#!/usr/bin/env bash
# Staged outputs for the feature steps; sourced (after utils/parse_options.sh)
# by steps/make_mfcc.sh, steps/compute_vad.sh and steps/make_gemaps.sh.
# steps/augment_data_dir.sh uses staged_run only: its jobs stage audio and
# jsonl infos, not archives, and it assembles the data dir itself.
#
# A step's parallel jobs write their archives <stem>.JOB.{ark,scp} into a hidden
# staging dir <out-dir>/.new_<name>. Only when every job has succeeded do they
# replace the previous run's archives and the data dir's scp files, so a failed
# or killed run leaves the previous complete outputs as they were, and an
# interruption during the swap leaves no scp (the step redoes) rather than one
# that names archives of two runs.
#
#   new=$mfccdir/.new_$name
#   staged_prepare "$new" "raw_mfcc_$name"
#   staged_run "$new" MFCC "$data" "$logdir/make_mfcc_$name" \
#     $cmd JOB=1:$nj "$logdir/make_mfcc_$name.JOB.log" ... "$new/raw_mfcc_$name.JOB.ark" ...
#   staged_merge_scps "$new" "$nj" "$logdir/make_mfcc_$name" "$data" "raw_mfcc_$name:feats.scp"
#   staged_commit "$new" "$data" "raw_mfcc_$name:feats.scp" -- utt2num_frames
#
# A <stem>:<scp> pair ties the job archives <stem>.JOB.{ark,scp} to the merged
# <data>/<scp>. Failures end the script with exit 1. Call the functions as plain
# commands, not inside `if`, `||` or `&&`: there bash turns set -e off in them.

# staged_prepare <staging-dir> <stem>...
# Makes <staging-dir> anew and empty. What a killed run left goes first: the
# old staging dir, and the .<stem>.*.tmp.* files that the earlier writer (before
# staging) left beside the archives in <out-dir>.
staged_prepare() {
  local new=$1; shift
  local stem
  rm -rf "$new"
  for stem in "$@"; do rm -rf "${new%/*}/.$stem".*.tmp.*; done
  mkdir -p "$new"
}

# staged_run <staging-dir> <what> <data> <log-stem> <command>...
# Runs the job command (e.g. $cmd JOB=1:$nj <log-stem>.JOB.log ...). If it fails,
# removes the staging dir (the other jobs' outputs are useless without the failed
# one's), says so with the first FATAL line of the logs <log-stem>.*.log and
# exits 1; the previous outputs were never touched.
staged_run() {
  local new=$1 what=$2 data=$3 logs=$4; shift 4
  "$@" || {
    rm -rf "$new"
    echo "$0: $what of $data failed (see $logs.*.log); previous outputs left as they were" >&2
    grep -h "FATAL" "$logs".*.log | head -n 1 >&2 || true
    exit 1; }
}

# staged_merge_scps <staging-dir> <nj> <log-stem> <data> <stem>:<scp>...
# Checks that every job 1..nj left its <stem>.JOB.scp, points the job scps at the
# archives' final place in <out-dir>, and writes each merged, sorted scp to
# <data>/.<scp>.tmp, which staged_commit moves into place.
staged_merge_scps() {
  local new=$1 nj=$2 logs=$3 data=$4; shift 4
  local base=${new##*/} spec stem j
  for j in $(seq "$nj"); do
    for spec in "$@"; do
      stem=${spec%:*}
      [ -f "$new/$stem.$j.scp" ] || { echo "$0: job $j left no $stem.$j.scp; see $logs.$j.log" >&2; exit 1; }
    done
  done
  for spec in "$@"; do
    stem=${spec%:*}
    sed -i "s#/\.${base#.}/$stem\.#/$stem.#" "$new/$stem".*.scp
  done
  for spec in "$@"; do
    stem=${spec%:*}
    for j in $(seq "$nj"); do cat "$new/$stem.$j.scp"; done | sort > "$data/.${spec##*:}.tmp"
  done
}

# staged_commit <staging-dir> <data> <stem>:<scp>... [-- <file>...]
# Swaps the staged archives in for the old ones and installs the merged scps.
# The old <data>/<scp>s go first, so an interruption from here on leaves none
# (the step redoes), never one naming the wrong archives; the new scps go in
# last, after every archive is in place. Each <file> is another output that the
# caller wrote as <data>/.<file>.tmp; it goes in just before the scps.
staged_commit() {
  local new=$1 data=$2; shift 2
  local dir=${new%/*} specs=() old=() spec f
  while [ $# -gt 0 ] && [ "$1" != -- ]; do specs+=("$1"); shift; done
  if [ $# -gt 0 ]; then shift; fi
  for spec in "${specs[@]}"; do old+=("$data/${spec##*:}"); done
  for spec in "${specs[@]}"; do old+=("$dir/${spec%:*}".*.ark "$dir/${spec%:*}".*.scp); done
  rm -f "${old[@]}"
  for spec in "${specs[@]}"; do mv "$new/${spec%:*}".* "$dir"/; done
  rmdir "$new"
  for f in "$@"; do mv "$data/.$f.tmp" "$data/$f"; done
  for spec in "${specs[@]}"; do mv "$data/.${spec##*:}.tmp" "$data/${spec##*:}"; done
}
