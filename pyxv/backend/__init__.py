"""Speaker-verification back-ends: pre-processing, cosine and PLDA scoring, AS-norm.

``Backend`` (pipeline.py) is the object steps and tools use; the pieces are
importable on their own with scikit-learn-style fit/transform.
"""
from .asnorm import ASNorm
from .pipeline import DEFAULT_CONFIG, Backend, CalibrationError, Prepared, calibration_groups
from .plda import PLDA
from .preprocess import LDA, Center, LengthNorm, Whiten

__all__ = ["ASNorm", "Backend", "CalibrationError", "DEFAULT_CONFIG", "calibration_groups", "Prepared", "PLDA", "LDA",
           "Center", "LengthNorm", "Whiten"]
