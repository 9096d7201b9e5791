"""Emotion classes in the one order every table, figure and back-end uses.

The paper's order of Tables 3-5 (angry, happy, sad, neutral) comes first, then
the other classes of the corpora pyxv prepares (RAVDESS's disgust, fear,
surprise, calm), then any class no corpus here uses, sorted.
"""
from __future__ import annotations

from typing import Iterable

__all__ = ["EMOTION_ORDER", "order_emotions", "emotion_sort_key"]

EMOTION_ORDER = ("angry", "happy", "sad", "neutral", "disgust", "fear", "surprise", "calm")


def emotion_sort_key(emotion: str) -> tuple[int, str]:
    """Sort key: position in :data:`EMOTION_ORDER`, unknown classes after it by name."""
    return (EMOTION_ORDER.index(emotion) if emotion in EMOTION_ORDER else len(EMOTION_ORDER), emotion)


def order_emotions(names: Iterable[str]) -> list[str]:
    """The distinct ``names`` in the one emotion order."""
    return sorted(set(names), key=emotion_sort_key)
