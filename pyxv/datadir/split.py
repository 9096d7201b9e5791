"""Splitting a data dir into parts for parallel jobs (utils/split_data.sh)."""
from __future__ import annotations

import bisect
import os
import time
from itertools import accumulate
from pathlib import Path

from ..io import atomic_open
from .access import utt2spk_to_spk2utt
from .subset import filter_datadir_parts
from .tables import VERBATIM, c_sorted, ckey, classify, read_first


def _balanced_chunks(sizes: list[int], n: int) -> list[tuple[int, int]]:
    """Cut a sequence of item sizes into ``n`` contiguous non-empty chunks of
    nearly equal total size; returns (start, end) index pairs. Each cut is the
    smallest index whose running total is closest to its share; found by
    bisection (the distance to the share is V-shaped along the running totals),
    so the cost does not grow with ``len(sizes) * n``."""
    total = sum(sizes)
    cum = list(accumulate(sizes))
    bounds, start = [], 0
    for k in range(1, n):
        target = total * k / n
        lo, hi = start + 1, len(sizes) - (n - k)
        # cut i leaves cum[i-1] before it; candidates: both sides of the share and the range ends
        p = bisect.bisect_left(cum, target)
        cands = set()
        for i in (p, p + 1, lo, hi):
            i = min(max(i, lo), hi)
            # the smallest cut in range with the same running total
            cands.add(max(lo, bisect.bisect_left(cum, cum[i - 1]) + 1))
        best = min(cands, key=lambda i: (abs(cum[i - 1] - target), i))
        bounds.append((start, best))
        start = best
    bounds.append((start, len(sizes)))
    return bounds


def split_datadir(path: str | os.PathLike, n: int, *, per_spk: bool = False,
                  force: bool = False) -> tuple[list[Path], bool]:
    """Split a data dir into ``path/split{n}/{1..n}`` by utterance (contiguous,
    sizes within one) or, with ``per_spk``, by whole speakers (balanced by
    utterance count). An existing split newer than every source file, made the
    same way, is reused. Returns (part dirs, reused)."""
    d = Path(path)
    if n < 1:
        raise ValueError(f"cannot split into {n} parts")
    if not (d / "utt2spk").is_file():
        raise FileNotFoundError(f"{d}: has no utt2spk")
    out = d / f"split{n}"
    parts = [out / str(i) for i in range(1, n + 1)]
    stamp = out / ".split_done"
    mode = "per-spk" if per_spk else "per-utt"
    sources = [d / f for f in [*classify(d), "spk2utt", *VERBATIM] if (d / f).is_file()]
    # The stamp records how the split was made and from which files (a file
    # removed from the source makes the split stale too).
    stamp_text = mode + "\n" + " ".join(s.name for s in sources) + "\n"
    if not force and stamp.is_file() and stamp.read_text() == stamp_text \
            and all((p / "utt2spk").is_file() for p in parts):
        t = stamp.stat().st_mtime
        if all(s.stat().st_mtime <= t for s in sources):
            return parts, True
    utt2spk = read_first(d / "utt2spk")[0]
    utts = c_sorted(utt2spk)
    if per_spk:
        spk2utt = utt2spk_to_spk2utt(utt2spk)
        spks = list(spk2utt)  # sorted (utterance order follows speaker order)
        spks.sort(key=ckey)
        if len(spks) < n:
            raise ValueError(f"{d}: cannot split {len(spks)} speakers into {n} parts (use fewer jobs)")
        chunks = _balanced_chunks([len(spk2utt[s]) for s in spks], n)
        groups = [[u for s in spks[a:b] for u in spk2utt[s]] for a, b in chunks]
    else:
        if len(utts) < n:
            raise ValueError(f"{d}: cannot split {len(utts)} utterances into {n} parts (use fewer jobs)")
        q, r = divmod(len(utts), n)
        groups, i = [], 0
        for k in range(n):
            size = q + (1 if k < r else 0)
            groups.append(utts[i:i + size])
            i += size
    if stamp.exists():
        stamp.unlink()
    filter_datadir_parts(d, list(zip(parts, groups)))
    with atomic_open(stamp, "w") as f:
        f.write(stamp_text)
    # The stamp must not be older than what it vouches for, even on coarse clocks.
    now = time.time()
    newest = max([s.stat().st_mtime for s in sources] + [now])
    os.utime(stamp, (newest, newest))
    return parts, False
