# Sourced by run.sh and every step: the Python environment and search paths.
# On first use it builds .venv (utils/setup_env.sh); later it only activates it.
PYXV_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PYXV_ROOT
if [ ! -f "$PYXV_ROOT/.venv/.pyxv-setup-done" ] || [ "$PYXV_ROOT/pyproject.toml" -nt "$PYXV_ROOT/.venv/.pyxv-setup-done" ] \
   || ! command -v espeak-ng >/dev/null 2>&1 || ! command -v sox >/dev/null 2>&1; then
  "$PYXV_ROOT/utils/setup_env.sh" || { echo "path.sh: environment set-up failed" >&2; return 1 2>/dev/null || exit 1; }
fi
# shellcheck disable=SC1091
. "$PYXV_ROOT/.venv/bin/activate"
export PATH=$PYXV_ROOT/utils:$PYXV_ROOT/utils/parallel:$PYXV_ROOT/steps:$PYXV_ROOT/local:$PATH
export PYTHONPATH=$PYXV_ROOT${PYTHONPATH:+:$PYTHONPATH}
export LC_ALL=C
export PYTHONUNBUFFERED=1
