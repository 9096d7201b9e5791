"""Table files of a data dir: their key kinds, C-locale order, reading them
line by line, and writing them only when their content changes."""
from __future__ import annotations

import os
from pathlib import Path

# Recording-keyed files (when a segments file exists, wav.scp is one of them).
RECO_FILES = ("reco2dur", "reco2file_and_channel", "reco2num_samples")
# Speaker-keyed files besides spk2utt (regenerated, never copied).
SPK_KEYED = ("spk2gender", "cmvn.scp")
# One utterance id per line, a subset of utt2spk.
UTT_LISTS = ("unknown_spk_utts",)
# Small files copied unchanged into derived dirs.
VERBATIM = ("frame_shift",)


def ckey(s: str) -> bytes:
    """Sort key of C-locale order (byte order of UTF-8)."""
    return s.encode("utf-8", "surrogateescape")


def c_sorted(keys) -> list[str]:
    """``sorted(keys, key=ckey)``; ASCII keys (the usual case) are compared as
    they are, which orders them the same and is several times faster."""
    keys = list(keys)
    if all(k.isascii() for k in keys):
        keys.sort()
    else:
        keys.sort(key=ckey)
    return keys


def c_less(a: str, b: str) -> bool:
    """``ckey(a) < ckey(b)`` without encoding ASCII strings."""
    if a.isascii() and b.isascii():
        return a < b
    return ckey(a) < ckey(b)


def iter_lines(path: str | os.PathLike):
    """Lines of a Kaldi table as ``(lineno, key, value)``, one at a time; blank
    lines skipped, duplicates and disorder kept (for the validator to report)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            parts = line.split(None, 1)
            yield lineno, parts[0], (parts[1].strip() if len(parts) > 1 else "")


def read_lines(path: str | os.PathLike) -> list[tuple[int, str, str]]:
    """All of :func:`iter_lines` as a list."""
    return list(iter_lines(path))


def classify(path: str | os.PathLike) -> dict[str, str]:
    """Map each table file of a data dir to its key kind: ``utt`` (keys are
    utterances), ``spk``, ``reco`` (recordings, with segments) or ``uttlist``.
    ``spk2utt`` and unknown files are left out."""
    path = Path(path)
    has_segments = (path / "segments").is_file()
    kinds = {}
    for p in sorted(path.iterdir(), key=lambda p: ckey(p.name)):
        n = p.name
        if not p.is_file() or n.startswith("."):
            continue
        if n == "wav.scp":
            kinds[n] = "reco" if has_segments else "utt"
        elif n in RECO_FILES:
            kinds[n] = "reco"
        elif n in SPK_KEYED or (n.startswith("spk2") and n != "spk2utt"):
            kinds[n] = "spk"
        elif n in UTT_LISTS:
            kinds[n] = "uttlist"
        elif n in ("utt2spk", "segments", "text") or n.startswith("utt2") or n.endswith(".scp"):
            kinds[n] = "utt"
    return kinds


def write_if_changed(path: Path, lines) -> bool:
    """Write lines (any iterable) atomically unless the file already holds
    exactly them (so an unchanged output keeps its time stamp and downstream
    steps stay up to date). Written in pieces to a temporary file beside it and
    compared there, so a big table is never held twice in memory."""
    import filecmp
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            block: list[str] = []
            for ln in lines:
                block.append(ln)
                if len(block) >= 8192:
                    f.write("\n".join(block) + "\n")
                    block.clear()
            if block:
                f.write("\n".join(block) + "\n")
        if path.is_file() and filecmp.cmp(tmp, path, shallow=False):
            os.unlink(tmp)
            return False
        # mkstemp makes the file 0600; give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def table_lines(table: dict[str, str]) -> list[str]:
    return [f"{k} {table[k]}" if table[k] != "" else k for k in c_sorted(table)]


def read_first(path: str | os.PathLike) -> tuple[dict[str, str], int]:
    """``(key -> value keeping the first of duplicated keys, number of lines)``
    of a table: what ``first_dups(iter_lines(path))`` gives, without the
    per-line tuples (the tools' hot path on big dirs)."""
    out: dict[str, str] = {}
    n = 0
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.split(None, 1)
            if not parts:
                continue
            n += 1
            if parts[0] not in out:
                out[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return out, n


def read_keys(path: str | os.PathLike) -> tuple[set[str], int]:
    """``(set of keys, number of lines)`` of a table."""
    keys = set()
    n = 0
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.split(None, 1)
            if parts:
                n += 1
                keys.add(parts[0])
    return keys, n


def first_dups(entries) -> dict[str, str]:
    """Key -> value keeping the first of duplicated keys."""
    out: dict[str, str] = {}
    for _, k, v in entries:
        out.setdefault(k, v)
    return out


def abbreviated(keys, limit: int = 5) -> str:
    """The first ``limit`` keys in C order, and how many more there are (for messages)."""
    keys = sorted(keys, key=ckey)
    s = ", ".join(keys[:limit])
    return s + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
