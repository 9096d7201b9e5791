#!/usr/bin/env bash
# First-run set-up: the Python environment in .venv and the system packages the
# recipe calls (espeak-ng and sox for the demo corpus). Idempotent: a finished
# set-up leaves .venv/.pyxv-setup-done and a second call returns at once.
#
# CPU machines get the CPU wheel of torch (pinned, it lies on local disk).
# GPU users: install the CUDA build of torch into .venv first (see README);
# a torch already present is kept. Test-only packages are not installed here
# (utils/setup_test_env.sh makes .venv-test for them).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$root/.venv
stamp=$venv/.pyxv-setup-done
python=${PYTHON:-python3}
torch_spec=${PYXV_TORCH:-torch==2.13.0}

need_pkgs=()
command -v espeak-ng >/dev/null 2>&1 || need_pkgs+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need_pkgs+=(sox)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup_env.sh: installing system packages: ${need_pkgs[*]}" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "setup_env.sh: missing system packages: ${need_pkgs[*]}; install them (e.g. sudo apt-get install ${need_pkgs[*]})" >&2
    exit 1
  fi
fi

if [ -f "$stamp" ] && [ "$stamp" -nt "$root/pyproject.toml" ]; then
  exit 0
fi
start=$(date +%s)
if [ ! -x "$venv/bin/python" ]; then
  echo "setup_env.sh: creating the Python environment in $venv" >&2
  "$python" -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import torch' >/dev/null 2>&1; then
  echo "setup_env.sh: installing $torch_spec (CPU)" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check "$torch_spec"
fi
echo "setup_env.sh: installing pyxv and its dependencies" >&2
"$venv/bin/pip" install -q --disable-pip-version-check -e "$root"
# The recipe's environment holds only what the recipe runs on. Test-only packages
# live in .venv-test (utils/setup_test_env.sh); earlier set-ups put them here,
# where they could hide a path a user's fresh environment fails on.
test_only=()
for p in pytest kaldi-native-fbank resemblyzer librosa webrtcvad-wheels; do
  "$venv/bin/pip" show -q "$p" >/dev/null 2>&1 && test_only+=("$p")
done
if [ ${#test_only[@]} -gt 0 ]; then
  echo "setup_env.sh: removing test-only packages from $venv (the tests keep theirs in .venv-test): ${test_only[*]}" >&2
  "$venv/bin/pip" uninstall -q -y "${test_only[@]}"
fi
touch "$stamp"
echo "setup_env.sh: done in $(( $(date +%s) - start )) s" >&2
