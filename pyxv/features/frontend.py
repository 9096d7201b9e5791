"""Feature front-ends of the speaker encoders: audio or a data dir -> network input.

Each encoder type (:mod:`pyxv.nnet.registry`) names its front-end through
``type.frontend(cfg, extra, exp_dir)``. A front-end offers

* ``front(spec, name)``: the network input ``(T, D)`` of one audio file or
  ``wav.scp`` value (inference: ``pyxv embed|verify|emotion``);
* ``data_source(data_dir)`` (and ``fallback_source``): utterance -> network
  input for a data dir, read lazily (extraction);
* ``source_for(data_dirs, utts, work, name)``: a
  :class:`~pyxv.features.network_input.FeatureSource` over the utterances ``utts`` of
  ``data_dirs`` (training and fine-tuning: random chunks through scp offsets);
* ``data_requirements``: the data-dir files it reads (checked before any work).

:class:`MfccVadFrontEnd` is the paper's: 23-dim MFCC and energy VAD made in
stage 2 (``feats.scp``/``vad.scp``), sliding CMN, voiced frames; for audio it
recomputes them with the Kaldi confs kept with the model. :class:`Ge2eFrontEnd`
is GE2E's power mel spectrogram of volume-normalised, silence-trimmed 16 kHz
audio (:mod:`pyxv.features.ge2e_mel`), computed from ``wav.scp``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np

log = logging.getLogger("pyxv.features")

MFCC_SEED = 0  # the feature step's dither seed rule (utt_seed(0, utt))


class FrontEndError(RuntimeError):
    """A front-end that cannot be built or used; the message says which file and why."""


def audio_name(spec: str) -> str:
    """A file's name without directories and audio suffixes (``a/b/x.flac`` -> ``x``)."""
    return Path(spec).name.split(".")[0] or Path(spec).name


def merged_scp(out: Path, tables: list[Path], utts: set[str]) -> Path | None:
    """One scp with the lines of ``tables`` for ``utts`` (first table wins)."""
    from ..io import read_table, write_table

    merged: dict[str, str] = {}
    for t in tables:
        if t.is_file():
            for u, v in read_table(t).items():
                if u in utts and u not in merged:
                    merged[u] = v
    if not merged:
        return None
    write_table(out, merged)
    return out


# --------------------------------------------------------------------- MFCC
class MfccVadFrontEnd:
    """MFCC -> VAD -> sliding CMN -> voiced frames, as the recipe's feature and
    extraction steps do it. ``mfcc_conf``/``vad_conf``: Kaldi conf paths or
    texts (only needed for audio input; data dirs carry stage 2's features)."""

    kind = "mfcc_vad"
    data_requirements = ("feats.scp", "vad.scp")

    def __init__(self, mfcc_conf: str | os.PathLike | None = None, vad_conf: str | os.PathLike | None = None, *,
                 cmn_window: int = 300, apply_vad: bool = True, min_frames: int = 10, device: str = "cpu",
                 mfcc_text: str | None = None, vad_text: str | None = None, where: str = ""):
        self.cmn_window, self.apply_vad, self.min_frames = int(cmn_window), bool(apply_vad), int(min_frames)
        if not self.apply_vad:
            self.data_requirements = ("feats.scp",)
        self._mfcc_text = Path(mfcc_conf).read_text() if mfcc_conf else mfcc_text
        self._vad_text = Path(vad_conf).read_text() if vad_conf else vad_text
        self.device, self.where = device, where
        self._mfcc = None
        self._vad_opts = None

    @classmethod
    def from_model(cls, cfg: dict, extra: dict, exp_dir=None, device: str = "cpu") -> "MfccVadFrontEnd":
        """The front-end of a model: ``data.cmn_window``/``apply_vad`` of its config;
        the MFCC/VAD confs from ``exp_dir/{mfcc,vad}.conf`` or the texts in ``extra``."""
        texts = {}
        for name in ("mfcc.conf", "vad.conf"):
            p = Path(exp_dir) / name if exp_dir is not None else None
            if p is not None and p.is_file():
                texts[name] = p.read_text()
            else:
                texts[name] = extra.get(name) or extra.get(name.replace(".", "_"))
        return cls(cmn_window=cfg["data"]["cmn_window"], apply_vad=cfg["data"]["apply_vad"],
                   min_frames=cfg["extract"]["min_frames"], device=device, mfcc_text=texts["mfcc.conf"],
                   vad_text=texts["vad.conf"], where=str(exp_dir or "the model"))

    def _conf(self, text: str | None, name: str):
        if not text:
            raise FrontEndError(f"{self.where}: no {name} and none stored in final.pt; cannot compute the "
                                "features the model was trained on")
        import tempfile

        with tempfile.TemporaryDirectory() as td:
            p = Path(td) / name
            p.write_text(text, encoding="utf-8")
            if name == "mfcc.conf":
                from .mfcc import MfccOptions
                return MfccOptions.from_conf(p)
            from .vad import VadOptions
            return VadOptions.from_conf(p)

    @property
    def mfcc(self):
        if self._mfcc is None:
            from .mfcc import Mfcc

            self._mfcc = Mfcc(self._conf(self._mfcc_text, "mfcc.conf"), device=self.device)
            if self.apply_vad:
                self._vad_opts = self._conf(self._vad_text, "vad.conf")
        return self._mfcc

    @property
    def dim(self) -> int:
        return self.mfcc.dim

    @property
    def sample_rate(self) -> int:
        return self.mfcc.sample_rate

    def describe(self) -> str:
        return f"MFCC + energy VAD, sliding CMN over {self.cmn_window} frames" + (
            ", voiced frames only" if self.apply_vad else "")

    def raw(self, spec: str, name: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(MFCC (T, D), VAD (T,) or None) of a wav.scp value (path or ``cmd |``)."""
        from ..io import read_audio
        from .mfcc import utt_seed
        from .vad import compute_vad

        name = name or audio_name(spec)
        x, _ = read_audio(spec, sample_rate=self.sample_rate, name=name)
        feats = self.mfcc(x, seed=utt_seed(MFCC_SEED, name))
        if len(feats) == 0:
            raise FrontEndError(f"{spec}: audio too short for one {self.mfcc.opts.frame_length} ms frame")
        vad = compute_vad(feats, self._vad_opts) if self._vad_opts is not None else None
        return feats, vad

    def __call__(self, spec: str, name: str | None = None) -> np.ndarray:
        """Network input (T', D) float32 of one audio file."""
        from .network_input import xvector_input

        feats, vad = self.raw(spec, name)
        x = xvector_input(feats, vad, self.cmn_window, self.apply_vad and vad is not None, name=name or spec)
        if len(x) < self.min_frames:
            log.warning("%s: only %d voiced frames, using all %d frames", spec, len(x), len(feats))
            x = xvector_input(feats, None, self.cmn_window, False, name=name or spec)
        return x

    def data_source(self, data_dir):
        from .network_input import FeatureSource

        d = Path(data_dir)
        return FeatureSource(d / "feats.scp", vad_scp=(d / "vad.scp") if self.apply_vad else None,
                             cmn_window=self.cmn_window, apply_vad=self.apply_vad, cache=0)

    def fallback_source(self, data_dir):
        """All frames (no VAD), for utterances with too few voiced frames."""
        from .network_input import FeatureSource

        return FeatureSource(Path(data_dir) / "feats.scp", cmn_window=self.cmn_window, cache=0)

    def utterances(self, data_dir) -> list[str]:
        from ..io import read_table

        return list(read_table(Path(data_dir) / "feats.scp"))

    def source_for(self, data_dirs: Iterable[Path], utts: set[str], work: Path, name: str):
        from .network_input import FeatureSource

        dirs = [Path(d) for d in data_dirs]
        work.mkdir(parents=True, exist_ok=True)
        scp = merged_scp(work / f"{name}.feats.scp", [d / "feats.scp" for d in dirs], utts)
        if scp is None:
            raise FileNotFoundError(f"no MFCC (feats.scp) for the {name} utterances in {dirs[0]}")
        vad = merged_scp(work / f"{name}.vad.scp", [d / "vad.scp" for d in dirs], utts) if self.apply_vad else None
        if self.apply_vad and vad is None:
            raise FileNotFoundError(f"no VAD (vad.scp) for the {name} utterances in {dirs[0]}")
        return FeatureSource(scp, vad_scp=vad, cmn_window=self.cmn_window, apply_vad=self.apply_vad)


# --------------------------------------------------------------------- GE2E
class _AudioSource:
    """utterance -> front-end output, reading a data dir's audio (wav.scp, segments)."""

    def __init__(self, front, data_dir):
        from ..datadir import DataDir

        self.front, self.data = front, DataDir(data_dir)
        self._utts = self.data.utts

    def __contains__(self, utt: str) -> bool:
        return utt in self.data.utt2spk

    def keys(self) -> list[str]:
        return list(self._utts)

    def __getitem__(self, utt: str) -> np.ndarray:
        x, sr = self.data.read_audio(utt)
        return self.front.from_samples(x, sr, name=utt)


class Ge2eFrontEnd:
    """GE2E's power mel spectrogram (:mod:`pyxv.features.ge2e_mel`) from audio."""

    kind = "ge2e_mel"
    data_requirements = ("wav.scp",)

    def __init__(self, opts=None):
        from .ge2e_mel import Ge2eMelOptions, MelSpectrogram

        self.opts = opts or Ge2eMelOptions()
        self.mel = MelSpectrogram(self.opts)

    @classmethod
    def from_model(cls, cfg: dict, extra: dict | None = None, exp_dir=None) -> "Ge2eFrontEnd":
        from .ge2e_mel import Ge2eMelOptions

        return cls(Ge2eMelOptions.from_dict(cfg.get("frontend")))

    @property
    def dim(self) -> int:
        return self.opts.n_mels

    @property
    def sample_rate(self) -> int:
        return self.opts.sample_rate

    def describe(self) -> str:
        o = self.opts
        return (f"{o.n_mels}-band power mel spectrogram, {o.window_ms}/{o.hop_ms} ms, {o.sample_rate} Hz, "
                f"volume to {o.target_dbfs:g} dBFS" + (", long silences cut" if o.trim_silence else ""))

    def from_samples(self, x: np.ndarray, sample_rate: int, name: str = "") -> np.ndarray:
        from .ge2e_mel import preprocess_waveform

        wav = preprocess_waveform(x, sample_rate, self.opts)
        m = self.mel(wav)
        if len(m) == 0:
            raise FrontEndError(f"{name or 'audio'}: no samples left after silence trimming")
        return m

    def __call__(self, spec: str, name: str | None = None) -> np.ndarray:
        from ..io import read_audio

        name = name or audio_name(spec)
        x, sr = read_audio(spec, name=name)
        return self.from_samples(x, sr, name=name)

    def data_source(self, data_dir):
        return _AudioSource(self, data_dir)

    def fallback_source(self, data_dir):
        return None

    def utterances(self, data_dir) -> list[str]:
        from ..datadir import DataDir

        return DataDir(data_dir).utts

    def source_for(self, data_dirs: Iterable[Path], utts: set[str], work: Path, name: str):
        """Mel spectrograms of ``utts`` (from the first data dir that has each)
        written once to ``work/<name>.ark``; a FeatureSource over them."""
        from .network_input import FeatureSource, write_network_input

        plan: dict[str, _AudioSource] = {}
        for d in data_dirs:
            if (Path(d) / "wav.scp").is_file():
                src = _AudioSource(self, d)
                for u in src.keys():
                    if u in utts and u not in plan:
                        plan[u] = src
        if not plan:
            raise FileNotFoundError(f"no audio (wav.scp) for the {name} utterances in {list(data_dirs)}")
        order = sorted(plan)
        write_network_input(order, lambda u: plan[u][u], work, name)
        return FeatureSource(work / f"{name}.scp", utt2num_frames=work / f"{name}.utt2num_frames")
