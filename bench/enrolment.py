#!/usr/bin/env python3
"""Benchmark: enrolling a speaker from one utterance or from several, on RAVDESS.

  python bench/enrolment.py [--ravdess ../shared/corpora/ravdess] [--enroll 3] [--draws 5] \
      [--cache /tmp/ge2e_ravdess_enrol.npz] [--nj 2]

Embeddings: the GE2E encoder as the recipe imports it (``pyxv.train.import_encoder.import_ge2e``
from the installed Resemblyzer wheel; no download here), computed with ``pyxv embed``'s batch
path (:meth:`pyxv.inference.XVectorModel.embed_batch`) on every RAVDESS speech clip.

Protocol: for each of ``--draws`` seeded draws, every actor gets an enrolment set of
``--enroll`` of their clips (any emotion); every other clip of every actor of the same
gender is a test (target when it is the same actor). The same trials are scored three ways
with cosine scoring:

  single       the first clip of the enrolment set alone
  mean         the speaker model of ``pyxv verify --enroll`` (pyxv.speaker.SpeakerModel:
               mean of the length-normalised embeddings, one vector scored)
  score mean   the mean of the test's cosine scores against each enrolment clip

and the pooled EER of each is printed, side by side, per draw and over all draws.
Without the RAVDESS clips (../shared/corpora) or the Resemblyzer wheel it prints why and exits 0.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
REPO = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402


def ravdess_clips(root: Path) -> tuple[list[str], list[str]]:
    """(paths, actor ids) of every speech clip, sorted."""
    files = sorted(root.glob("Actor_*/03-01-*.wav")) + sorted(root.glob("Actor_*/03-01-*.flac"))
    files = sorted(files)
    return [str(f) for f in files], [f.stem.split("-")[-1] for f in files]


def embeddings(files: list[str], cache: Path | None, nj: int) -> np.ndarray:
    if cache is not None and cache.is_file():
        z = np.load(cache, allow_pickle=False)
        if list(z["files"]) == files:
            print(f"GE2E embeddings from the cache {cache}")
            return z["E"]
    from pyxv.inference import XVectorModel
    from pyxv.train.import_encoder import import_ge2e

    with tempfile.TemporaryDirectory() as td:
        import_ge2e(Path(td) / "ge2e", download=False)
        xv = XVectorModel(Path(td) / "ge2e")
        t0 = time.time()
        E = xv.embed_batch(files, nj=nj)
        print(f"embedded {len(files)} clips in {time.time() - t0:.0f} s")
    if cache is not None:
        np.savez(cache, files=np.array(files), E=E)
    return E


def cosine(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    A = A / np.linalg.norm(A, axis=-1, keepdims=True)
    B = B / np.linalg.norm(B, axis=-1, keepdims=True)
    return A @ B.T


def one_draw(E: np.ndarray, spk: np.ndarray, k: int, rng) -> dict[str, tuple[list, list]]:
    """Target and non-target scores of the three enrolment rules on one draw's trials."""
    from pyxv.speaker import SpeakerModel

    speakers = sorted(set(spk.tolist()))
    enrol = {s: rng.choice(np.flatnonzero(spk == s), k, replace=False) for s in speakers}
    used = np.zeros(len(spk), bool)
    for idx in enrol.values():
        used[idx] = True
    male = np.array([int(s) % 2 == 1 for s in spk])   # RAVDESS: odd actors are male
    out = {"single": ([], []), "mean": ([], []), "score mean": ([], [])}
    for s, idx in enrol.items():
        tests = np.flatnonzero(~used & (male == (int(s) % 2 == 1)))
        same = spk[tests] == s
        T = E[tests]
        model = SpeakerModel.from_embeddings(E[idx], {"model": "ge2e"})
        scores = {"single": cosine(E[idx[:1]], T)[0],
                  "mean": cosine(model.vector()[None], T)[0],
                  "score mean": cosine(E[idx], T).mean(0)}
        for name, sc in scores.items():
            out[name][0].extend(sc[same].tolist())
            out[name][1].extend(sc[~same].tolist())
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ravdess", default=str(REPO.parent / "shared" / "corpora" / "ravdess"))
    p.add_argument("--enroll", type=int, default=3, help="clips per enrolment set [3]")
    p.add_argument("--draws", type=int, default=5, help="seeded enrolment draws [5]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default="", help="npz cache of the embeddings")
    p.add_argument("--nj", type=int, default=2, help="feature worker processes [2]")
    a = p.parse_args()
    root = Path(a.ravdess)
    if not (root / "Actor_01").is_dir():
        print(f"bench/enrolment.py: skipped: RAVDESS clips not found at {root} (../shared/corpora is absent)")
        return 0
    try:
        import resemblyzer  # noqa: F401  (the GE2E weights ship in its wheel)
    except ImportError:
        print("bench/enrolment.py: skipped: the Resemblyzer wheel (GE2E weights) is not installed "
              "(utils/setup_test_env.sh installs it in .venv-test)")
        return 0
    import torch

    from pyxv.metrics.sv import eer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    files, spk = ravdess_clips(root)
    E = np.asarray(embeddings(files, Path(a.cache) if a.cache else None, a.nj), dtype=np.float64)
    spk = np.array(spk)
    rng = np.random.default_rng(a.seed)
    pooled = {"single": ([], []), "mean": ([], []), "score mean": ([], [])}
    print(f"RAVDESS: {len(files)} clips of {len(set(spk.tolist()))} actors; enrolment sets of {a.enroll} clips, "
          f"same-gender trials, cosine scoring")
    print(f"{'draw':>5}  {'single %':>9}  {'mean emb %':>10}  {'score mean %':>12}  {'targets':>8}  {'non-targets':>11}")
    for d in range(a.draws):
        res = one_draw(E, spk, a.enroll, rng)
        for name, (t, n) in res.items():
            pooled[name][0].extend(t)
            pooled[name][1].extend(n)
        e = {name: 100 * eer(np.array(t), np.array(n)) for name, (t, n) in res.items()}
        print(f"{d + 1:>5}  {e['single']:>9.2f}  {e['mean']:>10.2f}  {e['score mean']:>12.2f}  "
              f"{len(res['single'][0]):>8}  {len(res['single'][1]):>11}")
    e = {name: 100 * eer(np.array(t), np.array(n)) for name, (t, n) in pooled.items()}
    print(f"{'all':>5}  {e['single']:>9.2f}  {e['mean']:>10.2f}  {e['score mean']:>12.2f}  "
          f"{len(pooled['single'][0]):>8}  {len(pooled['single'][1]):>11}")
    print(f"EER single -> mean embedding: {e['single']:.2f} % -> {e['mean']:.2f} %; "
          f"score averaging {e['score mean']:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
