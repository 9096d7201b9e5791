"""Frame counts of the utterances of a data dir: from the headers of the
archives an scp points to, and from ``utt2num_frames``."""
from __future__ import annotations

import os
import re
import struct

from .tables import iter_lines

_HEADER_CACHE_LIMIT = 64


def _parse_binary_header(buf: bytes) -> int | None:
    """Rows of a Kaldi binary matrix (or length of a vector) from the bytes at
    its offset; None when the object is of a kind we do not parse."""
    if not buf.startswith(b"\0B"):
        return None
    tok_end = buf.find(b" ", 2)
    if tok_end < 0:
        return None
    tok = buf[2:tok_end]
    p = tok_end + 1
    if tok in (b"FM", b"DM"):
        if buf[p] != 4:
            return None
        return struct.unpack_from("<i", buf, p + 1)[0]
    if tok in (b"FV", b"DV"):
        if buf[p] != 4:
            return None
        return struct.unpack_from("<i", buf, p + 1)[0]
    if tok in (b"CM", b"CM2", b"CM3"):
        # GlobalHeader without its format field: float min, float range, int rows, int cols.
        return struct.unpack_from("<i", buf, p + 8)[0]
    return None


def scp_num_rows(scp: str | os.PathLike, utts=None) -> tuple[dict[str, int], dict[str, str]]:
    """Rows (frames) of every matrix/vector an scp points to, reading only the
    headers. Returns ``(rows, errors)``; ``errors`` maps an utterance to why it
    could not be read. ``utts`` limits the work to those keys."""
    rows: dict[str, int] = {}
    errors: dict[str, str] = {}
    handles: dict[str, object] = {}
    try:
        for _, utt, spec in iter_lines(scp):
            if utts is not None and utt not in utts:
                continue
            m = re.fullmatch(r"(.+):(\d+)", spec)
            n = None
            if m and not spec.endswith("|"):
                fn, off = m.group(1), int(m.group(2))
                try:
                    f = handles.get(fn)
                    if f is None:
                        if len(handles) >= _HEADER_CACHE_LIMIT:
                            for h in handles.values():
                                h.close()
                            handles.clear()
                        f = handles[fn] = open(fn, "rb")
                    f.seek(off)
                    n = _parse_binary_header(f.read(32))
                except OSError as e:
                    errors[utt] = f"cannot read {fn}: {e.strerror}"
                    continue
            if n is None:  # text archives, pipes, unusual types: let kaldiio read it
                try:
                    import kaldiio

                    a = kaldiio.load_mat(spec)
                    n = int(a.shape[0]) if getattr(a, "ndim", 0) >= 1 else 1
                except Exception as e:  # noqa: BLE001 - any read failure is reported
                    errors[utt] = f"cannot read '{spec}': {e}"
                    continue
            rows[utt] = n
    finally:
        for h in handles.values():
            h.close()
    return rows, errors


def int_values(table: dict[str, str]) -> dict[str, int]:
    """The entries of a text table whose value is an integer (utt2num_frames);
    malformed lines are left to the format checks that report them."""
    out = {}
    for key, value in table.items():
        try:
            out[key] = int(value)
        except ValueError:
            pass
    return out
