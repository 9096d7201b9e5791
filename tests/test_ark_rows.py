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
from pyxv.train.data import ChunkBatches, FeatureSource, chunk


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
