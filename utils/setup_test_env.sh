#!/usr/bin/env bash
# The tests' own environment, .venv-test, layered on the recipe's .venv.
#
# .venv (utils/setup_env.sh) holds what ./run.sh needs and nothing else. The
# packages only the tests use live here instead, so that they can never make a
# recipe path look green that a user's fresh .venv would fail:
#   pytest                the test runner
#   kaldi-native-fbank    Kaldi's MFCC, the reference the MFCC tests and bench/features.py compare with
#   resemblyzer 0.1.4     Resemblyzer's own GE2E code, the reference of tests/test_ge2e.py
#   librosa, webrtcvad    imported by Resemblyzer's code (webrtcvad-wheels provides webrtcvad)
#   onnx, onnxscript, onnxruntime   pyxv export --format onnx and running its output (pyxv's 'export' extra)
# .venv-test sees .venv's packages through a .pth file (site.addsitedir, so .venv's
# own .pth files work too); its own come first. Tests that run the recipe's
# scripts get .venv through path.sh, exactly as a user does.
#
# Idempotent: a finished set-up leaves .venv-test/.pyxv-test-setup-done.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$root/.venv-test
stamp=$venv/.pyxv-test-setup-done
[ -x "$root/.venv/bin/python" ] || { echo "setup_test_env.sh: $root/.venv is missing (run utils/setup_env.sh first)" >&2; exit 1; }
# Done already: the stamp is newer than what the set-up depends on (the package
# list, this script, the recipe's own .venv set-up).
setup_done() {
  [ -f "$stamp" ] && [ "$stamp" -nt "$root/pyproject.toml" ] && [ "$stamp" -nt "${BASH_SOURCE[0]}" ] \
    && [ "$stamp" -nt "$root/.venv/.pyxv-setup-done" ]
}
setup_done && exit 0
# One set-up at a time (several test runs may start together); the others wait, then find it done.
mkdir -p "$venv"
exec 8>"$venv/.setup.lock"
flock 8
setup_done && exit 0
start=$(date +%s)
if [ ! -x "$venv/bin/python" ]; then
  echo "setup_test_env.sh: creating the tests' environment in $venv" >&2
  "$root/.venv/bin/python" -m venv "$venv"
fi
recipe_site=$("$root/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
test_site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir('$recipe_site')" > "$test_site/pyxv-recipe-env.pth"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
echo "setup_test_env.sh: installing the test-only packages" >&2
"${pip[@]}" 'pytest>=7' 'kaldi-native-fbank>=1.20' 'onnx>=1.23' 'onnxscript>=0.7' 'onnxruntime>=1.30'
# Resemblyzer without its dependencies: its webrtcvad pin needs a compiler, and
# webrtcvad-wheels provides the same module.
# Without a registry the GE2E comparisons skip (CI has one: there it is an error).
if ! "$venv/bin/python" -c 'import resemblyzer, librosa, webrtcvad' >/dev/null 2>&1; then
  if ! { "${pip[@]}" --no-deps resemblyzer==0.1.4 && "${pip[@]}" librosa webrtcvad-wheels; }; then
    echo "setup_test_env.sh: could not install resemblyzer/librosa/webrtcvad-wheels; the GE2E comparisons will skip" >&2
    [ "${CI:-}" = true ] && exit 1
    exit 0  # no stamp: the next run tries again
  fi
fi
touch "$stamp"
echo "setup_test_env.sh: done in $(( $(date +%s) - start )) s" >&2
