"""eGeMAPS: shapes (88 functionals, 25 LLDs at 100 frames/s), the one-pass
extraction equals openSMILE's two process_signal runs, too-short clips are errors."""
from __future__ import annotations

import numpy as np
import pytest

from pyxv.io import read_audio

pytest.importorskip("opensmile")


def test_gemaps_shapes_and_one_pass(ravdess_root):
    from pyxv.features.gemaps import Gemaps

    g = Gemaps()
    assert len(g.functional_names) == 88 and len(g.lld_names) == 25
    f = ravdess_root / "Actor_02" / "03-01-02-01-01-01-02.flac"
    x, sr = read_audio(str(f))
    lld, func = g.both(x, sr)
    assert func.shape == (88,) and np.isfinite(func).all()
    assert lld.shape[1] == 25 and abs(lld.shape[0] - 100 * len(x) / sr) <= 5
    np.testing.assert_array_equal(lld, g.llds(x, sr))
    np.testing.assert_array_equal(func, g.functionals(x, sr))
    # loudness (first LLD) follows the signal: the quieter half of a scaled copy is quieter
    y = x.copy()
    y[len(y) // 2:] *= 0.05
    l2, _ = g.both(y, sr)
    n = l2.shape[0] // 2
    assert l2[n + 5:, 0].mean() < 0.5 * lld[n + 5:, 0].mean()
    with pytest.raises(ValueError, match="too short"):
        g.both(x[:100], sr)
