"""Segments of recordings for inference over time: uniform windows, Kaldi
``segments`` files, and the per-file summary of per-segment posteriors.

    uniform_windows(10.4, window=3, hop=3)   # [(0, 3), (3, 6), (6, 10.4)]
    segs = read_segments("segments")         # {rec-id: [(seg-id, start, end)]}
    summarize(bounds, P, classes)            # duration-weighted mean, its argmax, majority

Windows follow Kaldi's uniform sub-segmentation
(``get_uniform_subsegments.py``): windows of ``window`` seconds every ``hop``
seconds; the last one runs to the end of the file, and a remainder shorter than
half a window is joined to the window before it rather than kept as a sliver.
A file shorter than one window is one segment of its whole length.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

# Kaldi's extract-segments --max-overshoot: a segment may end this far past the
# file (rounding in segmenters); it is cut at the file's end. Further is an error.
MAX_OVERSHOOT = 0.5


class SegmentsError(ValueError):
    """A segments file or window option that cannot be used; the message names it."""


def check_window(window: float, hop: float | None) -> float:
    """The hop to use (``window`` when None); one-line error for values that make no windows."""
    if not (window > 0 and math.isfinite(window)):
        raise SegmentsError(f"--window {window}: must be a positive number of seconds")
    hop = window if hop is None else hop
    if not (hop > 0 and math.isfinite(hop)):
        raise SegmentsError(f"--hop {hop}: must be a positive number of seconds")
    if hop > window:
        raise SegmentsError(f"--hop {hop} is longer than --window {window}: audio between windows would be "
                            "left out")
    return hop


def uniform_windows(duration: float, window: float, hop: float) -> list[tuple[float, float]]:
    """``[(start, end)]`` seconds covering ``[0, duration]`` (see the module doc)."""
    wins: list[tuple[float, float]] = []
    k = 0
    while True:
        s = round(k * hop, 6)
        e = round(s + window, 6)
        if e >= duration - 1e-6:
            wins.append((s, round(duration, 6)))
            break
        wins.append((s, e))
        k += 1
    if len(wins) > 1 and wins[-1][1] - wins[-1][0] < window / 2:
        wins.pop()
        wins[-1] = (wins[-1][0], round(duration, 6))
    return wins


def segment_id(name: str, start: float, end: float) -> str:
    """Kaldi's sub-segment name: ``<name>-<start>-<end>`` in centiseconds, 7 digits."""
    return f"{name}-{int(round(start * 100)):07d}-{int(round(end * 100)):07d}"


def read_segments(path: str | Path) -> dict[str, list[tuple[str, float, float]]]:
    """A Kaldi segments file (``seg-id rec-id start end``, seconds; ``end`` -1:
    to the end of the recording) as ``{rec-id: [(seg-id, start, end)]}`` in file
    order. A malformed line or a duplicate segment id is a one-line error
    naming the file and line."""
    out: dict[str, list[tuple[str, float, float]]] = {}
    seen: set[str] = set()
    p = Path(path)
    if not p.is_file():
        raise SegmentsError(f"{path}: no such segments file")
    with open(p, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            where = f"{path}:{lineno}"
            if len(parts) != 4:
                raise SegmentsError(f"{where}: expected 'seg-id rec-id start end', got {line.strip()!r}")
            seg, rec = parts[0], parts[1]
            try:
                start, end = float(parts[2]), float(parts[3])
            except ValueError:
                raise SegmentsError(f"{where}: start and end must be seconds, got {parts[2]!r} {parts[3]!r}") from None
            if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or (end != -1 and end <= start):
                raise SegmentsError(f"{where}: segment {seg} runs from {parts[2]} to {parts[3]} s (need "
                                    "0 <= start < end, or end -1 for the end of the recording)")
            if seg in seen:
                raise SegmentsError(f"{where}: duplicate segment id '{seg}'")
            seen.add(seg)
            out.setdefault(rec, []).append((seg, start, end))
    if not out:
        raise SegmentsError(f"{path}: no segments in it")
    return out


def clip_segment(seg: str, start: float, end: float, duration: float, name: str) -> tuple[float, float]:
    """``(start, end)`` of a listed segment inside a recording of ``duration``
    seconds: end -1 is the end, an overshoot of up to ``MAX_OVERSHOOT`` is cut
    (as Kaldi's extract-segments does); otherwise a SegmentsError naming both."""
    if end == -1:
        end = duration
    if start >= duration:
        raise SegmentsError(f"segment {seg}: starts at {start:.2f} s but {name} lasts {duration:.2f} s")
    if end > duration + MAX_OVERSHOOT:
        raise SegmentsError(f"segment {seg}: ends at {end:.2f} s but {name} lasts {duration:.2f} s")
    return start, min(end, duration)


def summarize(bounds: Sequence[tuple[float, float]], post: np.ndarray, classes: Sequence[str]) -> dict:
    """Per-file summary of per-segment posteriors ``post`` (S, C):

    - ``posteriors``: their mean weighted by segment duration (overlapping
      windows each count with their own length);
    - ``emotion``: the argmax of that mean (the file's label);
    - ``majority``: the class that is the segments' argmax for the most time
      (ties: the earlier class), for comparison.
    """
    post = np.asarray(post, dtype=np.float64)
    w = np.array([e - s for s, e in bounds], dtype=np.float64)
    mean = (w[:, None] * post).sum(0) / w.sum()
    time_per = np.zeros(len(classes))
    np.add.at(time_per, post.argmax(1), w)
    return {"emotion": classes[int(mean.argmax())], "posteriors": mean, "majority": classes[int(time_per.argmax())],
            "seconds_per_label": {c: float(t) for c, t in zip(classes, time_per)},
            "duration": float(w.sum()), "segments": int(len(bounds))}
