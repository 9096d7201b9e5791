"""Writing Kaldi ark/scp pairs that appear whole or not at all, and the shared
per-utterance job loop of the feature tools (errors reported, counted, skipped).

The ark is written under a temporary name beside its final one and renamed when
the job finishes; the scp (which names the final ark, absolute path and byte
offset, as Kaldi's tools write it) is written after. A job that dies leaves only
a ``.tmp`` file, which the step scripts remove before the next run.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from kaldiio.matio import write_array

from ..io import atomic_open


class ArkScpWriter:
    """``with ArkScpWriter(ark, scp, num_frames=f) as w: w.write(utt, array)``.

    Float32 matrices become Kaldi ``FM`` objects and 1-D arrays ``FV`` vectors.
    ``num_frames``: also write ``utt rows`` lines (``utt2num_frames``).
    """

    def __init__(self, ark: str | os.PathLike, scp: str | os.PathLike,
                 num_frames: str | os.PathLike | None = None):
        self.ark = Path(ark).absolute()
        self.scp = Path(scp)
        self.num_frames = Path(num_frames) if num_frames else None
        self.tmp = self.ark.with_name(f".{self.ark.name}.tmp.{os.getpid()}")
        self.entries: list[tuple[str, int, int]] = []
        self._f = None

    def __enter__(self) -> "ArkScpWriter":
        self.ark.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.tmp, "wb")
        return self

    def write(self, key: str, array: np.ndarray) -> None:
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"bad archive key '{key}'")
        arr = np.ascontiguousarray(array, dtype=np.float32)
        self._f.write(key.encode("utf-8") + b" ")
        offset = self._f.tell()
        write_array(self._f, arr)
        self.entries.append((key, offset, arr.shape[0] if arr.ndim else 1))

    def __exit__(self, exc_type, exc, tb) -> None:
        self._f.close()
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        os.replace(self.tmp, self.ark)
        with atomic_open(self.scp, "w", encoding="utf-8") as f:
            for key, off, _ in self.entries:
                f.write(f"{key} {self.ark}:{off}\n")
        if self.num_frames is not None:
            with atomic_open(self.num_frames, "w", encoding="utf-8") as f:
                for key, _, n in self.entries:
                    f.write(f"{key} {n}\n")


def _term_to_exit(signum, frame):  # so that SIGTERM (job killed) still cleans up temp files
    raise SystemExit(128 + signum)


def run_utterances(tool: str, items: Iterable[tuple[str, Callable[[], np.ndarray]]],
                   writers: list[ArkScpWriter], total: int,
                   log=sys.stderr, every: int = 200) -> int:
    """Run ``compute()`` for each ``(utt, compute)``; write results to ``writers``
    (``compute`` returns one array per writer as a tuple, or one array). A failing
    utterance is logged as ``ERROR utterance <utt>: <why>`` and skipped.
    Returns the exit status 0 once the archives are complete, even if every
    utterance failed (unlike Kaldi's tools): the step counts failures over all
    jobs, so a job of only bad utterances does not stop the others' merge."""
    signal.signal(signal.SIGTERM, _term_to_exit)
    ok = failed = 0
    t0 = time.time()
    with contextlib.ExitStack() as stack:
        for w in writers:
            stack.enter_context(w)
        for i, (utt, compute) in enumerate(items, 1):
            try:
                out = compute()
                outs = out if isinstance(out, tuple) else (out,)
                for w, a in zip(writers, outs):
                    w.write(utt, a)
                ok += 1
            except Exception as e:  # one bad utterance never stops the job
                failed += 1
                print(f"{tool}: ERROR utterance {utt}: {e}", file=log, flush=True)
            if i % every == 0:
                el = time.time() - t0
                print(f"{tool}: {i}/{total} utterances, {el:.1f} s", file=log, flush=True)
    print(f"{tool}: done: {ok} utterances written, {failed} failed, {time.time() - t0:.1f} s",
          file=log, flush=True)
    return 0
