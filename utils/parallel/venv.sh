#!/usr/bin/env bash
# Run a command in the project's .venv, as path.sh would, but without path.sh's
# first-use set-up: that wants the system packages of the demo corpus (espeak-ng,
# sox), which compute nodes need not have. The .venv must already exist (./run.sh
# or utils/setup_env.sh makes it once, on a machine that shares this folder).
#   utils/parallel/venv.sh python -m pyxv.launch --nnodes 2 --nproc-per-node 4 -m pyxv.bin.train_xvector ...
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ ! -f "$root/.venv/bin/activate" ]; then
  echo "venv.sh: $root/.venv does not exist on $(hostname): make it once with ./run.sh (or utils/setup_env.sh)" \
       "on a machine that shares $root" >&2
  exit 1
fi
# shellcheck disable=SC1091
. "$root/.venv/bin/activate"
export PYXV_ROOT=$root
export PATH=$root/utils:$root/utils/parallel:$root/steps:$root/local:$PATH
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
export LC_ALL=C
export PYTHONUNBUFFERED=1
exec "$@"
