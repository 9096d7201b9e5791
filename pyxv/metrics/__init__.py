"""Metrics: speaker verification (sv) and classification (emotion)."""
