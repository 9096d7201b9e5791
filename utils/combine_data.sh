#!/usr/bin/env bash
# Combine data dirs. Every file present in all sources is merged; a file in only
# some is left out with a warning; a repeated utterance id is an error.
# Unchanged outputs are not rewritten (re-running is harmless). A combine made
# with the same arguments, with no file of a source or of the destination
# changed since (<dest>/.combined), is skipped without starting Python.
# Usage: utils/combine_data.sh <dest-data-dir> <src-data-dir1> <src-data-dir2> ...
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=python3  # the venv's when path.sh is sourced; else the repo's .venv
[ -z "${VIRTUAL_ENV:-}" ] && [ -x "$root/.venv/bin/python" ] && py=$root/.venv/bin/python

dirs=()   # positional arguments: dest, then sources
args=("$@")
while [ $# -gt 0 ]; do
  case $1 in --*=*) shift ;; --*) shift 2 ;; *) dirs+=("$1"); shift ;; esac
done
stamp=${dirs[0]:-/nonexistent}/.combined
if [ ${#dirs[@]} -ge 2 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${args[*]}" ] \
   && [ -f "${dirs[0]}/utt2spk" ] \
   && [ -z "$(find "${dirs[@]}" -maxdepth 1 -type f -newer "$stamp" -print -quit)" ]; then
  echo "combine_data.sh: ${dirs[0]} is up to date with ${dirs[*]:1}"
  exit 0
fi
rm -f "$stamp"
PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} "$py" -m pyxv.bin.datadir_tools combine "${args[@]}" || exit
echo "${args[*]}" > "$stamp"
