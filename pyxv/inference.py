"""Inference for people: x-vectors, emotions and same-speaker decisions of audio files.

The logic behind the ``pyxv`` command (:mod:`pyxv.cli`), usable from Python::

    xv = XVectorModel("exp/xvector_clean")                 # final.pt + mfcc.conf + vad.conf
    emb = xv.embed_file("a.flac")                           # (E,) float32
    emo = load_emotion_model("exp/emotion/demo/frozen_lr_clean_clean/fold1")
    names, post = emo.posteriors(["a.wav", "b.flac"])      # (N, C), rows sum to 1
    v = Verifier.load("exp/xvector_clean")                  # back-end + threshold
    v.verify("a.wav", "b.wav")                              # {"score", "threshold", "same"}

Features come from the front-end the encoder type declares
(:mod:`pyxv.features.frontend`). For the ResNet they are computed as in
training: the MFCC and VAD configs kept with the model (``mfcc.conf``/``vad.conf`` in the x-vector exp dir, or their texts inside
``final.pt``), audio of any rate resampled to the config's rate, channels
averaged, then sliding CMN and voiced-frame selection with the model's
``data.cmn_window``/``data.apply_vad``; an utterance with fewer than
``extract.min_frames`` voiced frames uses all its frames (as the recipe's
extraction does). The MFCC dither is seeded per utterance name
(:func:`pyxv.features.mfcc.utt_seed` with seed 0, the recipe's feature step's
rule), so a wav.scp given to :meth:`XVectorModel.embed_table` reproduces the
recipe's features.
"""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .features.frontend import FrontEndError, MfccVadFrontEnd, audio_name

log = logging.getLogger("pyxv.inference")


class InferenceError(RuntimeError):
    """A model dir or input that cannot be used; the message says which and why."""


# ------------------------------------------------------------------ helpers
def find_recipe_path(rel: str | os.PathLike, start: Path) -> Path:
    """Resolve a path a stage recorded relative to the recipe root (e.g.
    ``exp/xvector_clean``): as given (absolute, or from the current dir), else
    from each parent of ``start``."""
    rel = Path(rel)
    if rel.is_absolute() or rel.exists():
        return rel
    for parent in [start, *start.resolve().parents]:
        if (parent / rel).exists():
            return parent / rel
    raise InferenceError(f"cannot find {rel} (recorded in {start}) from the current directory or above {start}")


def read_inputs(path: str) -> list[tuple[str, str]]:
    """``[(name, wav.scp value)]`` of an audio file (name: its stem) or of a
    Kaldi wav.scp / list file (``utt path-or-command``; a line with only a path
    is named by its stem)."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise InferenceError(f"{path}: no such file")
    if not p.name.endswith(".scp"):
        try:
            sf.info(str(p))
            return [(audio_name(path), str(p))]
        except Exception:
            pass  # not audio: read as a table
    out, seen = [], set()
    with open(p, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            name, spec = (parts[0], parts[1]) if len(parts) == 2 else (audio_name(parts[0]), parts[0])
            if name in seen:
                raise InferenceError(f"{path}:{lineno}: duplicate name '{name}'")
            seen.add(name)
            out.append((name, spec))
    if not out:
        raise InferenceError(f"{path}: neither audio nor a wav.scp with entries")
    return out


# ------------------------------------------------------------------ x-vectors
class XVectorModel:
    """A trained or imported speaker encoder (``exp/xvector_<m>/`` or its
    ``final.pt``), any registered type, and the feature front-end it declares."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        from .train.checkpoint import CheckpointError, load_model

        path = Path(path)
        model = path / "final.pt" if path.is_dir() else path
        self.exp_dir = model.parent
        try:
            self.net, self.ck = load_model(model, device)
        except CheckpointError as e:
            raise InferenceError(str(e)) from e
        self.cfg = cfg = self.ck["config"]
        self.front = type(self.net).frontend(cfg, self.ck.get("extra") or {}, self.exp_dir)
        try:
            fdim = self.front.dim
        except FrontEndError as e:
            raise InferenceError(str(e)) from e
        if fdim != self.net.input_dim:
            raise InferenceError(f"{model}: network takes {self.net.input_dim}-dim input but its front-end "
                                 f"({self.front.describe()}) gives {fdim}")

    @property
    def dim(self) -> int:
        return self.net.embed_dim

    @property
    def device(self):
        """The network's device, where its inputs go (``xv.net.to(...)`` moves both)."""
        from .device import model_device

        return model_device(self.net)

    def embed_matrices(self, mats: Sequence[np.ndarray]) -> np.ndarray:
        from .extract import embed_matrices

        ec = self.cfg["extract"]
        return embed_matrices(self.net, list(mats), chunk_frames=ec["chunk_frames"],
                              batch_frames=ec["batch_frames"])

    def features(self, spec: str, name: str | None = None) -> np.ndarray:
        try:
            return self.front(spec, name)
        except FrontEndError as e:
            raise InferenceError(str(e)) from e

    def embed_file(self, spec: str, name: str | None = None) -> np.ndarray:
        """(E,) x-vector of one audio file."""
        return self.embed_matrices([self.features(spec, name)])[0]

    def embed_table(self, items: Iterable[tuple[str, str]], stats: dict | None = None
                    ) -> Iterator[tuple[str, np.ndarray]]:
        """Yield (name, x-vector) for ``(name, wav.scp value)`` items; an
        unreadable one is logged, counted in ``stats['failed']`` and skipped."""
        stats = {} if stats is None else stats
        stats.setdefault("failed", 0)
        for name, spec in items:
            try:
                x = self.features(spec, name)
            except Exception as e:
                log.warning("%s: skipped: %s", name, e)
                stats["failed"] += 1
                continue
            yield name, self.embed_matrices([x])[0]


# -------------------------------------------------------------------- emotion
class EmotionModel:
    """Common interface: ``classes`` and ``posteriors(specs)``."""

    classes: list[str]
    kind: str

    def posteriors(self, specs: Sequence[str], names: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
        raise NotImplementedError


class FrozenLREmotion(EmotionModel):
    """x-vectors of the pointed-to model + the fold's logistic regression
    (``model.pkl`` of :func:`pyxv.emotion.systems.run_frozen_lr`)."""

    kind = "frozen_lr"

    def __init__(self, fold_dir: Path, device: str = "cpu"):
        with open(fold_dir / "model.pkl", "rb") as f:
            try:
                obj = pickle.load(f)
            except Exception as e:
                raise InferenceError(f"{fold_dir / 'model.pkl'}: cannot read ({e})") from e
        if not isinstance(obj, dict) or "lr" not in obj or "xvector_model" not in obj:
            raise InferenceError(f"{fold_dir / 'model.pkl'}: not a frozen x-vector + LR model")
        self.lr = obj["lr"]
        self.classes = [str(c) for c in self.lr.classes]  # predict_proba's column order
        self.xvector = XVectorModel(find_recipe_path(obj["xvector_model"], fold_dir), device)
        self.source = str(self.xvector.exp_dir)

    def posteriors(self, specs, names=None):
        names = list(names) if names is not None else [audio_name(s) for s in specs]
        X = np.stack([self.xvector.embed_file(s, n) for s, n in zip(specs, names)])
        return names, np.asarray(self.lr.predict_proba(X), dtype=np.float64)


class NnetEmotion(EmotionModel):
    """A random-init or fine-tuned network (the fold's ``final.pt`` with an
    emotion output layer; ``extra`` says its features)."""

    def __init__(self, fold_dir: Path, device: str = "cpu"):
        from .train.checkpoint import CheckpointError, load_model

        try:
            self.net, ck = load_model(fold_dir / "final.pt", device)
        except CheckpointError as e:
            raise InferenceError(str(e)) from e
        extra = ck.get("extra") or {}
        self.classes = [str(c) for c in (extra.get("classes") or ck["labels"])]
        self.kind = str(extra.get("emotion_system", "nnet"))
        self.features = extra.get("features", "mfcc")
        cfg = ck["config"]
        self.cmn_window = int(extra.get("cmn_window", cfg["data"]["cmn_window"]))
        self.apply_vad = bool(extra.get("apply_vad", cfg["data"]["apply_vad"]))
        self.source = str(fold_dir)
        if self.features == "gemaps":
            mean, std = extra.get("gemaps_mean"), extra.get("gemaps_std")
            self.gemaps_norm = (np.asarray(mean, np.float32), np.asarray(std, np.float32)) if mean else None
            self.front = None
        elif self.features == "mfcc":
            # The fold's own confs, else those of the x-vector model it came from.
            extra = dict(extra)
            pre = self._pretrained_dir(extra, fold_dir)
            for name in ("mfcc.conf", "vad.conf"):
                for d in (fold_dir, pre):
                    if not extra.get(name) and d is not None and (d / name).is_file():
                        extra[name] = (d / name).read_text()
            self.front = MfccVadFrontEnd(cmn_window=self.cmn_window, apply_vad=self.apply_vad,
                                         min_frames=cfg["extract"]["min_frames"], device=device,
                                         mfcc_text=extra.get("mfcc.conf"), vad_text=extra.get("vad.conf"),
                                         where=str(fold_dir))
        else:  # the front-end of the fine-tuned encoder's own type (e.g. GE2E's mel spectrogram)
            self.front = type(self.net).frontend(cfg, extra, fold_dir)

    @property
    def device(self):
        """The network's device, where its inputs go."""
        from .device import model_device

        return model_device(self.net)

    @staticmethod
    def _pretrained_dir(extra: dict, fold_dir: Path) -> Path | None:
        """The x-vector exp dir the network's architecture came from (its confs
        describe the features when the fold's model does not store them)."""
        where = extra.get("architecture_from")
        if where and str(where).endswith(".pt"):
            try:
                return find_recipe_path(where, fold_dir).parent
            except InferenceError:
                return None
        return None

    def _gemaps(self, spec: str, name: str) -> np.ndarray:
        """Standardised eGeMAPS LLDs (T, 25), computed as stage 2 does
        (``pyxv.features.gemaps.Gemaps.both`` at the audio's own rate)."""
        from .features.gemaps import Gemaps
        from .io import read_audio

        if not hasattr(self, "_gemaps_extractor"):
            self._gemaps_extractor = Gemaps()
        x, sr = read_audio(spec, name=name)
        L = np.nan_to_num(self._gemaps_extractor.both(x, sr)[0].astype(np.float32))
        if self.gemaps_norm is not None:
            L = (L - self.gemaps_norm[0]) / self.gemaps_norm[1]
        return L

    def posteriors(self, specs, names=None):
        import torch

        names = list(names) if names is not None else [audio_name(s) for s in specs]
        try:
            mats = [self._gemaps(s, n) if self.features == "gemaps" else self.front(s, n)
                    for s, n in zip(specs, names)]
        except FrontEndError as e:
            raise InferenceError(str(e)) from e
        from .extract import embed_matrices

        E = embed_matrices(self.net, mats)   # on the network's device, as the embeddings below
        with torch.no_grad():
            logits = self.net.logits_from_embedding(torch.from_numpy(E).to(self.device)).float()
            P = torch.softmax(logits, dim=-1).cpu().numpy().astype(np.float64)
        return names, P


def load_emotion_model(path: str | os.PathLike, device: str = "cpu") -> EmotionModel:
    """A trained emotion system: a fold dir (``model.pkl`` -> frozen LR,
    ``final.pt`` -> network) or a system dir (its first fold is used)."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    if not p.is_dir():
        raise InferenceError(f"{path}: no such model dir")
    if not ((p / "model.pkl").is_file() or (p / "final.pt").is_file()):
        folds = sorted(q for q in p.iterdir() if q.is_dir() and
                       ((q / "model.pkl").is_file() or (q / "final.pt").is_file()))
        if not folds:
            raise InferenceError(f"{path}: neither a fold dir (model.pkl or final.pt) nor a system dir with folds")
        log.info("%s: using fold %s", path, folds[0].name)
        p = folds[0]
    if (p / "model.pkl").is_file():
        return FrozenLREmotion(p, device)
    return NnetEmotion(p, device)


# ---------------------------------------------------------------- verification
class Verifier:
    """x-vector model + SV back-end (``pyxv.backend.pipeline.Backend``) with the
    EER threshold stored in the back-end."""

    def __init__(self, xvector: XVectorModel, backend, source: str):
        self.xvector, self.backend, self.source = xvector, backend, source

    @classmethod
    def load(cls, xvector_exp: str | os.PathLike, backend: str | None = None, device: str = "cpu") -> "Verifier":
        """``backend``: a saved back-end file, or ``cosine``/``plda`` (the newest
        ``exp/sv/*/xvector_<m>/<name>/backend.pkl`` of this model), or None
        (cosine, else plda, else a cosine back-end fitted now on the model's
        pre-training x-vectors, ``xvectors_pretrain/train``)."""
        from .backend.pipeline import Backend

        xv = XVectorModel(xvector_exp, device)
        if backend and Path(backend).is_file():
            try:
                return cls(xv, Backend.load(backend), str(backend))
            except Exception as e:
                raise InferenceError(f"{backend}: cannot load back-end ({e})") from e
        names = [backend] if backend else ["cosine", "plda"]
        for name in names:
            if name not in ("cosine", "plda"):
                raise InferenceError(f"--backend {name}: neither a back-end file nor cosine|plda")
            found = cls._find_saved(xv.exp_dir, name)
            if found is not None:
                return cls(xv, Backend.load(found), str(found))
        if backend in (None, "cosine"):
            be, src = cls._fit_cosine(xv.exp_dir)
            return cls(xv, be, src)
        raise InferenceError(f"no saved {backend} back-end for {xv.exp_dir} (exp/sv/*/{xv.exp_dir.name}/"
                             f"{backend}/backend.pkl); run stage 6 or pass a back-end file")

    @staticmethod
    def _find_saved(exp_dir: Path, name: str) -> Path | None:
        root = exp_dir.resolve().parent
        cands = sorted(root.glob(f"sv/*/{exp_dir.resolve().name}/{name}/backend.pkl"),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        return cands[0] if cands else None

    @staticmethod
    def _fit_cosine(exp_dir: Path):
        import kaldiio

        from .backend.pipeline import Backend

        xdir = exp_dir / "xvectors_pretrain" / "train"
        scp = xdir / "xvector.scp"
        if not scp.is_file():
            raise InferenceError(f"no saved back-end for {exp_dir} and no {scp} to fit a cosine one on")
        u2s = None
        for cand in (xdir / "utt2spk", exp_dir.resolve().parent.parent / "data" / "pretrain" / "train" / "utt2spk"):
            if cand.is_file():
                from .io import read_table

                u2s = read_table(cand)
                break
        if u2s is None:
            raise InferenceError(f"{scp}: no utt2spk to fit a cosine back-end with (looked beside it and in "
                                 "data/pretrain/train)")
        keys, X = [], []
        for k, v in kaldiio.load_scp_sequential(str(scp)):
            if k in u2s:
                keys.append(k)
                X.append(np.asarray(v, dtype=np.float64).reshape(-1))
        be = Backend.from_config(None, "cosine").fit(np.stack(X), np.asarray([u2s[k] for k in keys]))
        return be, f"cosine fitted now on {scp} ({len(keys)} x-vectors)"

    def score_embeddings(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(self.backend.score_pairs(a[None, :], b[None, :])[0])

    def verify(self, spec_a: str, spec_b: str, threshold: float | None = None) -> dict:
        """{"score", "threshold", "same"}: same speaker iff score >= threshold."""
        ea = self.xvector.embed_file(spec_a)
        eb = self.xvector.embed_file(spec_b)
        s = self.score_embeddings(ea, eb)
        th = float(self.backend.threshold) if threshold is None else float(threshold)
        same = bool(s >= th) if np.isfinite(th) else None
        return {"a": spec_a, "b": spec_b, "score": s, "threshold": th, "same": same,
                "backend": getattr(self.backend, "kind", "?"), "backend_source": self.source,
                "model": str(self.xvector.exp_dir)}


def write_ark(pairs: Iterable[tuple[str, np.ndarray]], out_ark: str | os.PathLike) -> int:
    """x-vectors to ``out_ark`` and the ``.scp`` beside it (atomic)."""
    from .extract import write_embeddings

    Path(out_ark).parent.mkdir(parents=True, exist_ok=True)
    return write_embeddings(pairs, out_ark)
