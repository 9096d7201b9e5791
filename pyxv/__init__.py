"""pyxv: x-vectors meet emotions, a Kaldi-style recipe."""
__version__ = "0.1.0"
