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
LLD_FRAME_RATE = 100  # frames per second


class Gemaps:
    """``g = Gemaps(); g.functionals(x, sr) -> (88,)``, ``g.llds(x, sr) -> (T, 25)``."""

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

    def functionals(self, x: np.ndarray, sr: int) -> np.ndarray:
        """88 eGeMAPS functionals of one utterance -> (88,) float32."""
        return self._run(self._func, x, sr, "functionals").reshape(-1)

    def llds(self, x: np.ndarray, sr: int) -> np.ndarray:
        """eGeMAPS low-level descriptors -> (T, 25) float32, one row per 10 ms."""
        return self._run(self._lld, x, sr, "LLDs")
