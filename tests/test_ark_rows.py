"""Chunks read in place from Kaldi arks (pyxv.features.ark_rows) equal kaldiio's whole-matrix path."""
from __future__ import annotations

import os

import kaldiio
import numpy as np
import pytest
import torch

from pyxv.features.archive import ArkScpWriter
from pyxv.features.ark_rows import ArkRows
from pyxv.io import read_table
from pyxv.features.network_input import FeatureSource, chunk
from pyxv.train.data import ChunkBatches


@pytest.fixture
def ark(tmp_path):
    rng = np.random.default_rng(0)
    mats = {f"u{i:02d}": rng.standard_normal((n, 23)).astype(np.float32)
            for i, n in enumerate([5, 40, 123, 300, 301, 1000])}
    with ArkScpWriter(tmp_path / "f.ark", tmp_path / "f.scp", num_frames=tmp_path / "utt2num_frames") as w:
        for k, v in mats.items():
            w.write(k, v)
    return tmp_path, mats


def test_rows_in_place_equal_the_whole_matrix_cut(ark):
    d, mats = ark
    rows = ArkRows()
    for utt, spec in read_table(d / "f.scp").items():
        m = mats[utt]
        assert rows.num_rows(spec) == len(m)
        for start, n in ((0, 1), (0, len(m)), (len(m) // 3, max(1, len(m) // 2)), (len(m) - 1, 1)):
            out = np.full((n, 23), np.nan, np.float32)
            assert rows.read_into(spec, start, out)
            np.testing.assert_array_equal(out, m[start:start + n])
        out = np.zeros((2, 23), np.float32)
        assert not rows.read_into(spec, len(m) - 1, out) and not out.any()  # past the end: caller decodes


def test_feature_source_chunks_equal_the_old_path_bit_for_bit(ark):
    d, mats = ark
    src = FeatureSource(d / "f.scp", utt2num_frames=d / "utt2num_frames")
    rng = np.random.default_rng(1)
    for utt, m in mats.items():
        for _ in range(20):
            L = int(rng.integers(1, 400))
            s = int(rng.integers(0, max(1, len(m) - L + 1)))
            np.testing.assert_array_equal(src.read_chunk(utt, s, L), chunk(m, s, L))  # incl. short ones repeated
    # whole batches: the in-place path against decoding each utterance, as the loader did before
    lengths = {u: len(m) for u, m in mats.items()}
    utts = sorted(mats)
    cb = ChunkBatches(src, utts, list(range(len(utts))), lengths, batch_size=8, steps=6, chunk_min=20,
                      chunk_max=60, seed=3)
    for i in range(len(cb)):
        x, y = cb[i]
        L, items = cb._batch(i)
        ref = np.stack([chunk(mats[u], s, L) for u, s, _ in items])
        assert x.dtype == torch.float32 and torch.equal(x, torch.from_numpy(ref))
        assert y.tolist() == [lab for _, _, lab in items]


def test_compressed_and_double_matrices_still_read(tmp_path):
    m = np.random.default_rng(2).standard_normal((50, 4))
    kaldiio.save_ark(str(tmp_path / "c.ark"), {"cm": m.astype(np.float32)}, scp=str(tmp_path / "c.scp"),
                     compression_method=2)
    kaldiio.save_ark(str(tmp_path / "d.ark"), {"dm": m}, scp=str(tmp_path / "d.scp"))
    rows = ArkRows()
    cm_spec = read_table(tmp_path / "c.scp")["cm"]
    assert rows.layout(cm_spec) is None  # compressed: kaldiio decodes it
    src = FeatureSource(tmp_path / "c.scp")
    np.testing.assert_array_equal(src.read_chunk("cm", 10, 20), np.asarray(kaldiio.load_mat(cm_spec))[10:30])
    dm_spec = read_table(tmp_path / "d.scp")["dm"]
    out = np.empty((20, 4), np.float32)
    assert rows.read_into(dm_spec, 10, out)
    np.testing.assert_array_equal(out, m[10:30].astype(np.float32))


def test_truncated_ark_names_the_file(ark):
    d, mats = ark
    spec = read_table(d / "f.scp")["u05"]
    rows = ArkRows()
    assert rows.num_rows(spec) == 1000
    size = os.path.getsize(d / "f.ark")
    os.truncate(d / "f.ark", size - 23 * 4 * 100)
    with pytest.raises(OSError, match=r"f.ark: short read at byte \d+ .*truncated ark"):
        rows.read_into(spec, 950, np.empty((50, 23), np.float32))


def test_forked_worker_opens_its_own_files(ark):
    d, mats = ark
    spec = read_table(d / "f.scp")["u03"]
    rows = ArkRows()
    out = np.empty((10, 23), np.float32)
    assert rows.read_into(spec, 0, out)
    parent_fd = next(iter(rows._fds.values()))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not reuse (or close) the parent's descriptor
        ok = rows.read_into(spec, 5, out) and next(iter(rows._fds.values())) != parent_fd \
            and np.array_equal(out, mats["u03"][5:15])
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"
    os.fstat(parent_fd)  # still open in the parent


# ---------------------------------------------------------------- whole batches (ArkRows.read_chunks)
@pytest.fixture
def mixed(tmp_path):
    """Arks of every kind an scp may name: float32 (two arks), float64, compressed, plus a short utterance."""
    rng = np.random.default_rng(4)
    f32 = {f"f{i}": rng.standard_normal((n, 23)).astype(np.float32) for i, n in enumerate([80, 300, 512, 30])}
    with ArkScpWriter(tmp_path / "a.ark", tmp_path / "a.scp") as w:
        for k in ("f0", "f1"):
            w.write(k, f32[k])
    with ArkScpWriter(tmp_path / "b.ark", tmp_path / "b.scp") as w:
        for k in ("f2", "f3"):
            w.write(k, f32[k])
    dm = {"d0": rng.standard_normal((200, 23))}
    kaldiio.save_ark(str(tmp_path / "d.ark"), dm, scp=str(tmp_path / "d.scp"))
    cm = {"c0": rng.standard_normal((150, 23)).astype(np.float32)}
    kaldiio.save_ark(str(tmp_path / "c.ark"), cm, scp=str(tmp_path / "c.scp"), compression_method=2)
    with open(tmp_path / "all.scp", "w") as f:
        for name in ("a", "b", "d", "c"):
            f.write((tmp_path / f"{name}.scp").read_text())
    table = read_table(tmp_path / "all.scp")
    ref = {u: np.asarray(kaldiio.load_mat(table[u]), dtype=np.float32) for u in table}  # what the old path decoded
    return tmp_path, table, ref


def _plan(ref, L, n, seed):
    rng = np.random.default_rng(seed)
    utts = [sorted(ref)[j] for j in rng.integers(0, len(ref), n)]
    return utts, [int(rng.integers(0, max(1, len(ref[u]) - L + 1))) for u in utts]


def test_batches_of_every_kind_equal_the_old_path(mixed):
    d, table, ref = mixed
    src = FeatureSource(d / "all.scp")
    for seed, L in enumerate((1, 40, 60, 79, 200)):
        utts, starts = _plan(ref, L, 32, seed)
        out = np.full((32, L, 23), np.nan, np.float32)
        assert src.read_chunks(utts, starts, L, out) is out
        np.testing.assert_array_equal(out, np.stack([chunk(ref[u], s, L) for u, s in zip(utts, starts)]))
    # what ArkRows leaves to the caller: compressed, float64, and chunks longer than their utterance
    rows = ArkRows()
    utts = ["f0", "c0", "d0", "f3", "f1"]
    out = np.zeros((5, 40, 23), np.float32)
    assert rows.read_chunks([table[u] for u in utts], [10, 10, 10, 0, 260], out) == [1, 2, 3]
    assert not out[[1, 2, 3]].any()
    np.testing.assert_array_equal(out[0], ref["f0"][10:50])
    np.testing.assert_array_equal(out[4], ref["f1"][260:300])
    # a buffer of other columns or not float32 C order: nothing read in place
    assert rows.read_chunks([table["f0"]], [0], np.zeros((1, 10, 22), np.float32)) == [0]
    assert rows.read_chunks([table["f0"]], [0], np.zeros((1, 10, 23), np.float64)) == [0]


def test_loader_batches_of_every_kind_equal_the_old_path(mixed):
    """ChunkBatches reads by position (RowIndex): compressed, float64 and short utterances still decoded."""
    d, table, ref = mixed
    utts = sorted(ref)
    lengths = {u: len(m) for u, m in ref.items()}
    for max_open in (128, 1):  # 1: every batch needs more open arks than allowed, closed only after the batch
        src = FeatureSource(d / "all.scp", utt2num_frames=lengths)
        src._rows.max_open = max_open
        cb = ChunkBatches(src, utts, list(range(len(utts))), lengths, batch_size=12, steps=8, chunk_min=20,
                          chunk_max=120, sampling="utterance", seed=11)
        for i in range(len(cb)):
            x, _ = cb[i]
            L, items = cb._batch(i)
            assert torch.equal(x, torch.from_numpy(np.stack([chunk(ref[u], s, L) for u, s, _ in items])))
        assert len(src._rows._fds) <= max_open
    places = cb._places
    assert sorted(places.where[[utts.index(u) for u in ("c0", "d0")], 0].tolist()) == [-2, -2]  # decoded, not in place


def _drop_from_page_cache(path) -> bool:
    """Drop a file from the page cache; False where the file system keeps it (tmpfs) or cannot tell."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        try:
            os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False
    finally:
        os.close(fd)


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="reads that do not wait for the disk are Linux-only")
def test_a_cold_batch_announces_its_reads_together_then_reads_them(mixed, monkeypatch):
    d, table, ref = mixed
    rows = ArkRows()
    utts, starts = _plan({u: ref[u] for u in ("f0", "f1", "f2")}, 30, 24, 7)
    specs = [table[u] for u in utts]
    for u in utts:
        rows.layout(table[u])  # headers read (and cached) before the data leave the page cache
    if not (_drop_from_page_cache(d / "a.ark") and _drop_from_page_cache(d / "b.ark")):
        pytest.skip("this file system keeps files in memory (tmpfs?): no cold read to test")
    calls = []
    advise, read = os.posix_fadvise, os.preadv
    monkeypatch.setattr(os, "posix_fadvise", lambda *a: (calls.append(("advise", a[3])), advise(*a))[1])
    monkeypatch.setattr(os, "preadv", lambda fd, bufs, off, *fl: (calls.append(("read", fl)), read(fd, bufs, off, *fl))[1])
    out = np.empty((24, 30, 23), np.float32)
    assert rows.read_chunks(specs, starts, out) == []
    np.testing.assert_array_equal(out, np.stack([ref[u][s:s + 30] for u, s in zip(utts, starts)]))
    advised = [i for i, c in enumerate(calls) if c == ("advise", os.POSIX_FADV_WILLNEED)]
    waited = [i for i, c in enumerate(calls) if c == ("read", ())]
    assert advised and waited and max(advised) < min(waited)  # every announcement before the first waiting read
    calls.clear()  # now cached: one read each, nothing announced
    assert rows.read_chunks(specs, starts, out) == [] and calls == [("read", (os.RWF_NOWAIT,))] * 24


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="reads that do not wait for the disk are Linux-only")
def test_a_cold_first_batch_announces_headers_and_rows_before_reading_a_header(mixed, monkeypatch):
    """The training loader's first look at its utterances (RowIndex): layouts unknown, page cache cold."""
    d, table, ref = mixed
    utts = ["f0", "f1", "f2", "f3"]
    index = ArkRows().index([table[u] for u in utts])
    if not (_drop_from_page_cache(d / "a.ark") and _drop_from_page_cache(d / "b.ark")):
        pytest.skip("this file system keeps files in memory (tmpfs?): no cold read to test")
    calls = []
    advise, pread = os.posix_fadvise, os.pread
    monkeypatch.setattr(os, "posix_fadvise", lambda *a: (calls.append("advise"), advise(*a))[1])
    monkeypatch.setattr(os, "pread", lambda *a: (calls.append("header"), pread(*a))[1])
    positions, starts = np.array([0, 1, 2, 1, 3]), np.array([5, 200, 400, 0, 0])
    out = np.empty((5, 25, 23), np.float32)
    assert index.read(positions, starts, out) == []
    np.testing.assert_array_equal(out, np.stack([ref[utts[j]][s:s + 25] for j, s in zip(positions, starts)]))
    assert calls.count("header") == 4 and calls.index("header") >= 2 * 5  # a header and the rows of each chunk
    assert set(calls[:calls.index("header")]) == {"advise"}


def test_without_reads_that_do_not_wait_every_read_waits(mixed, monkeypatch):
    d, table, ref = mixed
    read = os.preadv

    def no_nowait(fd, bufs, off, flags=0):
        if flags:
            raise OSError(95, "Operation not supported")  # EOPNOTSUPP, as some file systems answer
        return read(fd, bufs, off)

    monkeypatch.setattr(os, "preadv", no_nowait)
    rows = ArkRows()
    utts, starts = _plan({u: ref[u] for u in ("f0", "f1", "f2")}, 25, 16, 9)
    out = np.empty((16, 25, 23), np.float32)
    assert rows.read_chunks([table[u] for u in utts], starts, out) == []
    np.testing.assert_array_equal(out, np.stack([ref[u][s:s + 25] for u, s in zip(utts, starts)]))
    assert rows._nowait == 0


def test_truncated_or_corrupt_ark_is_one_error_naming_the_file(ark):
    d, mats = ark
    table = read_table(d / "f.scp")
    size = os.path.getsize(d / "f.ark")
    os.truncate(d / "f.ark", size - 23 * 4 * 100)          # the last matrix (u05, 1000 rows) loses 100
    src = FeatureSource(d / "f.scp", utt2num_frames=d / "utt2num_frames")
    with pytest.raises(OSError, match=r"f\.ark: the matrix at byte \d+ ends at byte \d+, past the end of the file"
                                      r" \(\d+ bytes\): truncated ark"):
        src.read_chunks(["u01", "u05"], [0, 0], 20, np.empty((2, 20, 23), np.float32))
    # a header that says float32 but gives negative rows
    off = int(table["u03"].rsplit(":", 1)[1])
    with open(d / "f.ark", "r+b") as f:
        f.seek(off + 6)
        f.write(np.int32(-3).tobytes())
    with pytest.raises(ValueError, match=r"f\.ark: matrix header at byte \d+ is corrupt \(FM with -3 rows x 23"):
        FeatureSource(d / "f.scp").read_chunks(["u03"], [0], 10, np.empty((1, 10, 23), np.float32))
    # an unknown matrix token: kaldiio's path, its error named by scp and utterance
    off = int(table["u02"].rsplit(":", 1)[1])
    with open(d / "f.ark", "r+b") as f:
        f.seek(off + 2)
        f.write(b"XX ")
    with pytest.raises(ValueError, match=r"f\.scp: utterance u02 \(.*f\.ark:\d+\): unreadable matrix"):
        FeatureSource(d / "f.scp").read_chunks(["u02"], [0], 10, np.empty((1, 10, 23), np.float32))


def test_loader_worker_batches_equal_the_in_process_ones(ark):
    """Through a DataLoader worker the batch is read into shared memory: the same values arrive."""
    from pyxv.train.data import RunBatches, training_loader

    d, mats = ark
    src = FeatureSource(d / "f.scp", utt2num_frames=d / "utt2num_frames")
    utts = sorted(mats)
    lengths = {u: len(m) for u, m in mats.items()}
    rb = RunBatches(src, utts, list(range(len(utts))), lengths, batch_size=6, steps=4, chunk_min=20, chunk_max=90,
                    seed=5)
    got = list(training_loader(rb, epochs=2, num_workers=1, prefetch_factor=2))
    assert len(got) == 8
    for (x, y), key in zip(got, [(e, s) for e in (1, 2) for s in range(4)]):
        L, items = rb.epoch(key[0])._batch(key[1])
        ref = np.stack([chunk(mats[u], s, L) for u, s, _ in items])
        assert torch.equal(x, torch.from_numpy(ref)) and y.tolist() == [lab for _, _, lab in items]


def test_a_wrapped_load_sees_every_chunk(ark):
    """A source whose load is replaced (a standardisation) decodes through it: nothing read in place."""
    d, mats = ark
    src = FeatureSource(d / "f.scp", utt2num_frames=d / "utt2num_frames")
    raw = src.load
    src.load = lambda u: raw(u) * 2 + 1
    assert not src.in_place and src.row_index(sorted(mats)) is None
    utts = sorted(mats)
    cb = ChunkBatches(src, utts, list(range(len(utts))), {u: len(m) for u, m in mats.items()}, batch_size=6,
                      steps=3, chunk_min=20, chunk_max=60, seed=2)
    for i in range(len(cb)):
        L, items = cb._batch(i)
        assert torch.equal(cb[i][0], torch.from_numpy(np.stack([chunk(mats[u] * 2 + 1, s, L) for u, s, _ in items])))
    np.testing.assert_array_equal(src.read_chunk("u03", 7, 30), mats["u03"][7:37] * 2 + 1)
