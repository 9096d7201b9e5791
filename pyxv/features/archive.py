"""Writing Kaldi ark/scp pairs that appear whole or not at all, and the shared
per-utterance job loop of the feature tools (errors reported, counted, skipped).

The ark is written under a temporary name beside its final one and renamed when
the job finishes; the scp (which names the final ark, absolute path and byte
offset, as Kaldi's tools write it) is renamed last. Errors and signals remove
the temporary files; only ``kill -9`` can leave a ``.tmp.<pid>`` file, which
the step scripts remove before the next run. A full disk stops the job
(``FATAL``), it is never counted as a bad utterance.
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

from ..io import OUTPUT_ERRNOS, OutputError, fsync_dir


class ArkScpWriter:
    """``with ArkScpWriter(ark, scp, num_frames=f) as w: w.write(utt, array)``.

    Float32 matrices become Kaldi ``FM`` objects and 1-D arrays ``FV`` vectors.
    ``num_frames``: also write ``utt rows`` lines (``utt2num_frames``).

    Everything goes to temporary files beside the outputs; on success they are
    fsync'ed and renamed (ark, utt2num_frames, then scp, so an scp never names a
    missing ark); on any error or signal exception the temporary files, and any
    output already renamed, are removed: the job's outputs appear together or
    not at all. A write error raises :class:`pyxv.io.OutputError` naming the
    output and the free space.
    """

    def __init__(self, ark: str | os.PathLike, scp: str | os.PathLike,
                 num_frames: str | os.PathLike | None = None):
        self.ark = Path(ark).absolute()
        self.scp = Path(scp).absolute()
        self.num_frames = Path(num_frames).absolute() if num_frames else None
        self.tmp = _tmp_name(self.ark)
        self.entries: list[tuple[str, int, int]] = []
        self._f = None
        self._staged: list[tuple[Path, Path]] = []   # (temporary, final) pairs ready to rename
        self._done: list[Path] = []

    def __enter__(self) -> "ArkScpWriter":
        try:
            self.ark.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.tmp, "wb")
        except OSError as e:
            raise OutputError(self.ark, e) from e
        return self

    def write(self, key: str, array: np.ndarray) -> None:
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"bad archive key '{key}'")
        arr = np.ascontiguousarray(array, dtype=np.float32)
        try:
            self._f.write(key.encode("utf-8") + b" ")
            offset = self._f.tell()
            write_array(self._f, arr)
        except OSError as e:
            raise OutputError(self.ark, e) from e
        self.entries.append((key, offset, arr.shape[0] if arr.ndim else 1))

    def stage(self) -> None:
        """Close and sync the ark; write the scp (and num_frames) to synced temporary files."""
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
        except OSError as e:
            raise OutputError(self.ark, e) from e
        self._staged.append((self.tmp, self.ark))
        texts = []
        if self.num_frames is not None:
            texts.append((self.num_frames, "".join(f"{k} {n}\n" for k, _, n in self.entries)))
        texts.append((self.scp, "".join(f"{k} {self.ark}:{off}\n" for k, off, _ in self.entries)))
        for final, text in texts:
            tmp = _tmp_name(final)
            self._staged.append((tmp, final))
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise OutputError(final, e) from e

    def commit(self) -> None:
        """Rename the staged files onto their final names (scp last)."""
        for tmp, final in self._staged:
            try:
                os.replace(tmp, final)
            except OSError as e:
                raise OutputError(final, e) from e
            self._done.append(final)
        fsync_dir(self.ark.parent)

    def abort(self) -> None:
        """Remove every temporary file and every output this writer already renamed."""
        if self._f is not None and not self._f.closed:
            with contextlib.suppress(OSError):
                self._f.close()
        for p in [self.tmp] + [t for t, _ in self._staged] + self._done:
            with contextlib.suppress(OSError):
                p.unlink()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            commit_all([self])
        else:
            self.abort()


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp.{os.getpid()}")


def commit_all(writers: list[ArkScpWriter]) -> None:
    """Stage all writers, then rename all; on any failure abort all (outputs of
    several archives, e.g. GeMAPS LLDs and functionals, appear together)."""
    try:
        for w in writers:
            w.stage()
        for w in writers:
            w.commit()
    except BaseException:
        for w in writers:
            w.abort()
        raise


def _term_to_exit(signum, frame):  # so that SIGTERM/SIGHUP (job killed) still cleans up temp files
    raise SystemExit(128 + signum)


def exit_cleanly_on_signals() -> None:
    """SIGTERM and SIGHUP raise SystemExit (SIGINT raises KeyboardInterrupt anyway),
    so ``finally`` blocks and context managers remove temporary files."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _term_to_exit)


def run_utterances(tool: str, items: Iterable[tuple[str, Callable[[], np.ndarray]]],
                   writers: list[ArkScpWriter], total: int,
                   log=sys.stderr, every: int = 200) -> int:
    """Run ``compute()`` for each ``(utt, compute)``; write results to ``writers``
    (``compute`` returns one array per writer as a tuple, or one array).

    Input problems: a failing ``compute`` is logged as ``ERROR utterance <utt>:
    <why>`` and skipped. Output problems (disk full, I/O error, permission, a
    vanished folder) stop the job at once with one ``FATAL`` line naming the
    output and the free space, exit status 1, and nothing of the job's outputs
    left behind. Returns 0 once the archives are complete, even if every
    utterance failed (unlike Kaldi's tools): the step counts failures over all
    jobs, so a job of only bad utterances does not stop the others' merge."""
    exit_cleanly_on_signals()
    ok = failed = 0
    t0 = time.time()
    opened: list[ArkScpWriter] = []
    try:
        for w in writers:
            w.__enter__()
            opened.append(w)
        for i, (utt, compute) in enumerate(items, 1):
            try:
                out = compute()
            except OutputError:
                raise
            except OSError as e:
                if e.errno in OUTPUT_ERRNOS:   # a full disk is never the utterance's fault
                    raise OutputError(getattr(e, "filename", None) or writers[0].ark, e) from e
                failed += 1
                print(f"{tool}: ERROR utterance {utt}: {e}", file=log, flush=True)
                continue
            except Exception as e:  # one bad utterance never stops the job
                failed += 1
                print(f"{tool}: ERROR utterance {utt}: {e}", file=log, flush=True)
                continue
            outs = out if isinstance(out, tuple) else (out,)
            for w, a in zip(writers, outs):
                w.write(utt, a)
            ok += 1
            if i % every == 0:
                el = time.time() - t0
                print(f"{tool}: {i}/{total} utterances, {el:.1f} s", file=log, flush=True)
        commit_all(writers)
    except OutputError as e:
        for w in opened:
            w.abort()
        print(f"{tool}: FATAL: {e}; stopped after {ok} utterances, nothing of this job kept", file=log,
              flush=True)
        return 1
    except BaseException:
        for w in opened:
            w.abort()
        raise
    print(f"{tool}: done: {ok} utterances written, {failed} failed, {time.time() - t0:.1f} s",
          file=log, flush=True)
    return 0
