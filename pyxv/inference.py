"""Inference for people: x-vectors, emotions and same-speaker decisions of audio files.

The logic behind the ``pyxv`` command (:mod:`pyxv.cli`), usable from Python::

    xv = XVectorModel("exp/xvector_clean")                 # final.pt + mfcc.conf + vad.conf
    emb = xv.embed_file("a.flac")                           # (E,) float32
    E = xv.embed_batch(["a.wav", "b.flac"], nj=4, batch=256)   # (N, E); arrays too (sample_rate=...)
    for r in xv.iter_embed(paths, nj=4): r.outputs[0] if r.ok else r.error   # streaming, bad files named
    emo = load_emotion_model("exp/emotion/demo/frozen_lr_clean_clean")  # its final/; or a fold dir
    names, post = emo.posteriors(["a.wav", "b.flac"])      # (N, C), rows sum to 1
    for r in emo.iter_posteriors(paths, window=3.0, hop=1.5): r.bounds, r.outputs   # over time
    v = Verifier.load("exp/xvector_clean")                  # back-end + threshold
    v.verify("a.wav", "b.wav")                              # {"score", "threshold", "same"}
    spk = v.enroll(["a1.wav", "a2.wav", "a3.wav"]); spk.save("alice.json")
    v.score_speaker(SpeakerModel.load("alice.json"), ["x.wav", "y.wav"])   # [{"score", "same"} ...]

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

Many files go through :mod:`pyxv.batch`: features per file (in ``nj`` worker
processes), the network in blocks of ``batch`` files with stage 4's batching
(on the CPU the network's compiled copy, :func:`pyxv.nnet.cpu_embedder.for_cpu_extraction`,
as stage 4 uses it).
"""
from __future__ import annotations

import logging
import os
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


AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au",
                            ".snd", ".sph", ".nist", ".w64", ".rf64", ".caf", ".wv", ".voc", ".m4a"})


def read_inputs(path: str) -> list[tuple[str, str]]:
    """``[(name, wav.scp value)]`` of an audio file (name: its stem) or of a
    Kaldi wav.scp / list file (``utt path-or-command``; a line with only a path
    is named by its stem)."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise InferenceError(f"{path}: no such file")
    if p.suffix.lower() in AUDIO_SUFFIXES:
        # Named as audio: an unreadable one is a bad audio file (named when read), not a table.
        return [(audio_name(path), str(p))]
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


def gather_inputs(paths: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """``read_inputs`` of each path: ``([(name, spec)], [one line per path that
    cannot be read])``. A name given twice (two files of one stem, or a table
    and a file) is an InferenceError: names key the outputs."""
    items, errors, where = [], [], {}
    for p in paths:
        try:
            got = read_inputs(str(p))
        except InferenceError as e:
            errors.append(str(e))
            continue
        for name, spec in got:
            if name in where:
                raise InferenceError(f"two inputs named '{name}': {where[name]} and {spec} (names key the "
                                     "outputs; give a wav.scp with names of your own)")
            where[name] = spec
            items.append((name, spec))
    return items, errors


def make_items(inputs: Sequence, names: Sequence[str] | None = None, sample_rate: int | None = None,
               window: tuple[float, float] | None = None,
               segments: dict[str, list[tuple[str, float, float]]] | None = None):
    """:class:`pyxv.batch.Item` of each input: a ``wav.scp`` value (str or path),
    samples ``(x, sr)``, or an array of samples at ``sample_rate`` (float in
    [-1, 1] as soundfile reads them, or int16; channels in columns are averaged).
    ``window``: ``(window, hop)`` seconds; ``segments``: ``{name: [(seg-id, start, end)]}``."""
    from .batch import Item

    out = []
    for i, x in enumerate(inputs):
        name = names[i] if names is not None else None
        if isinstance(x, (str, os.PathLike)):
            it = Item(i, name or audio_name(str(x)), spec=str(x))
        else:
            sr = sample_rate
            if isinstance(x, tuple) and len(x) == 2:
                x, sr = x
            if sr is None:
                raise InferenceError(f"input {i}: an array of samples needs its sample rate "
                                     "(sample_rate=..., or (samples, rate) pairs)")
            it = Item(i, name or f"array{i}", samples=np.asarray(x), sample_rate=int(sr))
        it.window = window
        if segments is not None:
            it.segments = segments.get(it.name, [])
        out.append(it)
    return out


def _embed(embedder, mats: Sequence[np.ndarray], chunk_frames: int, batch_frames: int) -> np.ndarray:
    """(N, E) embeddings through stage 4's loop (:func:`pyxv.extract.extract_embeddings`:
    its batching, and a one-line ExtractionMemoryError when a GPU runs out)."""
    from .extract import extract_embeddings

    mats = list(mats)
    got = dict(extract_embeddings(embedder, mats, range(len(mats)), chunk_frames=chunk_frames,
                                  batch_frames=batch_frames, min_frames=0, block=max(1, len(mats))))
    if len(got) != len(mats):
        raise InferenceError(f"{len(mats) - len(got)} of {len(mats)} inputs had no frames for the network")
    if not mats:
        return np.zeros((0, embedder.embed_dim), dtype=np.float32)
    return np.stack([got[i] for i in range(len(mats))])


class _Embedder:
    """The network as extraction runs it: on the CPU its compiled copy (stage 4's,
    built once per network and device), elsewhere the network itself."""

    def __init__(self):
        self._net, self._device, self._embedder = None, None, None

    def __call__(self, net):
        from .device import model_device
        from .nnet.cpu_embedder import for_cpu_extraction

        device = model_device(net)
        if net is not self._net or device != self._device:   # another network, or moved
            self._net, self._device, self._embedder = net, device, for_cpu_extraction(net)
        return self._embedder


# ------------------------------------------------------------------ x-vectors
class XVectorModel:
    """A trained or imported speaker encoder (``exp/xvector_<m>/`` or its
    ``final.pt``), any registered type, and the feature front-end it declares."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        from .train.checkpoint import CheckpointError, load_model

        path = Path(path)
        model = path / "final.pt" if path.is_dir() else path
        self.exp_dir = model.parent
        self.model_path = model.resolve()
        self._embedder = _Embedder()
        self._info: tuple | None = None   # (net, encoder_info of it): its weights' hash is made once
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

    @property
    def embedder(self):
        """What embeds: the compiled CPU copy stage 4 uses, or the network on a GPU.
        Built once per network and device (again after ``xv.net`` is replaced or
        moved); the loaded model is not trained further, so its weights are baked in."""
        return self._embedder(self.net)

    def encoder_info(self) -> dict:
        """What a speaker file records of this encoder (:mod:`pyxv.speaker`); the
        weights' SHA-256 is made once per network (a verify run asks up to three
        times; the loaded model is not trained further, as for :attr:`embedder`)."""
        from .speaker import weights_checksum

        if self._info is None or self._info[0] is not self.net:
            self._info = (self.net, {"model": str(self.model_path), "type": type(self.net).__name__,
                                     "dim": int(self.dim), "sha256": weights_checksum(self.net)})
        return dict(self._info[1])

    def embed_matrices(self, mats: Sequence[np.ndarray], batch_frames: int | None = None) -> np.ndarray:
        """(N, E) of network inputs, batched as stage 4 batches (``batch_frames``:
        frames per padded batch on a GPU; the model config's by default)."""
        ec = self.cfg["extract"]
        return _embed(self.embedder, mats, ec["chunk_frames"], batch_frames or ec["batch_frames"])

    def features(self, spec: str, name: str | None = None) -> np.ndarray:
        try:
            return self.front(spec, name)
        except FrontEndError as e:
            raise InferenceError(str(e)) from e

    def embed_file(self, spec: str, name: str | None = None) -> np.ndarray:
        """(E,) x-vector of one audio file."""
        return self.embed_matrices([self.features(spec, name)])[0]

    def iter_embed(self, inputs: Sequence, names: Sequence[str] | None = None, *, sample_rate: int | None = None,
                   nj: int = 1, batch: int = 256, batch_frames: int | None = None, timing=None):
        """:class:`pyxv.batch.Result` per input, in input order (``r.outputs[0]``:
        the x-vector; ``r.error``: why a bad file was left out). Inputs as
        :func:`make_items` takes them; features in ``nj`` processes, the network
        on blocks of ``batch`` files; ``timing``: a :class:`pyxv.batch.Timing` to fill."""
        from .batch import FeatureMaker, run

        items = make_items(inputs, names, sample_rate)
        return run(items, FeatureMaker(self.front), lambda m: self.embed_matrices(m, batch_frames),
                   nj=nj, batch=batch, timing=timing)

    def embed_batch(self, inputs: Sequence, names: Sequence[str] | None = None, *, skip_bad: bool = False,
                    **kw) -> np.ndarray:
        """(N, E) x-vectors of many inputs (see :meth:`iter_embed` for the options).
        A bad input is an InferenceError naming every bad one, one per line;
        with ``skip_bad`` its row is NaN instead."""
        rows, bad = [], []
        for r in self.iter_embed(inputs, names, **kw):
            if r.ok:
                rows.append(r.outputs[0])
            else:
                bad.append(r.error)
                rows.append(np.full(self.dim, np.nan, dtype=np.float32))
        if bad and not skip_bad:
            raise InferenceError("\n".join(bad))
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)

    def embed_table(self, items: Iterable[tuple[str, str]], stats: dict | None = None, **kw
                    ) -> Iterator[tuple[str, np.ndarray]]:
        """Yield (name, x-vector) for ``(name, wav.scp value)`` items, batched
        (``kw``: :meth:`iter_embed`'s options); an unreadable one is logged, counted
        in ``stats['failed']``, its line appended to ``stats['errors']``, and skipped."""
        stats = {} if stats is None else stats
        stats.setdefault("failed", 0)
        stats.setdefault("errors", [])
        items = list(items)
        for r in self.iter_embed([s for _, s in items], [n for n, _ in items], **kw):
            if r.ok:
                yield r.name, r.outputs[0]
            else:
                log.info("%s: skipped: %s", r.name, r.error)   # the caller names it (stats['errors'])
                stats["failed"] += 1
                stats["errors"].append(r.error)


# -------------------------------------------------------------------- emotion
class EmotionModel:
    """Common interface: ``classes``, ``posteriors(specs)`` (one row per file) and
    ``iter_posteriors(inputs, window=..., segments=...)`` (rows per segment).
    A system says how it makes network inputs (``input_of``, and ``maker`` for
    worker processes) and what its network gives for them (``outputs``)."""

    classes: list[str]
    kind: str
    maker: "FeatureMaker"
    model_dir: Path   # the fold or final dir the model was read from

    def input_of(self, spec: str, name: str) -> np.ndarray:
        """Network input of one file, in this process."""
        raise NotImplementedError

    def outputs(self, mats: Sequence[np.ndarray]) -> np.ndarray:
        """(N, C) posteriors of network inputs, in batches."""
        raise NotImplementedError

    def posteriors(self, specs: Sequence[str], names: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
        """(names, (N, C)) of whole files; a file that cannot be used is an InferenceError naming it."""
        names = list(names) if names is not None else [audio_name(s) for s in specs]
        try:
            mats = [self.input_of(s, n) for s, n in zip(specs, names)]
        except FrontEndError as e:
            raise InferenceError(str(e)) from e
        return names, np.asarray(self.outputs(mats), dtype=np.float64)

    def iter_posteriors(self, inputs: Sequence, names: Sequence[str] | None = None, *,
                        window: float | None = None, hop: float | None = None,
                        segments: dict[str, list[tuple[str, float, float]]] | None = None,
                        nj: int = 1, batch: int = 256, timing=None, sample_rate: int | None = None):
        """:class:`pyxv.batch.Result` per input in input order, ``outputs`` (K, C)
        posteriors of its segments ``bounds``: uniform windows (``window``/``hop``
        seconds, :func:`pyxv.segments.uniform_windows`), the listed ``segments``
        (``{name: [(seg-id, start, end)]}``, a Kaldi segments file's rows), or the
        whole file. All segments of a block of ``batch`` files go through the
        network together; features in ``nj`` processes."""
        from .batch import run
        from .segments import check_window

        win = None
        if window is not None:
            if segments is not None:
                raise InferenceError("give windows or segments, not both")
            win = (float(window), check_window(float(window), hop))
        items = make_items(inputs, names, sample_rate, win, segments)
        return run(items, self.maker, lambda m: np.asarray(self.outputs(m), dtype=np.float64), nj=nj, batch=batch,
                   timing=timing)


class FrozenLREmotion(EmotionModel):
    """x-vectors of the pointed-to model + the fold's logistic regression
    (``model.json`` + ``model.npz`` of :func:`pyxv.emotion.systems.run_frozen_lr`;
    an older pyxv's pickled ``model.pkl`` only with trust, :mod:`pyxv.params`)."""

    kind = "frozen_lr"

    def __init__(self, fold_dir: Path, device: str = "cpu"):
        from .batch import FeatureMaker
        from .emotion.lr import load_lr_model, lr_model_file
        from .params import ParamsError

        self.model_dir = Path(fold_dir)
        try:
            self.lr, meta = load_lr_model(fold_dir)
        except ParamsError as e:
            raise InferenceError(str(e)) from None
        if meta.get("type", "frozen_lr") != "frozen_lr" or "xvector_model" not in meta:
            raise InferenceError(f"{lr_model_file(fold_dir)}: not a frozen x-vector + LR model")
        self.classes = [str(c) for c in self.lr.classes]  # predict_proba's column order
        self.xvector = XVectorModel(find_recipe_path(meta["xvector_model"], fold_dir), device)
        self.source = str(self.xvector.exp_dir)
        self.maker = FeatureMaker(self.xvector.front)

    def input_of(self, spec, name):
        return self.xvector.features(spec, name)

    def outputs(self, mats):
        return np.asarray(self.lr.predict_proba(self.xvector.embed_matrices(mats)), dtype=np.float64)


class NnetEmotion(EmotionModel):
    """A random-init or fine-tuned network (the fold's ``final.pt`` with an
    emotion output layer; ``extra`` says its features)."""

    def __init__(self, fold_dir: Path, device: str = "cpu"):
        from .batch import FeatureMaker
        from .train.checkpoint import CheckpointError, load_model

        try:
            self.net, ck = load_model(fold_dir / "final.pt", device)
        except CheckpointError as e:
            raise InferenceError(str(e)) from e
        self.ck = ck
        self._embedder = _Embedder()
        extra = ck.get("extra") or {}
        self.classes = [str(c) for c in (extra.get("classes") or ck["labels"])]
        self.kind = str(extra.get("emotion_system", "nnet"))
        self.features = extra.get("features", "mfcc")
        cfg = ck["config"]
        self.cmn_window = int(extra.get("cmn_window", cfg["data"]["cmn_window"]))
        self.apply_vad = bool(extra.get("apply_vad", cfg["data"]["apply_vad"]))
        self.source = str(fold_dir)
        self.model_dir = Path(fold_dir)
        if self.features == "gemaps":
            mean, std = extra.get("gemaps_mean"), extra.get("gemaps_std")
            self.gemaps_norm = (np.asarray(mean, np.float32), np.asarray(std, np.float32)) if mean else None
            self.front = None
            self.maker = FeatureMaker(gemaps=True, gemaps_norm=self.gemaps_norm)
            return
        if self.features == "mfcc":
            # The fold's own confs, else those of the x-vector model it came from.
            extra = dict(extra)
            pre = self._pretrained_dir(extra, fold_dir)
            for name in ("mfcc.conf", "vad.conf"):
                for d in (fold_dir, pre):
                    if not extra.get(name) and d is not None and (d / name).is_file():
                        extra[name] = (d / name).read_text()
            # MFCC on the CPU whatever the network's device (as XVectorModel's): features are
            # computed per file, in worker processes with --nj, which should not each open a GPU.
            self.front = MfccVadFrontEnd(cmn_window=self.cmn_window, apply_vad=self.apply_vad,
                                         min_frames=cfg["extract"]["min_frames"], device="cpu",
                                         mfcc_text=extra.get("mfcc.conf"), vad_text=extra.get("vad.conf"),
                                         where=str(fold_dir))
        else:  # the front-end of the fine-tuned encoder's own type (e.g. GE2E's mel spectrogram)
            self.front = type(self.net).frontend(cfg, extra, fold_dir)
        self.maker = FeatureMaker(self.front)

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
        from .io import read_audio

        x, sr = read_audio(spec, name=name)
        return self.maker.lld(x, sr, name)

    def input_of(self, spec, name):
        return self._gemaps(spec, name) if self.features == "gemaps" else self.front(spec, name)

    def outputs(self, mats):
        import torch

        # stage 5's chunking (pyxv.extract.utterance_posteriors' defaults), on the network's device
        E = _embed(self._embedder(self.net), mats, 6000, 20000)
        with torch.no_grad():
            logits = self.net.logits_from_embedding(torch.from_numpy(E).to(self.device)).float()
            return torch.softmax(logits, dim=-1).cpu().numpy().astype(np.float64)


def _is_model_dir(p: Path) -> bool:
    return (p / "model.pkl").is_file() or (p / "final.pt").is_file() or (p / "model.json").is_file()


def emotion_model_dir(path: str | os.PathLike) -> Path:
    """The dir of the model a path names: a fold or ``final/`` dir as it is; a system
    dir (``<system>_<data>/``) gives its ``final/`` (trained on all labelled data),
    else, for systems trained before final models existed, its first fold with a
    warning. Anything else is an InferenceError saying what was expected."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    if not p.is_dir():
        raise InferenceError(f"{path}: no such model dir")
    if _is_model_dir(p):
        return p
    if (p / "final").is_dir():
        # final.json is written last: without it the final model is unfinished
        if not ((p / "final" / "final.json").is_file() and _is_model_dir(p / "final")):
            raise InferenceError(f"{path}: final/ is unfinished (no final.json): rerun stage 5 to finish it, "
                                 "or name a fold dir")
        log.info("%s: using final/ (trained on all labelled data)", path)
        return p / "final"
    folds = sorted(q for q in p.iterdir() if q.is_dir() and _is_model_dir(q))
    if not folds:
        raise InferenceError(f"{path}: neither a model dir (a fold or final/, with model.json or final.pt) "
                             "nor a system dir holding one")
    log.warning("%s has no final/ model (trained before final models; rerun stage 5 to make it): using fold %s, "
                "trained on part of the data", path, folds[0].name)
    return folds[0]


def load_emotion_model(path: str | os.PathLike, device: str = "cpu") -> EmotionModel:
    """A trained emotion system: a fold or final dir (``model.json`` -> frozen LR,
    ``final.pt`` -> network) or a system dir (its ``final/``; see :func:`emotion_model_dir`)."""
    p = emotion_model_dir(path)
    if not (p / "final.pt").is_file():
        return FrozenLREmotion(p, device)
    return NnetEmotion(p, device)


# ---------------------------------------------------------------- verification
class Verifier:
    """x-vector model + SV back-end (``pyxv.backend.pipeline.Backend``) with the
    EER threshold stored in the back-end."""

    def __init__(self, xvector: XVectorModel, backend, source: str):
        self.xvector, self.backend, self.source = xvector, backend, source

    @classmethod
    def load(cls, xvector_exp: str | os.PathLike, backend: str | None = None, device: str = "cpu",
             xvector: XVectorModel | None = None) -> "Verifier":
        """``backend``: a saved back-end file, or ``cosine``/``plda`` (the newest
        ``exp/sv/*/xvector_<m>/<name>/backend.json`` of this model), or None
        (cosine, else plda, else a cosine back-end fitted now on the model's
        pre-training x-vectors, ``xvectors_pretrain/train``). ``xvector``: the
        model of ``xvector_exp`` when already loaded."""
        from .backend.pipeline import Backend
        from .params import ParamsError

        def load(path):  # old pickled back-ends only with trust (pyxv.params)
            try:
                return cls(xv, Backend.load(path), str(path))
            except ParamsError as e:
                raise InferenceError(str(e)) from None
            except Exception as e:
                raise InferenceError(f"{path}: cannot load back-end ({e})") from e

        xv = xvector if xvector is not None else XVectorModel(xvector_exp, device)
        if backend and Path(backend).is_file():
            return load(backend)
        names = [backend] if backend else ["cosine", "plda"]
        for name in names:
            if name not in ("cosine", "plda"):
                raise InferenceError(f"--backend {name}: neither a back-end file nor cosine|plda")
            found = cls._find_saved(xv.exp_dir, name)
            if found is not None:
                return load(found)
        if backend in (None, "cosine"):
            be, src = cls._fit_cosine(xv.exp_dir)
            return cls(xv, be, src)
        raise InferenceError(f"no saved {backend} back-end for {xv.exp_dir} (exp/sv/*/{xv.exp_dir.name}/"
                             f"{backend}/backend.json); run stage 6 or pass a back-end file")

    @staticmethod
    def _find_saved(exp_dir: Path, name: str) -> Path | None:
        """The newest saved back-end of this name: ``backend.json``, else an older pyxv's ``backend.pkl``."""
        root = exp_dir.resolve().parent
        for fname in ("backend.json", "backend.pkl"):
            cands = sorted(root.glob(f"sv/*/{exp_dir.resolve().name}/{name}/{fname}"),
                           key=lambda p: p.stat().st_mtime, reverse=True)
            if cands:
                return cands[0]
        return None

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

    def _decide(self, s: float, threshold: float | None) -> tuple[float, bool | None]:
        th = float(self.backend.threshold) if threshold is None else float(threshold)
        return th, (bool(s >= th) if np.isfinite(th) else None)

    def verify(self, spec_a: str, spec_b: str, threshold: float | None = None) -> dict:
        """{"score", "threshold", "same"}: same speaker iff score >= threshold."""
        ea, eb = self.xvector.embed_batch([spec_a, spec_b])
        s = self.score_embeddings(ea, eb)
        th, same = self._decide(s, threshold)
        return {"a": spec_a, "b": spec_b, "score": s, "threshold": th, "same": same,
                "backend": getattr(self.backend, "kind", "?"), "backend_source": self.source,
                "model": str(self.xvector.exp_dir)}

    def enroll(self, inputs: Sequence, names: Sequence[str] | None = None, *, speaker=None, nj: int = 1,
               batch: int = 256) -> "SpeakerModel":
        """A :class:`pyxv.speaker.SpeakerModel` of the enrolment files (or ``speaker``
        with them added). Any file that cannot be used is an InferenceError naming
        each such file on a line of its own: a speaker silently enrolled from fewer
        files than asked would be a different model."""
        from .speaker import SpeakerModel

        info = self.xvector.encoder_info()
        if speaker is not None:
            speaker.check(info)
        E = self.xvector.embed_batch(inputs, names, nj=nj, batch=batch)
        files = [str(x) if isinstance(x, (str, os.PathLike)) else f"array{i}" for i, x in enumerate(inputs)]
        if speaker is not None:
            return speaker.add(E, files)
        return SpeakerModel.from_embeddings(E, info, files)

    def score_speaker(self, speaker, inputs: Sequence, names: Sequence[str] | None = None, *,
                      threshold: float | None = None, nj: int = 1, batch: int = 256,
                      where: str = "speaker model") -> list[dict]:
        """Score each test input against an enrolled speaker through the back-end:
        ``[{"test", "name", "score", "threshold", "same"}]`` in input order, or
        ``{"test", "name", "error"}`` for a test file that cannot be used. A speaker
        of another encoder is a SpeakerFileError (``where`` names it)."""
        speaker.check(self.xvector.encoder_info(), where)
        v = speaker.vector()
        out = []
        for r in self.xvector.iter_embed(inputs, names, nj=nj, batch=batch):
            if not r.ok:
                out.append({"test": r.label, "name": r.name, "error": r.error})
                continue
            s = self.score_embeddings(v, r.outputs[0].astype(np.float64))
            th, same = self._decide(s, threshold)
            out.append({"test": r.label, "name": r.name, "score": s, "threshold": th, "same": same})
        return out


def write_ark(pairs: Iterable[tuple[str, np.ndarray]], out_ark: str | os.PathLike) -> int:
    """x-vectors to ``out_ark`` and the ``.scp`` beside it (atomic)."""
    from .extract import write_embeddings

    Path(out_ark).parent.mkdir(parents=True, exist_ok=True)
    return write_embeddings(pairs, out_ark)
