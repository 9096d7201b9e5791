"""eGeMAPS v02 (openSMILE): 88 functionals per utterance and 25 low-level
descriptors per 10 ms frame (for the random-init GeMAPS baseline).

Input samples are on the int16 scale (``pyxv.io.read_audio``); openSMILE gets
them scaled to [-1, 1] at the audio's own rate. Clips too short for openSMILE's
60 ms pitch window give all-NaN output, which is an error here; isolated NaNs
(e.g. no voiced frame for a pitch statistic) become 0 and are counted.
"""
from __future__ import annotations

import numpy as np

NUM_FUNCTIONALS = 88
NUM_LLDS = 25


class Gemaps:
    """``g = Gemaps(); g.functionals(x, sr) -> (88,)``, ``g.llds(x, sr) -> (T, 25)``,
    ``g.both(x, sr) -> ((T, 25), (88,))`` in one openSMILE pass (half the time)."""

    def __init__(self):
        import opensmile

        self._func = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                     feature_level=opensmile.FeatureLevel.Functionals)
        self._lld = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                    feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
        self.functional_names = list(self._func.feature_names)
        self.lld_names = list(self._lld.feature_names)
        self.nan_count = 0

    def _run(self, smile, x: np.ndarray, sr: int, what: str) -> np.ndarray:
        import warnings

        x = np.asarray(x, dtype=np.float32).reshape(-1) / 32768.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Segment too short": handled below
            out = smile.process_signal(x, int(sr)).to_numpy(dtype=np.float32)
        nan = np.isnan(out)
        if out.size == 0 or nan.all():
            raise ValueError(f"{len(x)} samples ({len(x) / sr:.3f} s) are too short for eGeMAPS {what}")
        if nan.any():
            self.nan_count += int(nan.sum())
            out = np.where(nan, 0.0, out).astype(np.float32)
        return out

    def _clean(self, out: np.ndarray, n: int, sr: int, what: str) -> np.ndarray:
        nan = np.isnan(out)
        if out.size == 0 or nan.all():
            raise ValueError(f"{n} samples ({n / sr:.3f} s) are too short for eGeMAPS {what}")
        if nan.any():
            self.nan_count += int(nan.sum())
            out = np.where(nan, 0.0, out)
        return out.astype(np.float32)

    def both(self, x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """LLDs (T, 25) and functionals (88,) from one openSMILE run over the
        eGeMAPS config with its two external sinks (openSMILE's own
        ``standard_external_data_output_multi``), fed the same int16 samples
        ``process_signal`` would give it; falls back to two runs if the
        opensmile package's internals differ from 2.x."""
        if getattr(self, "_one_pass", True):
            try:
                return self._both_one_pass(x, sr)
            except (AttributeError, TypeError, KeyError, ImportError):
                self._one_pass = False
        return self.llds(x, sr), self.functionals(x, sr)

    def _both_one_pass(self, x: np.ndarray, sr: int):
        import os

        from opensmile.core.config import config as smcfg

        s = self._func
        opts = s._options()
        opts.pop("sinkLevel", None)
        opts["sink"] = os.path.join(s.default_config_root, smcfg.EXTERNAL_OUTPUT_MULTI_CONFIG)
        opts["source"] = os.path.join(s.default_config_root, smcfg.EXTERNAL_INPUT_CONFIG)
        opts["sampleRate"] = int(sr)
        opts["nBits"] = 16
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        q = np.clip(x, -32768, 32767).astype(np.int16)   # process_signal's conversion
        lld: list = []
        func: list = []
        sm = s._smile(options=opts)
        try:
            sm.external_sink_set_callback_ex("extsinklld", lambda data, meta: lld.append(data.copy()))
            sm.external_sink_set_callback_ex("extsinkfunc", lambda data, meta: func.append(data.copy()))
            sm.external_audio_source_write_data(smcfg.EXTERNAL_SOURCE_COMPONENT, bytes(q))
            sm.external_audio_source_set_eoi(smcfg.EXTERNAL_SOURCE_COMPONENT)
            sm.run()
        finally:
            sm.free()
        a = np.vstack(lld) if lld else np.zeros((0, NUM_LLDS))
        b = np.vstack(func).reshape(-1) if func else np.zeros(0)
        if a.size and a.shape[1] != NUM_LLDS or b.size and b.size != NUM_FUNCTIONALS:
            raise KeyError(f"unexpected eGeMAPS output shapes {a.shape} {b.shape}")
        return self._clean(a, len(x), sr, "LLDs"), self._clean(b, len(x), sr, "functionals")

    def functionals(self, x: np.ndarray, sr: int) -> np.ndarray:
        """88 eGeMAPS functionals of one utterance -> (88,) float32."""
        return self._run(self._func, x, sr, "functionals").reshape(-1)

    def llds(self, x: np.ndarray, sr: int) -> np.ndarray:
        """eGeMAPS low-level descriptors -> (T, 25) float32, one row per 10 ms."""
        return self._run(self._lld, x, sr, "LLDs")
