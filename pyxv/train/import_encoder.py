"""Import published speaker encoders as pyxv models (``final.pt`` in an exp dir).

Only an explicit call downloads anything: :func:`import_ge2e` takes
Resemblyzer's GE2E weights from, in this order, a weights file you name, a
wheel you name, the installed ``resemblyzer`` package, or ``pip download
--no-deps resemblyzer==0.1.4`` (the one network access of the recipe, made
only by ``local/import_encoder.sh``).

The result is an ordinary pyxv model file: ``model.type: ge2e_lstm``, no output
layer (``labels`` empty), the front-end options in its config, and where the
weights came from in ``extra`` and in ``README.txt`` beside it. Like training,
an import ends in a model file (:mod:`pyxv.train.checkpoint`): the two ways a
model comes to be sit side by side, above the networks of :mod:`pyxv.nnet`.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..io import file_digest

log = logging.getLogger("pyxv.nnet")

RESEMBLYZER = "resemblyzer==0.1.4"
RESEMBLYZER_WEIGHTS = "resemblyzer/pretrained.pt"
# Parameters of Resemblyzer's VoiceEncoder; similarity_* belong to the GE2E loss only.
GE2E_TRAINING_ONLY = ("similarity_weight", "similarity_bias")


class EncoderImportError(RuntimeError):
    """The weights could not be obtained or do not fit; the message says what to do."""


def _from_wheel(wheel: Path, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as z:
            if RESEMBLYZER_WEIGHTS not in z.namelist():
                raise EncoderImportError(f"{wheel}: has no {RESEMBLYZER_WEIGHTS} (not a Resemblyzer wheel?)")
            out = dest / "pretrained.pt"
            with z.open(RESEMBLYZER_WEIGHTS) as src, open(out, "wb") as f:
                f.write(src.read())
            return out
    except zipfile.BadZipFile as e:
        raise EncoderImportError(f"{wheel}: not a wheel (zip) file: {e}") from e


def _installed_weights() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"
    return p if p.is_file() else None


RESEMBLYZER_WHEEL = "Resemblyzer-0.1.4-py3-none-any.whl"  # as PyPI names it (capital R)


def _is_resemblyzer_wheel(path: Path) -> bool:
    """True for a wheel of the Resemblyzer distribution whatever the case or separator of its name
    (wheel names carry the project name as published; pip compares names normalised, PEP 503)."""
    dist = path.name.split("-", 1)[0]
    return path.suffix == ".whl" and re.sub(r"[-_.]+", "-", dist).lower() == "resemblyzer"


def _pip_error_line(text: str) -> str:
    """pip's own error line: the last line starting with ERROR:, else the last line that is not a warning."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    if errors:
        return errors[-1]
    other = [ln for ln in lines if not ln.startswith("WARNING:")]
    return (other or lines or [""])[-1]


def _pip_download(dest: Path) -> Path:
    """Resemblyzer's wheel by ``pip download --no-deps`` into ``dest``. pip's exit status decides success
    (it warns on stderr about unrelated things, e.g. index locations, even when it succeeds)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "-d", str(dest), RESEMBLYZER]
    log.info("downloading %s: %s", RESEMBLYZER, " ".join(cmd))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        r, err = None, str(e)
    else:
        err = _pip_error_line((r.stderr or "") + "\n" + (r.stdout or ""))
    wheels = sorted(w for w in dest.iterdir() if _is_resemblyzer_wheel(w)) if dest.is_dir() else []
    if r is not None and r.returncode == 0 and not wheels:
        found = ", ".join(sorted(w.name for w in dest.iterdir())) or "nothing"
        err = f"pip exited 0 but left no Resemblyzer wheel in {dest} (found: {found})"
    if r is None or r.returncode != 0 or not wheels:
        if r is not None and r.returncode != 0:
            err = f"pip exited {r.returncode}: {err or 'no message'}"
        raise EncoderImportError(
            f"could not download {RESEMBLYZER} with pip ({err}). Without network, on a "
            f"machine that has it run:  pip download --no-deps {RESEMBLYZER} -d DIR  and copy the wheel here, "
            f"then:  local/import_encoder.sh --wheel DIR/{RESEMBLYZER_WHEEL} ge2e <exp-dir>")
    return wheels[0]


def resemblyzer_weights(weights: str | os.PathLike | None, wheel: str | os.PathLike | None, work: Path,
                        download: bool = True) -> tuple[Path, str]:
    """(path of pretrained.pt, a sentence saying where it came from)."""
    if weights:
        p = Path(weights)
        if not p.is_file():
            raise EncoderImportError(f"{p}: weights file does not exist")
        return p, f"the weights file {p}"
    if wheel:
        w = Path(wheel)
        if not w.is_file():
            raise EncoderImportError(f"{w}: wheel does not exist")
        return _from_wheel(w, work), f"{RESEMBLYZER_WEIGHTS} of the wheel {w.name}"
    p = _installed_weights()
    if p is not None:
        return p, f"{RESEMBLYZER_WEIGHTS} of the installed resemblyzer package ({p})"
    if not download:
        raise EncoderImportError("no weights given, no resemblyzer installed, and downloading is off")
    w = _pip_download(work)
    return _from_wheel(w, work), f"{RESEMBLYZER_WEIGHTS} of {w.name} (pip download --no-deps {RESEMBLYZER})"


def ge2e_state_dict(path: Path) -> dict:
    """The encoder's tensors from a Resemblyzer checkpoint; an error naming the
    file and the missing or unexpected keys when it is not one."""
    import torch

    from ..nnet.encoder import state_mismatch
    from ..nnet.ge2e import GE2EEncoder

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise EncoderImportError(f"{path}: cannot read as a torch checkpoint: {e}") from e
    state = ck.get("model_state", ck) if isinstance(ck, dict) else None
    if not isinstance(state, dict):
        raise EncoderImportError(f"{path}: not a checkpoint dict (found {type(ck).__name__})")
    want = GE2EEncoder(num_classes=0).state_dict()
    state = {k: v for k, v in state.items() if k not in GE2E_TRAINING_ONLY}
    problem = state_mismatch(want, state, limit=None)
    if problem:
        raise EncoderImportError(f"{path}: not GE2E encoder weights: {problem}")
    return {k: state[k].float() for k in want}


README = """GE2E speaker encoder imported by pyxv (local/import_encoder.sh ge2e)

Model      3-layer LSTM (256 units) over 40 power mel bands, linear 256 -> 256, ReLU,
           L2 norm; whole utterances as the normalised mean of 1.6 s partial windows
           (Wan et al., "Generalized end-to-end loss for speaker verification", ICASSP 2018).
Weights    {origin}
           sha256 {sha}; training step {step}
From       Resemblyzer 0.1.4 by Corentin Jemine / Resemble AI, https://github.com/resemble-ai/Resemblyzer
Licence    Apache License 2.0 (the weights are distributed inside the Apache-2.0 wheel)
Front-end  {frontend}
pyxv type  model.type: ge2e_lstm (pyxv/nnet/ge2e.py); final.pt has no output layer
"""


def import_ge2e(out_dir: str | os.PathLike, *, weights=None, wheel=None, download: bool = True) -> Path:
    """Write ``out_dir/final.pt`` (+ config.yaml, README.txt) from Resemblyzer's GE2E weights."""
    import torch

    from ..features.frontend import Ge2eFrontEnd
    from ..io import atomic_open
    from ..nnet.config import build_encoder, dump_config, validate_config
    from . import checkpoint as ckpt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as td:
        src, origin = resemblyzer_weights(weights, wheel, Path(td), download)
        state = ge2e_state_dict(src)
        sha = file_digest(src)
        try:
            step = torch.load(src, map_location="cpu", weights_only=True).get("step", "?")
        except Exception:
            step = "?"
    cfg = validate_config({"model": {"type": "ge2e_lstm"}})
    net = build_encoder(cfg, 0)
    net.load_state_dict(state)
    extra = {"imported_from": origin, "source": "Resemblyzer 0.1.4 (https://github.com/resemble-ai/Resemblyzer)",
             "license": "Apache-2.0", "sha256": sha, "adapted": False}
    front = Ge2eFrontEnd.from_model(cfg)
    with atomic_open(out / "README.txt", "w", encoding="utf-8") as f:
        f.write(README.format(origin=origin, sha=sha, step=step, frontend=front.describe()))
    dump_config(cfg, out / "config.yaml")
    ckpt.save(ckpt.model_file(net, cfg, [], extra, epoch=0, history=[]), out / "final.pt")
    log.info("wrote %s (GE2E, %d parameters) from %s", out / "final.pt", net.num_parameters(), origin)
    return out / "final.pt"


IMPORTERS = {"ge2e": import_ge2e}
