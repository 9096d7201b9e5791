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

Layout of a binary matrix at an scp offset (Kaldi's ``io.cc``/``kaldi-matrix.cc``):
``\\0B``, the token ``FM `` (float32) or ``DM `` (float64), then
``\\x04`` int32 rows and ``\\x04`` int32 columns (little-endian), then the data
row by row.
"""
from __future__ import annotations

import collections
import os
import re
import struct

import numpy as np

_HEADER = 15  # \0B + "FM " + \x04 + int32 + \x04 + int32
_DTYPES = {b"FM ": np.dtype("<f4"), b"DM ": np.dtype("<f8")}
_SPEC = re.compile(r"^(.+):(\d+)$")


class ArkRows:
    """Chunks of scp entries (``path:offset``) with file handles kept open, ``max_open`` at a time."""

    def __init__(self, max_open: int = 128):
        self.max_open = max_open
        self._fds: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._layout: dict[str, tuple | None] = {}
        self._pid = os.getpid()

    # ------------------------------------------------------------- files
    def _fd(self, path: str) -> int:
        if self._pid != os.getpid():  # a forked worker: the parent's descriptors are not ours to share
            self._fds.clear()
            self._pid = os.getpid()
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        fd = os.open(path, os.O_RDONLY)
        self._fds[path] = fd
        if len(self._fds) > self.max_open:
            os.close(self._fds.popitem(last=False)[1])
        return fd

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
        """(path, data offset, rows, cols, dtype) of an uncompressed binary matrix, else None."""
        if spec in self._layout:
            return self._layout[spec]
        lay = None
        m = _SPEC.match(spec)
        if m and not spec.rstrip().endswith("|"):
            path, off = m.group(1), int(m.group(2))
            head = os.pread(self._fd(path), _HEADER, off)
            dtype = _DTYPES.get(head[2:5])
            if head[:2] == b"\0B" and dtype is not None and len(head) == _HEADER and head[5] == 4 and head[10] == 4:
                rows, cols = struct.unpack("<i", head[6:10])[0], struct.unpack("<i", head[11:15])[0]
                lay = (path, off + _HEADER, rows, cols, dtype)
        self._layout[spec] = lay
        return lay

    def num_rows(self, spec: str) -> int | None:
        lay = self.layout(spec)
        return None if lay is None else lay[2]

    # ------------------------------------------------------------- reading
    def read_into(self, spec: str, start: int, out: np.ndarray) -> bool:
        """Rows ``start .. start + len(out)`` of the matrix at ``spec`` into ``out`` (float32, C order).

        Returns False, with ``out`` untouched, when the matrix is not an uncompressed binary one or the
        rows run past its end (the caller then decodes it whole)."""
        lay = self.layout(spec)
        if lay is None:
            return False
        path, data, rows, cols, dtype = lay
        n = out.shape[0]
        if start < 0 or start + n > rows or out.shape[1] != cols:
            return False
        offset = data + start * cols * dtype.itemsize
        if dtype == np.float32 and out.dtype == np.float32 and out.flags.c_contiguous:
            want = n * cols * 4
            got = os.preadv(self._fd(path), [memoryview(out).cast("B")], offset)
            if got != want:
                raise OSError(f"{path}: short read at byte {offset} ({got} of {want} bytes): truncated ark?")
        else:
            buf = os.pread(self._fd(path), n * cols * dtype.itemsize, offset)
            if len(buf) != n * cols * dtype.itemsize:
                raise OSError(f"{path}: short read at byte {offset}: truncated ark?")
            out[...] = np.frombuffer(buf, dtype=dtype).reshape(n, cols)
        return True
