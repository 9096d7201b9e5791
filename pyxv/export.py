"""Exported models: a mono waveform in, an embedding or emotion posteriors out,
with the whole front-end inside one graph (``pyxv export``).

    export_model("exp/xvector_clean", "xvector.onnx", "onnx")       # + xvector.onnx.card.json
    export_model("exp/emotion/demo/frozen_lr_clean_clean", "emo.pt2", "torch")

Formats: ``onnx`` (torch's dynamo exporter; runs in onnxruntime without pyxv
or torch) and ``torch`` (``torch.export``, loaded with ``torch.export.load``).
The input is one 1-D float32 tensor of samples in [-1, 1] (as soundfile reads
them) at the card's ``sample_rate``, of any length; resampling stays outside.
The graph, for the paper's x-vector (:class:`MfccVadGraph`): Kaldi MFCC
without dither (:meth:`pyxv.features.mfcc.Mfcc._compute_frames`, Kaldi's
framing by index), energy VAD and sliding CMN (the torch twins in
:mod:`pyxv.features.vad` and :mod:`pyxv.features.cmvn`), voiced frames (all
frames when fewer than ``extract.min_frames`` are voiced), the network. For
GE2E (:class:`Ge2eGraph`): volume normalisation, silence trimming and the
power mel spectrogram (torch twins in :mod:`pyxv.features.ge2e_mel`), the
partial windows and their normalised mean.

Long inputs are pooled as ``pyxv embed`` pools them: a ResNet input of more
than ``chunk_frames`` frames is cut into nearly equal chunks whose x-vectors
are averaged (in the graph, with a data-dependent number of chunks); GE2E
averages its 1.6 s partial windows.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .io import file_digest

log = logging.getLogger("pyxv.export")

FORMATS = {"onnx": "ONNX (onnxruntime)", "torch": "torch.export (torch.export.load)"}
SUFFIX = {"onnx": ".onnx", "torch": ".pt2"}
INSTALL = "pip install 'pyxv[export]'   (or: pip install onnx onnxscript onnxruntime)"
NNET_CHUNK_FRAMES = 6000   # what pyxv emotion's networks chunk at (NnetEmotion.outputs)


class ExportError(RuntimeError):
    """A model that cannot be exported, a format or an output that cannot be
    used: the message says which and why, in one line."""


# ------------------------------------------------------------------ front-ends
def kaldi_frames(x: torch.Tensor, opts) -> torch.Tensor:
    """:meth:`pyxv.features.mfcc.Mfcc._frames` by index arithmetic (``(N,)`` ->
    ``(F, window)``), which traces with a dynamic number of samples: Kaldi's
    frame count and, with ``snip_edges=false``, its mirrored edges."""
    L, S = opts.window_size, opts.window_shift
    n = x.shape[0]
    j = torch.arange(L, device=x.device)[None, :]
    if opts.snip_edges:
        F = (n - L) // S + 1
        return x[torch.arange(F, device=x.device)[:, None] * S + j]
    F = (n + S // 2) // S
    idx = (S // 2 - L // 2) + torch.arange(F, device=x.device)[:, None] * S + j
    idx = torch.where(idx < 0, -idx - 1, idx)                 # Kaldi mirrors: -1 -> 0, n -> n-1
    idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
    return x[idx]


class MfccVadGraph(nn.Module):
    """Waveform ``(N,)`` in [-1, 1] -> network input ``(T', D)``: what
    :class:`pyxv.features.frontend.MfccVadFrontEnd` computes, without dither."""

    def __init__(self, front):
        super().__init__()
        self.mfcc = front.mfcc                 # builds the MFCC and, with VAD, its options
        self.vad_opts = front._vad_opts if front.apply_vad else None
        self.cmn_window, self.min_frames = front.cmn_window, front.min_frames

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        from .features.cmvn import apply_sliding_cmn_torch
        from .features.vad import compute_vad_torch

        feats = self.mfcc._compute_frames(kaldi_frames(wav * 32768.0, self.mfcc.opts))
        x = apply_sliding_cmn_torch(feats, self.cmn_window) if self.cmn_window > 0 else feats
        if self.vad_opts is None:
            return x
        keep = compute_vad_torch(feats, self.vad_opts) > 0.5
        keep = keep | (keep.sum() < self.min_frames)            # too few voiced frames: all of them
        return x[keep]

    def card(self) -> dict:
        o = self.mfcc.opts
        mfcc = {k: getattr(o, k) for k in o.__dataclass_fields__}
        mfcc["dither"] = 0.0
        return {"kind": "mfcc_vad", "mfcc": mfcc, "vad": dict(vars(self.vad_opts)) if self.vad_opts else None,
                "sliding_cmn_window": self.cmn_window, "voiced_frames_only": self.vad_opts is not None,
                "min_voiced_frames": self.min_frames, "input_scale": "samples x 32768 (Kaldi's int16 scale)"}


class Ge2eGraph(nn.Module):
    """Waveform ``(N,)`` in [-1, 1] at 16 kHz -> GE2E's power mel spectrogram
    ``(T, 40)``: what :class:`pyxv.features.frontend.Ge2eFrontEnd` computes after resampling."""

    def __init__(self, front):
        super().__init__()
        self.opts = front.opts
        self.mel = front.mel

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        from .features.ge2e_mel import normalize_volume_torch, trim_long_silences_torch

        wav = normalize_volume_torch(wav, self.opts.target_dbfs)
        if self.opts.trim_silence:
            wav = trim_long_silences_torch(wav, self.opts)
        return self.mel.power_mel(wav)

    def card(self) -> dict:
        return {"kind": "ge2e_mel", **self.opts.to_dict()}


# ------------------------------------------------------------------ embeddings
class XVectorEmbedding(nn.Module):
    """Waveform -> x-vector ``(E,)`` of an :class:`pyxv.nnet.xvector.XVectorNet`,
    pooled as ``pyxv embed`` pools (:func:`pyxv.nnet.utterance.chunk_bounds`): the
    ``T`` input frames cut into ``n = ceil(T / chunk_frames)`` nearly equal chunks
    (edges ``round(k T / n)``), each embedded alone, their x-vectors averaged.

    The chunks go through the network as one zero-padded batch with the masks
    of :func:`pyxv.nnet.utterance.frame_masks` (padding kept out of every conv
    and of the pooling), their widths worked out with the convs' own formula so
    the graph's shapes agree for any length. ``n`` and the width are read as
    values (``.item()``) with their bounds stated, which is what lets the
    exporters follow a data-dependent number of voiced frames into the convs."""

    def __init__(self, front, net, chunk_frames: int):
        super().__init__()
        self.front, self.net, self.chunk_frames = MfccVadGraph(front), net, int(chunk_frames)
        self.levels = len(net.trunk.layers)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = self.front(wav)
        C = self.chunk_frames
        T = torch.ones(x.shape[0], dtype=torch.int64).sum()
        nt = (T + C - 1) // C
        n, width = nt.item(), ((T + nt - 1) // nt).item()
        torch._check(n >= 1)
        torch._check(width >= 1)
        torch._check(width <= C)
        edges = torch.round(torch.arange(n + 1, dtype=torch.float64) * (T.double() / nt.double())).long()
        lengths = edges[1:] - edges[:-1]
        j = torch.arange(width)
        rows = x[(edges[:-1, None] + j[None, :]).clamp(max=x.shape[0] - 1)]
        rows = rows * (j[None, :] < lengths[:, None]).to(rows.dtype)[..., None]        # (n, width, D)
        masks, w, m = [], width, lengths
        for g in range(self.levels):
            if g:
                w, m = (w - 1) // 2 + 1, (m + 1) // 2        # a stride-2 conv of kernel 3 (or 1), padding 1 (or 0)
            masks.append((torch.arange(w)[None, :] < m[:, None]).to(rows.dtype)[:, None, None, :])
        frames = self.net.frame_features(rows, masks)
        e = self.net.embed_frames(frames, masks[-1].reshape(frames.shape[0], frames.shape[1]))
        return e.double().mean(0).float()

    def card(self) -> dict:
        return {"front_end": self.front.card(),
                "pooling": f"as pyxv embed: ceil(T / {self.chunk_frames}) nearly equal chunks of the T voiced "
                           "frames, each embedded alone, their x-vectors averaged",
                "chunk_frames": self.chunk_frames}


class Ge2eEmbedding(nn.Module):
    """Waveform -> GE2E embedding ``(E,)``: the L2-normalised sum of the partial
    windows' embeddings (:meth:`pyxv.nnet.ge2e.GE2EEncoder.partial_windows`).

    Windows start every ``step`` frames; the mel spectrogram is zero-padded so
    that ``T // step + 2`` windows always fit, and a 0/1 weight keeps exactly
    the windows ``partial_windows`` lists (the last one only if it covers
    ``min_coverage`` of a window)."""

    def __init__(self, front, net):
        super().__init__()
        self.front, self.net = Ge2eGraph(front), net
        self.L = net.partial_frames
        self.step = max(1, round(1000.0 / net.partial_rate / net.hop_ms))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        mel = self.front(wav)
        T = mel.shape[0]
        L, step = self.L, self.step
        K = T // step + 2
        padded = torch.cat([mel, mel.new_zeros(K * step + L - T, mel.shape[1])])
        starts = torch.arange(K, dtype=torch.int64)
        windows = padded[starts[:, None] * step + torch.arange(L)[None, :]]          # (K, L, D)
        n = torch.ones(T, dtype=torch.int64).sum()
        count = (torch.clamp(n - L + step + 1, min=1) + step - 1) // step          # len(range(0, steps, step))
        last = (count - 1) * step
        short = ((n - 1 - last).double() / L < self.net.min_coverage) & (count > 1)
        count = count - short.long()
        w = (starts < count).double()
        e = self.net.embed(windows).double()
        s = (e * w[:, None]).sum(0)
        return (s / s.norm().clamp_min(1e-12)).float()

    def card(self) -> dict:
        return {"front_end": self.front.card(),
                "pooling": f"{self.L}-frame partial windows every {self.step} frames, the L2-normalised mean "
                           "of their embeddings (as pyxv embed)"}


def embedding_module(net, front, chunk_frames: int, where: str) -> nn.Module:
    from .features.frontend import Ge2eFrontEnd, MfccVadFrontEnd
    from .nnet.ge2e import GE2EEncoder
    from .nnet.xvector import XVectorNet

    if isinstance(net, XVectorNet) and isinstance(front, MfccVadFrontEnd):
        return XVectorEmbedding(front, net, chunk_frames)
    if isinstance(net, GE2EEncoder) and isinstance(front, Ge2eFrontEnd):
        return Ge2eEmbedding(front, net)
    raise ExportError(f"{where}: a {type(net).__name__} with the {getattr(front, 'kind', '?')} front-end "
                      "cannot be exported (known: the ResNet x-vector on MFCC + VAD, GE2E on its mel spectrogram)")


# ------------------------------------------------------------------ emotion
def lr_parameters(lr, classes: list[str], where: str) -> dict:
    """The fitted emotion LR as arrays: pre-processing steps ``[("affine", mean, W)
    | ("length_norm", scale)]``, then ``logits = y @ coef.T + intercept`` over the
    trained classes and ``(K, C)`` 0/1 ``columns`` placing them among ``classes``
    (a class absent from training gets 0). Read from the in-memory
    :class:`pyxv.emotion.lr.EmotionLR` (its scikit-learn pipeline)."""
    try:
        pre = lr.pipe_.named_steps["pre"]
        sk = lr.pipe_.named_steps["lr"]
        coef = np.asarray(sk.coef_, dtype=np.float64)
        intercept = np.asarray(sk.intercept_, dtype=np.float64)
        trained = [str(c) for c in sk.classes_]
    except (AttributeError, KeyError) as e:
        raise ExportError(f"{where}: the logistic regression has no fitted parameters this export reads ({e})") \
            from None
    steps = []
    if "steps_" in vars(pre):
        from .backend.preprocess import LengthNorm

        for st in pre.steps_:
            if isinstance(st, LengthNorm):
                steps.append(("length_norm", None if not st.unit else 1.0))
            elif hasattr(st, "mean_") and hasattr(st, "W_"):                      # Whiten, LDA
                steps.append(("affine", np.asarray(st.mean_, np.float64), np.asarray(st.W_, np.float64)))
            elif hasattr(st, "mean_"):                                            # Center
                steps.append(("affine", np.asarray(st.mean_, np.float64), None))
            else:
                raise ExportError(f"{where}: pre-processing step {type(st).__name__} has no export")
    else:   # the chain's older form (mean_, proj_)
        steps.append(("affine", np.asarray(pre.mean_, np.float64),
                      None if pre.proj_ is None else np.asarray(pre.proj_, np.float64)))
        if pre.length_norm:
            steps.append(("length_norm", None))
    if coef.shape[0] == 1:          # two classes: scikit-learn's sigmoid is the softmax of (0, z)
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    columns = np.zeros((len(trained), len(classes)))
    for k, c in enumerate(trained):
        columns[k, classes.index(c)] = 1.0
    return {"steps": steps, "coef": coef, "intercept": intercept, "columns": columns}


class LinearPosteriors(nn.Module):
    """Embedding ``(E,)`` -> posteriors ``(C,)`` of :func:`lr_parameters`, in float64."""

    def __init__(self, params: dict):
        super().__init__()
        self.kinds = []
        for i, st in enumerate(params["steps"]):
            self.kinds.append((st[0], i))
            if st[0] == "affine":
                self.register_buffer(f"mean{i}", torch.from_numpy(st[1]))
                self.register_buffer(f"W{i}", None if st[2] is None else torch.from_numpy(st[2]))
            else:
                self.register_buffer(f"unit{i}", torch.tensor(st[1] is not None))
        self.register_buffer("coef", torch.from_numpy(params["coef"]))
        self.register_buffer("intercept", torch.from_numpy(params["intercept"]))
        self.register_buffer("columns", torch.from_numpy(params["columns"]))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        y = e.double()
        for kind, i in self.kinds:
            if kind == "affine":
                y = y - getattr(self, f"mean{i}")
                W = getattr(self, f"W{i}")
                if W is not None:
                    y = y @ W
            else:
                norm = y.norm()
                scale = torch.where(getattr(self, f"unit{i}"), torch.ones_like(norm),
                                    torch.full_like(norm, float(y.shape[0])).sqrt())
                y = y * (scale / torch.where(norm > 0, norm, torch.ones_like(norm)))
        p = torch.softmax(y @ self.coef.T + self.intercept, dim=0)
        return (p @ self.columns).float()


class EmotionPosteriors(nn.Module):
    """Waveform -> embedding graph -> posteriors ``(C,)``: the LR's
    (:class:`LinearPosteriors`) or the network's output layer (softmax of its
    plain logits, as ``pyxv emotion``)."""

    def __init__(self, embed: nn.Module, head: nn.Module | None = None, net=None):
        super().__init__()
        self.embed, self.head, self.net = embed, head, net

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        e = self.embed(wav)
        if self.head is not None:
            return self.head(e)
        return torch.softmax(self.net.logits_from_embedding(e[None]).float(), dim=-1)[0]

    def card(self) -> dict:
        c = self.embed.card()
        c["classifier"] = ("the logistic regression (pre-processing, softmax of its logits)" if self.head is not None
                           else "the network's output layer (softmax of its plain logits)")
        return c


# ------------------------------------------------------------------ model dirs
def _checkpoint_extra(path: Path) -> dict | None:
    """The ``extra`` of a model file, or None when it cannot be read."""
    from .train import checkpoint as ckpt

    try:
        return dict(ckpt.load(path).get("extra") or {})
    except Exception:   # noqa: BLE001 - unreadable: the loaders below name the problem
        return None


def is_emotion_network(final_pt: Path) -> bool:
    extra = _checkpoint_extra(final_pt) or {}
    return "emotion_system" in extra or "classes" in extra


def _git_revision() -> str | None:
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "pyxv"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+modified" if dirty else "")) or None


def _plain(x):
    """JSON-safe copy (paths, numpy scalars and tuples as plain values)."""
    return json.loads(json.dumps(x, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _training_record(ck: dict, model_path: Path) -> dict:
    extra = {k: v for k, v in (ck.get("extra") or {}).items()
             if k not in ("mfcc.conf", "vad.conf", "gemaps_mean", "gemaps_std")}
    out = {"model_file": str(model_path), "labels": len(ck.get("labels") or []), "epoch": ck.get("epoch"),
           "extra": extra}
    fp = ck.get("fingerprint")
    if isinstance(fp, dict):
        out["data"] = fp.get("data")
        out["features"] = fp.get("features")
    hist = ck.get("history")
    if isinstance(hist, list) and hist:
        out["last_epoch"] = hist[-1]
    parts = model_path.resolve().parts
    if "emotion" in parts and "exp" in parts:   # exp/emotion/<corpus>/<system>/<fold>
        i = parts.index("emotion")
        out["corpus"] = parts[i + 1] if i + 1 < len(parts) else None
    return out


def _licence(extra: dict) -> str:
    if extra.get("license"):
        src = extra.get("source") or extra.get("imported_from")
        return f"{extra['license']} (imported weights: {src})" if src else str(extra["license"])
    return "not recorded: weights trained by this recipe (the terms of their training data apply)"


def resolve(model_dir: str | os.PathLike, device: str = "cpu"):
    """What ``model_dir`` holds: ``("xvector", XVectorModel)`` for an x-vector
    or GE2E model dir (or its ``final.pt``), ``("emotion", EmotionModel)`` for
    what :func:`pyxv.inference.load_emotion_model` takes (a fold or a system
    dir), else an ExportError."""
    from .inference import InferenceError, XVectorModel, load_emotion_model

    p = Path(model_dir)
    d = p.parent if p.is_file() else p
    if not d.is_dir():
        raise ExportError(f"{model_dir}: no such model dir")
    final = d / "final.pt"
    try:
        if final.is_file() and not is_emotion_network(final):
            return "xvector", XVectorModel(d, device)
        return "emotion", load_emotion_model(d, device)
    except InferenceError as e:
        msg = str(e)
        if "neither" in msg:   # load_emotion_model's line for a dir of no model at all
            msg = (f"{model_dir}: neither an x-vector model dir (final.pt, as pyxv embed takes) nor an emotion "
                   "system, final or fold dir (as pyxv emotion takes)")
        raise ExportError(msg) from None


def build(model_dir: str | os.PathLike) -> tuple[nn.Module, dict]:
    """The exportable module of a model dir and its card (without the file's own fields)."""
    from .inference import FrozenLREmotion, NnetEmotion

    kind, m = resolve(model_dir)
    if kind == "xvector":
        chunk = int(m.cfg["extract"]["chunk_frames"])
        mod = embedding_module(m.net, m.front, chunk, str(model_dir))
        ck = m.ck
        card = {"task": "speaker embedding", "output": {"name": "embedding", "dim": int(m.dim)},
                "sample_rate": int(m.front.sample_rate), "config": ck.get("config"),
                "source": {"model_dir": str(m.exp_dir), "weights": str(m.model_path),
                           "weights_sha256": file_digest(m.model_path)},
                "trained_on": _training_record(ck, m.model_path), "licence": _licence(ck.get("extra") or {})}
        return mod, {**card, **mod.card()}
    classes = [str(c) for c in m.classes]
    if isinstance(m, FrozenLREmotion):
        xv = m.xvector
        embed = embedding_module(xv.net, xv.front, int(xv.cfg["extract"]["chunk_frames"]), str(model_dir))
        params = lr_parameters(m.lr, classes, str(model_dir))
        mod = EmotionPosteriors(embed, LinearPosteriors(params))
        _check_lr(mod.head, m.lr, xv.dim, str(model_dir))
        ck, weights = xv.ck, xv.model_path
        source = {"system": "frozen x-vectors + logistic regression", "model_dir": str(model_dir),
                  "encoder_dir": str(xv.exp_dir), "weights": str(weights), "weights_sha256": file_digest(weights),
                  "classifier_sha256": _params_sha256(params),
                  "lr": {"C": getattr(m.lr, "C", None), "pre": getattr(m.lr, "pre", None)}}
        sr = int(xv.front.sample_rate)
        trained = {"classifier": {"model_dir": str(model_dir), "classes": classes},
                   "encoder": _training_record(ck, weights)}
        cfg = ck.get("config")
    elif isinstance(m, NnetEmotion):
        if m.features == "gemaps":
            raise ExportError(f"{model_dir}: a GeMAPS system ({m.kind}) needs openSMILE, which no exported graph "
                              "can hold; export an MFCC or GE2E system instead")
        net_path = Path(m.source) / "final.pt"
        embed = embedding_module(m.net, m.front, NNET_CHUNK_FRAMES, str(model_dir))
        mod = EmotionPosteriors(embed, None, m.net)
        ck = m.ck
        source = {"system": f"emotion network ({m.kind})", "fold_dir": str(m.source), "weights": str(net_path),
                  "weights_sha256": file_digest(net_path)}
        sr = int(m.front.sample_rate)
        trained = _training_record(ck, net_path)
        cfg = ck.get("config")
    else:
        raise ExportError(f"{model_dir}: a {type(m).__name__} emotion system has no export")
    extra = ck.get("extra") or {}
    used = m.model_dir
    source["model_used"] = str(used)
    if (used / "final.json").is_file():   # a system's final model: how it was trained, as stage 5 wrote it
        try:
            trained = {**trained, "final_model": json.loads((used / "final.json").read_text(encoding="utf-8"))}
        except (OSError, ValueError):
            pass
    card = {"task": "emotion posteriors", "output": {"name": "posteriors", "classes": classes},
            "sample_rate": sr, "config": cfg, "source": source, "trained_on": trained, "licence": _licence(extra)}
    return mod, {**card, **mod.card()}


def _params_sha256(params: dict) -> str:
    """SHA-256 of the LR's parameters (each array's shape and float64 bytes, in order)."""
    h = hashlib.sha256()
    arrays = [a for st in params["steps"] for a in st[1:] if isinstance(a, np.ndarray)]
    for a in arrays + [params["coef"], params["intercept"], params["columns"]]:
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(f"{a.shape};".encode() + a.tobytes())
    return h.hexdigest()


def _check_lr(head: LinearPosteriors, lr, dim: int, where: str) -> None:
    """The tensor LR against the fitted one on random embeddings: a pre-processing
    step or an attribute read wrongly fails here, not in a user's program."""
    X = np.random.default_rng(0).normal(size=(8, dim)) * 3
    want = np.asarray(lr.predict_proba(X), dtype=np.float64)
    with torch.no_grad():
        got = np.stack([head(torch.from_numpy(x)).double().numpy() for x in X])
    err = float(np.abs(got - want).max())
    if not err < 1e-5:
        raise ExportError(f"{where}: the exported logistic regression differs from the fitted one by {err:.2g}")


# ------------------------------------------------------------------ export
def check_format(fmt: str) -> None:
    """An unknown format, or a missing package for it: one line naming it and the install command."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: unknown (onnx or torch)")
    if fmt == "onnx":
        import importlib.util

        for pkg in ("onnx", "onnxscript"):
            if importlib.util.find_spec(pkg) is None:
                raise ExportError(f"--format onnx needs the package '{pkg}', which is not installed: {INSTALL}")


def check_output(out: Path) -> None:
    """Before minutes of work: the output's folder exists and takes files."""
    d = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise ExportError(f"{out}: is a directory; give the exported file's path")
    if not d.is_dir():
        raise ExportError(f"{out}: cannot write: folder {d} does not exist")
    if not os.access(d, os.W_OK | os.X_OK):
        raise ExportError(f"{out}: cannot write: folder {d} is not writable")


def example_input(sample_rate: int, seconds: float = 3.0) -> torch.Tensor:
    """A tracing input: a voiced-like tone in noise (the VAD keeps part of it)."""
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    rng = np.random.default_rng(0)
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 1.5 * t) > 0) + 0.01 * rng.normal(size=t.size)
    return torch.from_numpy(x.astype(np.float32))


def _export_program(mod: nn.Module, example: torch.Tensor):
    samples = torch.export.Dim("samples", min=2048, max=2 ** 31 - 1)
    return torch.export.export(mod, (example,), dynamic_shapes=({0: samples},), strict=False)


def _write(mod: nn.Module, fmt: str, sample_rate: int, tmp: Path) -> None:
    example = example_input(sample_rate)
    with torch.no_grad():
        if fmt == "torch":
            torch.export.save(_export_program(mod, example), str(tmp))
            return
        # From torch.export's program: exporting the module itself turns GE2E's LSTM into a
        # while_loop that fails with a data-dependent number of windows.
        prog = torch.onnx.export(_export_program(mod, example), input_names=["waveform"],
                                 output_names=[mod_output_name(mod)], dynamo=True, verbose=False)
        prog.save(str(tmp), external_data=False)


def mod_output_name(mod: nn.Module) -> str:
    return "posteriors" if isinstance(mod, EmotionPosteriors) else "embedding"


def export_model(model_dir: str | os.PathLike, out: str | os.PathLike, fmt: str) -> dict:
    """Export ``model_dir`` to ``out`` in ``fmt`` (onnx|torch) and write its card
    to ``<out>.card.json``; both appear whole or not at all. Returns the card."""
    import torch.utils._pytree  # noqa: F401 - loaded before the exporters' own imports

    check_format(fmt)
    out = Path(out)
    check_output(out)
    mod, card = build(model_dir)
    mod.eval()
    card_path = Path(str(out) + ".card.json")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}{SUFFIX[fmt]}")   # the exporters look at the suffix
    tmp_card = card_path.with_name(f".{card_path.name}.tmp{os.getpid()}")
    try:
        _write(mod, fmt, card["sample_rate"], tmp)
        card = {"format": FORMATS[fmt], "file": out.name, "sha256": file_digest(tmp),
                "input": {"name": "waveform", "shape": ["samples"], "dtype": "float32",
                          "sample_rate": card["sample_rate"], "channels": 1,
                          "scale": "[-1, 1] (as soundfile reads audio)",
                          "min_samples": 2048,
                          "resampling": f"not in the graph: resample to {card['sample_rate']} Hz first "
                                        "(pyxv uses scipy.signal.resample_poly) and average the channels"},
                **card, "output": {**card["output"], "dtype": "float32",
                                   "shape": [card["output"].get("dim") or len(card["output"]["classes"])]},
                "pyxv": {"version": _version(), "git_revision": _git_revision()},
                "torch": torch.__version__, "created": datetime.datetime.now(datetime.timezone.utc).isoformat()}
        card.pop("sample_rate")
        tmp_card.write_text(json.dumps(_plain(card), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, out)
        os.replace(tmp_card, card_path)
    except OSError as e:
        for t in (tmp, tmp_card):
            t.unlink(missing_ok=True)
        raise ExportError(f"{out}: cannot write: {e.strerror or e}") from None
    except BaseException:
        for t in (tmp, tmp_card):
            t.unlink(missing_ok=True)
        raise
    return card


def _version() -> str:
    from . import __version__

    return __version__


# ------------------------------------------------------------------ command line
EPILOG = """model-dir: an x-vector or GE2E model dir (exp/xvector_clean, as pyxv embed
takes) or an emotion system (a system dir, whose final/ model is used, or a fold
dir, as pyxv emotion takes). GeMAPS systems are refused (openSMILE cannot be in a graph).

The exported model takes one 1-D float32 waveform in [-1, 1] at the card's
input.sample_rate (resample and average channels first: the only step outside
the graph) and returns the embedding (E,) or the class posteriors (C,), in
the card's class order. Dither is off. Long input is pooled as pyxv embed
pools it (chunks of chunk_frames voiced frames at most, their x-vectors averaged).
<out>.card.json: the model card (training, config, pyxv version, SHA-256s,
licence, front-end parameters).

  python -c "import onnxruntime as ort, soundfile as sf
  s = ort.InferenceSession('xvector.onnx'); x, sr = sf.read('a.wav', dtype='float32')
  print(s.run(None, {'waveform': x})[0])"

Exit status: 0 written; 1 error (one line; nothing written)."""


def add_parser(sub, common) -> None:
    """``pyxv export``'s arguments (called by :func:`pyxv.cli.build_parser`)."""
    import argparse

    x = sub.add_parser("export", help="a model with its front-end to ONNX or torch.export, with a model card",
                       description="Export a speaker encoder or an emotion system as one graph from waveform to "
                                   "embedding or posteriors: --format onnx (onnxruntime) or torch (torch.export).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    x.add_argument("model_dir", help="x-vector model dir, or an emotion system / fold dir")
    x.add_argument("out", help="the exported file (e.g. model.onnx, model.pt2); its card goes to <out>.card.json")
    x.add_argument("--format", default="onnx", help="onnx (default) or torch")
    common(x)
    x.set_defaults(func=cmd_export)


def cmd_export(a) -> int:
    import sys
    import time

    if str(a.device) != "cpu":
        print("pyxv export: --device: export runs on the CPU (the exported graph runs anywhere)", file=sys.stderr)
        return 1
    t = time.perf_counter()
    try:
        card = export_model(a.model_dir, a.out, a.format)
    except ExportError as e:
        print(f"pyxv export: {e}", file=sys.stderr)
        return 1
    what = (f"{card['output']['dim']}-dim embedding" if "dim" in card["output"]
            else f"posteriors of {', '.join(card['output']['classes'])}")
    print(f"pyxv export: {a.out} ({card['format']}, waveform at {card['input']['sample_rate']} Hz -> {what}) "
          f"and {a.out}.card.json written in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return 0
