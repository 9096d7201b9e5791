"""Rows of Kaldi ark matrices, read in place: what a training chunk needs and no more.

A training step uses 200-400 frames of an utterance; decoding the whole matrix
(``kaldiio.load_mat``) to take them reads, allocates and copies everything else
too, and opens the ark again for every chunk. :class:`ArkRows` keeps the arks
open (per process: a forked DataLoader worker opens its own) and, for the
uncompressed float matrices the recipe writes (Kaldi ``FM``/``DM``), reads only
the chunk's rows with one ``preadv`` straight into the caller's buffer.
Anything else an scp can name (compressed ``CM`` matrices, pipes, slices,
text) takes kaldiio's path and is cut after decoding, as before.

    rows = ArkRows()
    out = np.empty((200, 23), np.float32)
    rows.read_into("feats.ark:1234", start=50, out=out)   # rows 50..249
    batch = np.empty((128, 300, 23), np.float32)
    left = rows.read_chunks(specs, starts, batch)          # chunk k -> batch[k]; ``left``: decode those
    index = rows.index(specs)                              # a fixed list of entries, looked up by position:
    left = index.read(positions, starts, batch)            # no per-chunk lookup by name (the training loader)

A batch is read in two passes so that a cold page cache costs about one disk
round trip per batch, not one per chunk: each chunk is first read only if it
is already cached (``RWF_NOWAIT``, so a hot batch is one ``preadv`` per chunk
and nothing more); the rest are announced together (``posix_fadvise
WILLNEED`` starts their reads at once) and then read. The first batch that
meets an utterance announces its header with its rows, before any header is read.

Layout of a binary matrix at an scp offset (Kaldi's ``io.cc``/``kaldi-matrix.cc``):
``\\0B``, the token ``FM `` (float32) or ``DM `` (float64), then
``\\x04`` int32 rows and ``\\x04`` int32 columns (little-endian), then the data
row by row.
"""
from __future__ import annotations

import collections
import errno
import os
import re
import struct
from typing import Sequence

import numpy as np

_HEADER = 15  # \0B + "FM " + \x04 + int32 + \x04 + int32
_DTYPES = {b"FM ": np.dtype("<f4"), b"DM ": np.dtype("<f8")}
_SPEC = re.compile(r"^(.+):(\d+)$")
_UNSEEN = object()
# Reads that may not wait for the disk (Linux >= 4.14); elsewhere every read just waits.
_NOWAIT = getattr(os, "RWF_NOWAIT", 0) if hasattr(os, "posix_fadvise") else 0


class ArkRows:
    """Chunks of scp entries (``path:offset``) with file handles kept open, ``max_open`` at a time."""

    def __init__(self, max_open: int = 128):
        self.max_open = max_open
        self._fds: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._sizes: dict[str, int] = {}
        self._layout: dict[str, tuple | None] = {}
        self._pid = os.getpid()
        self._nowait = _NOWAIT

    # ------------------------------------------------------------- files
    def _own(self) -> None:
        if self._pid != os.getpid():  # a forked worker: the parent's descriptors are not ours to share
            self._fds.clear()
            self._pid = os.getpid()

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        fd = os.open(path, os.O_RDONLY)
        self._fds[path] = fd
        self._sizes[path] = os.fstat(fd).st_size
        return fd

    def _trim(self) -> None:
        """Close the least recently used files beyond ``max_open`` (after a read: none is closed under it)."""
        while len(self._fds) > self.max_open:
            os.close(self._fds.popitem(last=False)[1])

    def _path(self, fd: int) -> str:
        return next((p for p, f in self._fds.items() if f == fd), f"file descriptor {fd}")

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self):  # sent to DataLoader workers: layouts travel, descriptors do not
        return {"max_open": self.max_open, "_layout": self._layout}

    def __setstate__(self, state):
        self.__init__(state["max_open"])
        self._layout = state["_layout"]

    # ------------------------------------------------------------- layout
    def layout(self, spec: str) -> tuple | None:
        """(path, data offset, rows, cols, dtype) of an uncompressed binary matrix, else None.

        A header that says ``FM``/``DM`` but gives no rows or columns, or data that would run past
        the end of the file, is an error naming the file (a corrupt or truncated ark)."""
        lay = self._layout.get(spec, _UNSEEN)
        if lay is not _UNSEEN:
            return lay
        self._own()
        lay = None
        m = _SPEC.match(spec)
        if m and not spec.rstrip().endswith("|"):
            path, off = m.group(1), int(m.group(2))
            head = os.pread(self._fd(path), _HEADER, off)
            dtype = _DTYPES.get(head[2:5])
            if head[:2] == b"\0B" and dtype is not None:
                if len(head) < _HEADER:
                    raise OSError(f"{path}: matrix header at byte {off} cut off by the end of the file: truncated ark")
                rows, cols = struct.unpack("<i", head[6:10])[0], struct.unpack("<i", head[11:15])[0]
                if head[5] != 4 or head[10] != 4 or rows < 0 or cols <= 0:
                    raise ValueError(f"{path}: matrix header at byte {off} is corrupt "
                                     f"({head[2:5].decode().strip()} with {rows} rows x {cols} columns)")
                end = off + _HEADER + rows * cols * dtype.itemsize
                if end > self._sizes[path]:
                    raise OSError(f"{path}: the matrix at byte {off} ends at byte {end}, past the end of the file "
                                  f"({self._sizes[path]} bytes): truncated ark")
                lay = (path, off + _HEADER, rows, cols, dtype)
            self._trim()
        self._layout[spec] = lay
        return lay

    def num_rows(self, spec: str) -> int | None:
        lay = self.layout(spec)
        return None if lay is None else lay[2]

    # ------------------------------------------------------------- reading
    def read_into(self, spec: str, start: int, out: np.ndarray) -> bool:
        """Rows ``start .. start + len(out)`` of the matrix at ``spec`` into ``out`` (float32).

        Returns False, with ``out`` untouched, when the matrix is not an uncompressed binary one or the
        rows run past its end (the caller then decodes it whole)."""
        return self.read_rows(self.layout(spec), start, out)

    def read_rows(self, lay: tuple | None, start: int, out: np.ndarray) -> bool:
        """:meth:`read_into` for a matrix whose :meth:`layout` is known."""
        if lay is None:
            return False
        path, data, rows, cols, dtype = lay
        n = out.shape[0]
        if start < 0 or start + n > rows or out.shape[1] != cols:
            return False
        if dtype.itemsize == 4 and out.dtype == np.float32 and out.flags.c_contiguous:
            return not self.read_chunks([lay], [start], out[None])
        self._own()
        offset = data + start * cols * dtype.itemsize
        want = n * cols * dtype.itemsize
        buf = os.pread(self._fd(path), want, offset)
        self._trim()
        if len(buf) != want:
            raise OSError(f"{path}: short read at byte {offset} ({len(buf)} of {want} bytes): truncated ark?")
        out[...] = np.frombuffer(buf, dtype=dtype).reshape(n, cols)
        return True

    def read_chunks(self, specs: Sequence, starts: Sequence[int], out: np.ndarray) -> list[int]:
        """Chunk ``k``, rows ``starts[k] .. starts[k] + L`` of the matrix at ``specs[k]`` (an scp entry
        or its :meth:`layout`), into ``out[k]`` of a batch ``out`` of shape (B, L, D), float32, C order.

        Returns the ``k`` left untouched (not an uncompressed float32 matrix of D columns, or rows past
        its end): the caller decodes those."""
        B, L, D = out.shape
        if out.dtype != np.float32 or not out.flags.c_contiguous:
            return list(range(B))
        self._own()
        lays = [spec if isinstance(spec, tuple) else self.layout(spec) for spec in specs]
        ok = [k for k, (lay, s) in enumerate(zip(lays, starts))
              if lay is not None and lay[3] == D and lay[4].itemsize == 4 and 0 <= s and s + L <= lay[2]]
        fds = {path: self._fd(path) for path in {lays[k][0] for k in ok}}
        self._read_at([fds[lays[k][0]] for k in ok], [lays[k][1] + starts[k] * D * 4 for k in ok], ok, out)
        done = set(ok)
        return [k for k in range(B) if k not in done]

    def announce(self, specs: Sequence[str], starts: Sequence[int], length: int, cols: int) -> None:
        """Start reading, all at once, the headers of ``specs`` not seen yet and the rows their chunks
        would have as float32 matrices of ``cols`` columns (``posix_fadvise WILLNEED``), so that learning
        a cold batch's layouts waits about once, not once per utterance."""
        if not self._nowait:
            return
        self._own()
        for spec, s in zip(specs, starts):
            m = None if spec in self._layout else _SPEC.match(spec)
            if m:
                fd, off = self._fd(m.group(1)), int(m.group(2))
                os.posix_fadvise(fd, off, _HEADER, os.POSIX_FADV_WILLNEED)
                os.posix_fadvise(fd, off + _HEADER + s * cols * 4, length * cols * 4, os.POSIX_FADV_WILLNEED)
        self._trim()

    def index(self, specs: Sequence[str]) -> RowIndex:
        """A :class:`RowIndex` of ``specs`` read through these open files."""
        return RowIndex(self, specs)

    def _read_at(self, fds: Sequence[int], offsets: Sequence[int], ks: Sequence[int], out: np.ndarray) -> None:
        """``out[k]`` (float32, C order) from byte ``offset`` of ``fd`` for each (fd, offset, k).

        Two passes, so that a cold page cache costs about one disk round trip per batch, not one per
        chunk: each chunk is first read only if it is cached (``RWF_NOWAIT``: a hot chunk is one
        ``preadv`` and nothing more); the rest are announced together (``posix_fadvise WILLNEED``
        starts their reads at once), then read."""
        mv = memoryview(out).cast("B")
        n = out[0].nbytes if len(out) else 0
        preadv, nowait = os.preadv, self._nowait
        pending = []
        for fd, off, k in zip(fds, offsets, ks):
            buf = mv[k * n:(k + 1) * n]
            got = 0
            if nowait:
                try:
                    got = preadv(fd, [buf], off, nowait)
                except BlockingIOError:  # not in the page cache
                    pass
                except OSError as e:
                    if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    self._nowait = nowait = 0  # this file system cannot: every read waits
            if got == n:
                continue
            if nowait:
                os.posix_fadvise(fd, off + got, n - got, os.POSIX_FADV_WILLNEED)
                pending.append((fd, off + got, buf[got:]))
            else:
                self._read_fully(fd, off + got, buf[got:])
        for fd, off, buf in pending:
            self._read_fully(fd, off, buf)
        self._trim()

    def _read_fully(self, fd: int, offset: int, buf: memoryview) -> None:
        want, done = len(buf), 0
        while done < want:
            got = os.preadv(fd, [buf[done:]], offset + done)
            if got <= 0:
                raise OSError(f"{self._path(fd)}: short read at byte {offset} ({done} of {want} bytes): "
                              "truncated ark?")
            done += got


class RowIndex:
    """Where the rows of a fixed list of scp entries are, in arrays indexed like the list (each entry's
    header read when it is first needed): a batch named by list positions is read with its offsets
    computed together, no lookup by name per chunk. The training loader's index of its utterances."""

    def __init__(self, rows: ArkRows, specs: Sequence[str]):
        self.rows, self.specs = rows, specs
        # Per entry: file (position in self.paths; -1: not looked at yet, -2: not in place), data
        # offset, rows, columns; one array, so that a batch gathers its entries in one step.
        self.where = np.zeros((len(specs), 4), np.int64)
        self.where[:, 0] = -1
        self.paths: list[str] = []
        self._file_of: dict[str, int] = {}

    def _learn(self, positions: Sequence[int]) -> None:
        for j in positions:
            lay = self.rows.layout(self.specs[j])
            if lay is None or lay[4].itemsize != 4:
                self.where[j, 0] = -2
                continue
            f = self._file_of.get(lay[0])
            if f is None:
                f = self._file_of[lay[0]] = len(self.paths)
                self.paths.append(lay[0])
            self.where[j] = f, lay[1], lay[2], lay[3]

    def read(self, positions: np.ndarray, starts: np.ndarray, out: np.ndarray) -> list[int]:
        """Chunk ``k``, rows ``starts[k] ..`` of entry ``positions[k]``, into ``out[k]`` (B, L, D), float32,
        C order. Returns the ``k`` left untouched (as :meth:`ArkRows.read_chunks`)."""
        B, L, D = out.shape
        if out.dtype != np.float32 or not out.flags.c_contiguous:
            return list(range(B))
        self.rows._own()
        positions, starts = np.asarray(positions, np.int64), np.asarray(starts, np.int64)
        w = self.where[positions]
        if (w[:, 0] == -1).any():
            new = w[:, 0] == -1
            self.rows.announce([self.specs[j] for j in positions[new].tolist()], starts[new].tolist(), L, D)
            self._learn(np.unique(positions[new]).tolist())
            w = self.where[positions]
        ok = (w[:, 0] >= 0) & (w[:, 3] == D) & (starts >= 0) & (starts + L <= w[:, 2])
        offsets = w[:, 1] + starts * (D * 4)
        if ok.all():  # the usual batch
            ks, left = range(B), []
        else:
            ks, left = np.flatnonzero(ok), np.flatnonzero(~ok).tolist()
            w, offsets, ks = w[ks], offsets[ks], ks.tolist()
        f = w[:, 0].tolist()
        fds = {i: self.rows._fd(self.paths[i]) for i in set(f)}
        self.rows._read_at([fds[i] for i in f], offsets.tolist(), ks, out)
        return left
