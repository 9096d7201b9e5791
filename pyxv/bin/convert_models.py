"""Rewrite model files of an older pyxv (pickled) in the forms that load without running code.

  python -m pyxv.bin.convert_models --trust exp/emotion exp/sv exp/xvector_clean

Looks under each path (a file or a dir, recursively) for

- ``model.pkl`` (emotion LR) -> ``model.json`` + ``model.npz`` beside it;
- ``backend.pkl`` and ``backends/<fold>.pkl`` (SV back-ends) -> ``<stem>.json`` + ``<stem>.npz``;
- ``*.pt`` checkpoints that need ``torch.load(weights_only=False)`` -> the same file, tensors and plain
  values only.

Reading the old files can run code, so the tool does nothing without ``--trust``: give it only for
files whose source you trust. Each converted model is checked to give bit-identical outputs (LR
posteriors, back-end scores on random inputs) before the pickled file is removed; a checkpoint is
rewritten in place (whole or not at all). One line per file; exit status 1 if any file failed.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("convert_models")


def _probe(dim: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(16, dim))


def _lr_input_dim(model) -> int:
    """Input dimension of an EmotionLR (its first fitted step's mean, else the LR's) or a StandardizedLR."""
    if not hasattr(model, "pipe_"):
        return int(model.mean_.size)
    for st in model.pipe_.named_steps["pre"].steps_:
        if hasattr(st, "mean_"):
            return int(st.mean_.size)
    return int(model.pipe_.named_steps["lr"].n_features_in_)


def convert_lr(path: Path) -> str:
    from pyxv.emotion.lr import load_lr_model, save_lr_model

    model, meta = load_lr_model(path.parent, trust=True)
    dim = _lr_input_dim(model)
    want = model.predict_proba(_probe(dim))
    meta = {k: v for k, v in meta.items() if k != "selection"}
    save_lr_model(path.parent, model, meta, drop_pickle=False)   # the pickle goes only after the check
    got = load_lr_model(path.parent)[0].predict_proba(_probe(dim))   # model.json comes first
    if not np.array_equal(got, want):
        raise RuntimeError(f"{path}: the converted model's posteriors differ; model.json kept for inspection")
    path.unlink()
    return f"{path} -> {path.with_name('model.json')} (+ model.npz)"


def convert_backend(path: Path) -> str:
    from pyxv.backend.pipeline import Backend

    be = Backend.load(path, trust=True)
    dim = int(be.info.get("in_dim") or be.steps[0].mean_.size)
    X = _probe(dim)
    post = np.random.default_rng(1).dirichlet(np.ones(len(be.emotions)), size=len(X)) \
        if be.needs_trial_emotions else None   # emotion-aware scoring: posteriors over its emotions
    want = be.score_matrix(X, X[::-1], post, post)
    out = be.save(path.with_suffix(".json"))
    got = Backend.load(out).score_matrix(X, X[::-1], post, post)
    if not np.array_equal(got, want):
        raise RuntimeError(f"{path}: the converted back-end's scores differ; {out.name} kept for inspection")
    path.unlink()
    return f"{path} -> {out} (+ {out.with_suffix('.npz').name})"


def convert_checkpoint(path: Path) -> str | None:
    import torch

    from pyxv.train import checkpoint as ckpt

    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return None                                # already safe
    except Exception:
        pass
    ck = ckpt.load(path, trust=True)
    ckpt.save(ck, path)
    return f"{path}: rewritten (loads with weights_only=True)"


def candidates(paths: list[str]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.is_file() and (q.name in ("model.pkl", "backend.pkl")
                          or (q.parent.name == "backends" and q.suffix == ".pkl") or q.suffix == ".pt"))
        else:
            raise FileNotFoundError(f"{p}: no such file or dir")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("paths", nargs="+", help="files or dirs to look under")
    ap.add_argument("--trust", action="store_true", help="required: the pickled files are read, which can run code")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="convert_models: %(message)s")
    if not a.trust:
        print("convert_models: reading pickled model files can run code; give --trust if you trust their source",
              file=sys.stderr)
        return 1
    failed = 0
    try:
        files = candidates(a.paths)
    except FileNotFoundError as e:
        print(f"convert_models: {e}", file=sys.stderr)
        return 1
    for f in files:
        try:
            if f.name == "model.pkl":
                msg = convert_lr(f)
            elif f.suffix == ".pkl":
                msg = convert_backend(f)
            elif f.suffix == ".pt":
                msg = convert_checkpoint(f)
            else:
                msg = None
            if msg:
                print(msg)
        except Exception as e:  # one line per file, the others still converted
            failed += 1
            print(f"convert_models: {f}: not converted: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
