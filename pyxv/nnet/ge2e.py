"""GE2E speaker encoder (Wan et al., ICASSP 2018): ``model.type: ge2e_lstm``.

    power mel spectrogram (B, T, 40)          pyxv.features.ge2e_mel (16 kHz, 25/10 ms)
    -> 3-layer LSTM, 256 units                last hidden state of the top layer
    -> linear 256 -> 256, ReLU, L2 norm       the embedding of a partial utterance
    -> output layer (B, K)                    losses.MarginHead, when there is one

A whole utterance is cut into 160-frame (1.6 s) partial windows, 1.3 per
second; the last one is kept (zero-padded) if it covers at least 75 % of a
window. The utterance embedding is the L2-normalised mean of the partial
embeddings: Resemblyzer's ``embed_utterance``. The weights come from
Resemblyzer's pre-trained model by ``local/import_encoder.sh ge2e``
(:mod:`pyxv.train.import_encoder`); with a new output layer the network is
fine-tuned like the ResNet (random 1.6 s crops, ``data.chunk_min/max``).
The output layer and what is built on it come from
:class:`pyxv.nnet.encoder.SpeakerEncoder`.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..device import input_device
from ..config import ConfigError
from .encoder import SpeakerEncoder
from .registry import register
from .utterance import autocast, full_fp32, to_device


@register
class GE2EEncoder(SpeakerEncoder):
    type_name = "ge2e_lstm"
    MODEL_DEFAULTS = {
        "type": "ge2e_lstm",
        "input_dim": 40,             # mel bands
        "hidden": 256,               # LSTM units per layer
        "layers": 3,
        "embed_dim": 256,
        "partial_frames": 160,       # 1.6 s partial windows of a whole utterance
        "partial_rate": 1.3,         # partial windows per second
        "min_coverage": 0.75,        # keep a last, shorter window covering at least this much
        "loss": "amsoftmax",         # output layer for speaker adaptation (emotion fine-tuning sets its own)
        "margin": 0.2,
        "scale": 30.0,
        "anneal_base": 1000.0,
        "anneal_gamma": 0.12,
        "anneal_power": 1.0,
        "anneal_min": 5.0,
    }
    ARCH_KEYS = ("input_dim", "hidden", "layers", "embed_dim")
    FRONTEND_DEFAULTS = {
        "sample_rate": 16000, "n_mels": 40, "window_ms": 25, "hop_ms": 10, "target_dbfs": -30.0,
        "trim_silence": True, "vad_window_ms": 30, "vad_average_width": 8, "vad_max_silence": 6,
        "silence_db": 40.0, "silence_floor_dbfs": -70.0,
    }
    # The front-end normalises and trims silence itself: no CMN, no Kaldi VAD; training
    # and fine-tuning crops are partial windows.
    SECTION_DEFAULTS = {
        "data": {"cmn_window": 0, "apply_vad": False, "chunk_min": 160, "chunk_max": 160, "min_frames": 40,
                 "valid_max_frames": 1000},
        "extract": {"min_frames": 1},
    }

    def __init__(self, input_dim: int = 40, hidden: int = 256, layers: int = 3, embed_dim: int = 256,
                 num_classes: int = 0, partial_frames: int = 160, partial_rate: float = 1.3,
                 min_coverage: float = 0.75, hop_ms: int = 10, **head_kw):
        super().__init__(input_dim, embed_dim)
        self.partial_frames, self.partial_rate, self.min_coverage = partial_frames, partial_rate, min_coverage
        self.hop_ms = hop_ms
        self.lstm = nn.LSTM(input_dim, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, embed_dim)
        self._add_output_layer(num_classes, **head_kw)

    # ------------------------------------------------------------- config
    @classmethod
    def init_args(cls, cfg: dict) -> dict:
        """The model section and the front-end's hop (partial windows per second)."""
        return {**super().init_args(cfg), "hop_ms": int(cfg["frontend"]["hop_ms"])}

    @staticmethod
    def check_config(cfg: dict, where: str = "") -> None:
        m, fe = cfg["model"], cfg["frontend"]
        for k in ("input_dim", "hidden", "layers", "embed_dim", "partial_frames"):
            if m[k] < 1:
                raise ConfigError(f"{where}model.{k}: must be positive")
        if m["input_dim"] != fe["n_mels"]:
            raise ConfigError(f"{where}model.input_dim {m['input_dim']} differs from frontend.n_mels {fe['n_mels']}")
        if not 0 < m["min_coverage"] <= 1:
            raise ConfigError(f"{where}model.min_coverage: must be in (0, 1]")
        step = round(1000.0 / m["partial_rate"] / fe["hop_ms"]) if m["partial_rate"] > 0 else 0
        if not 0 < step <= m["partial_frames"]:
            raise ConfigError(f"{where}model.partial_rate {m['partial_rate']}: windows must overlap or touch "
                              f"(at least {1000.0 / (fe['hop_ms'] * m['partial_frames']):.3f} per second)")

    @staticmethod
    def frontend(cfg: dict, extra: dict | None = None, exp_dir=None):
        """Power mel spectrogram of volume-normalised, silence-trimmed 16 kHz audio."""
        from ..features.frontend import Ge2eFrontEnd

        return Ge2eFrontEnd.from_model(cfg, extra or {}, exp_dir)

    # ------------------------------------------------------------- network
    def embedding_layers(self) -> list[nn.Module]:
        return [self.lstm, self.linear]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D) -> (B, E)``: L2-normalised embeddings of (partial) utterances."""
        self.check_input(x)
        _, (hidden, _) = self.lstm(x)
        e = F.relu(self.linear(hidden[-1]))
        return e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)

    # ------------------------------------------------------ whole utterances
    def partial_windows(self, n_frames: int) -> list[tuple[int, int]]:
        """``[(start, end)]`` frame ranges of the partial windows of an utterance
        of ``n_frames`` frames (ends may pass ``n_frames``: zero-padded)."""
        L = self.partial_frames
        step = max(1, round(1000.0 / self.partial_rate / self.hop_ms))
        steps = max(1, n_frames - L + step + 1)
        starts = list(range(0, steps, step))
        # Coverage in samples, as Resemblyzer counts it (n_samples ~ (n_frames - 1) * hop).
        coverage = ((n_frames - 1) - starts[-1]) / L
        if coverage < self.min_coverage and len(starts) > 1:
            starts = starts[:-1]
        return [(s, s + L) for s in starts]

    @torch.no_grad()
    def embed_utterances(self, mats: Sequence[np.ndarray], *, batch_frames: int = 20000, device=None, amp=None,
                         **_) -> np.ndarray:
        """``(N, E)``: the L2-normalised mean of each utterance's partial-window
        embeddings, on the model's device. All windows have the same length, so
        windows of many utterances share one batch of up to ``batch_frames``
        frames; on a GPU the sums stay there (one host sync per call) and the
        LSTM runs in full float32 unless ``amp`` (:func:`utterance.full_fp32`)."""
        device = input_device(self, device)
        L = self.partial_frames
        windows, owner = [], []
        for i, m in enumerate(mats):
            m = np.asarray(m, dtype=np.float32)
            for a, b in self.partial_windows(len(m)):
                w = m[a:b]
                if len(w) < L:
                    w = np.concatenate([w, np.zeros((L - len(w), m.shape[1]), np.float32)])
                windows.append(w)
                owner.append(i)
        per = max(1, batch_frames // L)
        out = torch.zeros(len(mats), self.embed_dim, dtype=torch.float64, device=device)
        owner_d = to_device(np.asarray(owner, dtype=np.int64), device)
        with full_fp32(device) if amp is None else contextlib.nullcontext(), autocast(device, amp):
            for k in range(0, len(windows), per):
                e = self.embed(to_device(np.stack(windows[k:k + per]), device))
                out.index_add_(0, owner_d[k:k + per], e.double())
        out = out.cpu().numpy()
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32)
