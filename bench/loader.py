#!/usr/bin/env python3
"""Training-chunk loader speed on a synthetic VoxCeleb-like feature set, the code
before issue 24 beside today's, in one run.

    python bench/loader.py [--gb 2.0] [--dir /tmp] [--batches 32 128] [--seconds 6]

Makes ``--gb`` GB of uncompressed float32 ark features (23 dims, the paper's MFCC;
utterance lengths drawn like VoxCeleb's voiced frames, 4-20 s; in 8 arks, as 8
preparation jobs write them) in a temporary folder, then measures:

- **read in-process**: chunks/s and MB/s of one epoch's batches built in the
  calling process (no DataLoader): ``before`` decodes the whole utterance per
  chunk (``kaldiio.load_mat`` through the 64-utterance cache, then cut and stacked),
  ``now`` reads only the chunk's rows straight into the batch (``ArkRows``);
- **DataLoader, one worker**: chunks/s at its output over 3 epochs, batch 32 and
  128: ``before`` as the trainer built it (a new loader each epoch, default
  prefetch); ``now`` the trainer's own loader (``pyxv.train.data.training_loader``:
  one for all epochs, its worker alive throughout, ``train.prefetch_factor``
  batches ahead, pinned memory where CUDA is there);
- each **hot** (page cache warm) and **cold** (every ark dropped from the page
  cache with ``posix_fadvise(DONTNEED)`` first; on a virtual disk the host may
  still cache it, so "cold" is a lower bound on the cost of a real cold read).

MB/s counts the bytes each path reads: the chunk's rows (now) or whole
utterances (before). Last, the demand of one H100 training the paper's ResNet-34,
from the network's FLOPs per chunk and a stated utilisation, shows the margin.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pyxv.features.archive import ArkScpWriter  # noqa: E402
from pyxv.features.ark_rows import ArkRows  # noqa: E402
from pyxv.nnet.config import DEFAULTS  # noqa: E402
from pyxv.features.network_input import FeatureSource, chunk  # noqa: E402
from pyxv.train.data import ChunkBatches, RunBatches, training_loader  # noqa: E402

DIM = 23


class ChunkBatchesBefore(ChunkBatches):
    """The loader before issue 24: the whole utterance decoded per chunk, then cut and stacked."""

    def __getitem__(self, i: int):
        L, items = self._batch(i)
        items = items[self.rank::self.world]
        xs, ys = [], []
        for utt, s, y in items:
            xs.append(chunk(self.source[utt], s, L))
            ys.append(y)
        return torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.int64)


def make_corpus(root: Path, gb: float, seed: int = 0) -> tuple[dict, int]:
    """Synthetic features: lengths like VoxCeleb's voiced frames, 8 arks; returns (utt2num_frames, bytes)."""
    rng = np.random.default_rng(seed)
    block = rng.standard_normal((4096, DIM)).astype(np.float32)  # content does not matter for I/O
    target = int(gb * 1e9)
    lens, total = [], 0
    while total < target:
        n = int(np.clip(rng.lognormal(np.log(700), 0.45), 400, 2000))
        lens.append(n)
        total += n * DIM * 4
    per = -(-len(lens) // 8)
    u2n = {}
    for j in range(8):
        with ArkScpWriter(root / f"feats.{j}.ark", root / f"feats.{j}.scp") as w:
            for i in range(j * per, min(len(lens), (j + 1) * per)):
                off = int(rng.integers(0, 4096 - 1))
                n = lens[i]
                reps = -(-(off + n) // 4096)
                w.write(f"spk{i % 6000:05d}-utt{i:07d}", np.concatenate([block] * reps)[off:off + n])
                u2n[f"spk{i % 6000:05d}-utt{i:07d}"] = n
    with open(root / "feats.scp", "w") as f:
        for j in range(8):
            f.write((root / f"feats.{j}.scp").read_text())
    return u2n, total


def drop_cache(root: Path) -> None:
    for ark in root.glob("*.ark"):
        fd = os.open(ark, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_cache(root: Path) -> None:
    for ark in root.glob("*.ark"):
        with open(ark, "rb") as f:
            while f.read(1 << 24):
                pass


def dataset(cls, root, u2n, utts, labels, batch, steps, epoch=1):
    src = FeatureSource(root / "feats.scp", utt2num_frames=u2n, cache=64)
    return cls(src, utts, labels, u2n, batch_size=batch, steps=steps, chunk_min=200, chunk_max=400,
               sampling="balanced", seed=777, epoch=epoch)


def bytes_read(ds, n_batches, whole: bool, u2n) -> float:
    """Bytes read by the first ``n_batches`` batches of ``ds`` (counted round again past its end): the
    chunks' rows, or with ``whole`` their whole utterances."""
    i = np.arange(n_batches) % len(ds)
    if not whole:
        return float((ds.chunk_lengths[i] * ds.index.shape[1]).sum() * DIM * 4)
    lens = np.array([u2n[u] for u in ds.utts], dtype=np.int64)
    return float(lens[ds.index[i]].sum() * DIM * 4)


def in_process(cls, root, u2n, utts, labels, batch, seconds, batches=None):
    """(chunks/s, MB/s read) of an epoch's batches read in this process, for ``seconds`` or, given,
    its first ``batches`` batches."""
    ds = dataset(cls, root, u2n, utts, labels, batch, steps=100000)
    t0, n = time.perf_counter(), 0
    while (n < batches if batches else time.perf_counter() - t0 < seconds) and n < len(ds):
        ds[n]
        n += 1
    dt = time.perf_counter() - t0
    return n * batch / dt, bytes_read(ds, n, cls is ChunkBatchesBefore, u2n) / dt / 1e6


def in_process_side_by_side(variants, root, u2n, utts, labels, batch, seconds, slice_s=0.2):
    """{name: (chunks/s, MB/s read)} of the variants read in this process in turns of ``slice_s``
    until each has had ``seconds`` (a machine busy with other work slows all of them alike)."""
    dss = {name: dataset(cls, root, u2n, utts, labels, batch, steps=100000) for name, cls in variants}
    spent, done = dict.fromkeys(dss, 0.0), dict.fromkeys(dss, 0)
    while min(spent.values()) < seconds:
        for name, ds in dss.items():
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < slice_s:
                ds[done[name] % len(ds)]
                done[name] += 1
            spent[name] += time.perf_counter() - t0
    return {name: (done[name] * batch / spent[name],
                   bytes_read(ds, done[name], isinstance(ds, ChunkBatchesBefore), u2n) / spent[name] / 1e6)
            for name, ds in dss.items()}


class FromMemory(ChunkBatches):
    """The read's floor: the same chunks sliced from arks already in memory (no file, no kernel;
    the bytes moved and the loop over chunks)."""

    arks: dict[str, np.ndarray] = {}  # ark path -> its bytes, loaded by the caller

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        rows = ArkRows()
        lay = [rows.layout(self.source.table[u]) for u in self.utts]  # known before timing
        self._src = [self.arks[x[0]] for x in lay]
        self._data = np.array([x[1] for x in lay], dtype=np.int64)

    def __getitem__(self, i: int):
        L, idx, row = int(self.chunk_lengths[i]), self.index[i], DIM * 4
        x = np.empty((len(idx), L * row), np.uint8)
        for k, (j, o) in enumerate(zip(idx.tolist(), (self._data[idx] + self.starts[i] * row).tolist())):
            x[k] = self._src[j][o:o + L * row]
        return torch.from_numpy(x.view(np.float32).reshape(len(idx), L, DIM)), torch.from_numpy(self.labels[idx])


class OneMemcpy(FromMemory):
    """The bare floor: a batch's bytes moved in one memcpy, from a different place in memory each time."""

    def __getitem__(self, i: int):
        L, idx = int(self.chunk_lengths[i]), self.index[i]
        nbytes, flat = len(idx) * L * DIM * 4, self._src[0]
        o = (i * 7919 * 4096) % (len(flat) - nbytes)
        x = np.empty(nbytes, np.uint8)
        x[:] = flat[o:o + nbytes]
        return torch.from_numpy(x.view(np.float32).reshape(len(idx), L, DIM)), torch.from_numpy(self.labels[idx])


def through_loader(cls, root, u2n, utts, labels, batch, seconds, persistent: bool, per_epoch=None):
    """(chunks, bytes of batches, seconds) at a one-worker DataLoader's output over 3 epochs of
    ``per_epoch`` batches, by default about ``seconds / 3`` each."""
    if per_epoch is None:  # from a short in-process probe of this variant
        probe_cps, _ = in_process(cls, root, u2n, utts, labels, batch, 0.5)
        per_epoch = max(20, int(probe_cps * seconds / 3 / batch))
    t0 = time.perf_counter()
    if persistent:  # the trainer's own loader: one for all epochs, its worker alive throughout
        src = FeatureSource(root / "feats.scp", utt2num_frames=u2n, cache=64)
        batches = RunBatches(src, utts, labels, u2n, batch_size=batch, steps=per_epoch, chunk_min=200,
                             chunk_max=400, sampling="balanced", seed=777)
        loader = training_loader(batches, epochs=3, num_workers=1,
                                 prefetch_factor=DEFAULTS["train"]["prefetch_factor"],
                                 pin_memory=torch.cuda.is_available())
        shapes = [x.shape for x, _ in loader]
    else:
        shapes = []
        for ep in (1, 2, 3):
            ds = dataset(cls, root, u2n, utts, labels, batch, per_epoch, ep)
            loader = torch.utils.data.DataLoader(ds, batch_size=None, sampler=range(per_epoch), num_workers=1)
            shapes += [x.shape for x, _ in loader]
    return sum(b for b, _, _ in shapes), sum(b * L * d * 4 for b, L, d in shapes), time.perf_counter() - t0


def h100_demand(util: float, flops_peak: float = 989e12) -> tuple[float, float]:
    """(training FLOPs per 300-frame chunk, chunks/s one H100 consumes at ``util`` of bf16 dense peak)."""
    from torch.utils.flop_counter import FlopCounterMode

    from pyxv.nnet.config import build_encoder, load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "conf" / "xvector_resnet34.yaml")
    net = build_encoder(cfg, 5994)  # VoxCeleb2 dev speakers
    x = torch.zeros(2, 300, DIM)  # two chunks: batch norm needs more than one in training mode
    with FlopCounterMode(display=False) as fc:
        net(x, torch.zeros(2, dtype=torch.int64))
    fwd = fc.get_total_flops() / 2
    train = 3 * fwd  # backward about twice the forward
    return train, util * flops_peak / train


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=2.0)
    p.add_argument("--dir", default=None, help="where the temporary features go [system temp]")
    p.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    p.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    p.add_argument("--keep", action="store_true", help="keep the features (and reuse them with --dir)")
    a = p.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="pyxv_loader_", dir=a.dir))
    try:
        t = time.time()
        u2n, total = make_corpus(root, a.gb)
        print(f"features: {len(u2n)} utterances, {total / 1e9:.2f} GB in 8 arks under {root} "
              f"(made in {time.time() - t:.0f} s)")
        utts = sorted(u2n)
        labels = [int(u[3:8]) for u in utts]
        variants = (("before", ChunkBatchesBefore), ("now", ChunkBatches))
        floors = (("floor: sliced from memory", FromMemory), ("floor: one memcpy per batch", OneMemcpy))
        FromMemory.arks = {str(p): np.fromfile(p, np.uint8) for p in root.glob("*.ark")}
        rows = []
        for temp in ("hot", "cold"):
            for batch in a.batches:
                if temp == "hot":  # side by side: in-process in turns, the loaders in alternating rounds
                    warm_cache(root)
                    read = in_process_side_by_side(variants + floors, root, u2n, utts, labels, batch, a.seconds)
                    dl = {name: [0, 0, 0.0] for name, _ in variants}
                    for _ in range(2):
                        for name, cls in variants:
                            for i, v in enumerate(through_loader(cls, root, u2n, utts, labels, batch, a.seconds / 2,
                                                                 persistent=name == "now")):
                                dl[name][i] += v
                else:  # each from a dropped cache, the same first batches (about a quarter of the utterances)
                    k = max(8, len(utts) // (4 * batch))
                    read, dl = {}, {}
                    for name, cls in variants:
                        drop_cache(root)
                        read[name] = in_process(cls, root, u2n, utts, labels, batch, 0, batches=k)
                        drop_cache(root)
                        dl[name] = through_loader(cls, root, u2n, utts, labels, batch, 0, persistent=name == "now",
                                                  per_epoch=max(4, k // 3))
                for name, _ in variants:
                    (cps, mbs), (chunks, nbytes, secs) = read[name], dl[name]
                    rows.append((temp, batch, name, cps, mbs, chunks / secs, nbytes / secs / 1e6))
                    print(f"  {temp:4s} batch {batch:3d} {name:6s}: in-process {cps:8.0f} chunks/s {mbs:7.0f} MB/s;"
                          f" DataLoader (1 worker) {rows[-1][5]:8.0f} chunks/s {rows[-1][6]:6.0f} MB/s", flush=True)
                if temp == "hot":
                    for name, _ in floors:
                        rows.append((temp, batch, name, *read[name], None, None))
                        print(f"  hot  batch {batch:3d} {name}: {read[name][0]:8.0f} chunks/s", flush=True)
        print("\n| cache | batch | path | in-process chunks/s | MB/s read | DataLoader 1 worker chunks/s | its MB/s |")
        print("|---|---|---|---|---|---|---|")
        for temp, batch, name, cps, mbs, dl, dl_mbs in rows:
            loader = "| | |" if dl is None else f"| {dl:.0f} | {dl_mbs:.0f} |"
            print(f"| {temp} | {batch} | {name} | {cps:.0f} | {mbs:.0f} {loader}")
        print("\n(MB/s read: the bytes each path reads, whole utterances before, the chunks' rows now; a DataLoader's"
              " MB/s: the batches it delivers. \"cold\": every ark dropped from this machine's page cache first; on a"
              " virtual disk the host's cache may still hold it; each path reads the same first batches, about a quarter"
              " of the utterances, from it. Hot: the two paths and the floors in turns. Floors: the same chunks copied from arks already in"
              " memory, no file and no kernel; and the same bytes moved in one memcpy per batch.)\n")
        for temp in ("hot", "cold"):
            for batch in a.batches:
                b = {r[2]: r for r in rows if r[0] == temp and r[1] == batch}
                line = (f"{temp} batch {batch}: in-process read {b['now'][3] / b['before'][3]:.1f}x before, "
                        f"DataLoader {b['now'][5] / b['before'][5]:.1f}x before")
                if temp == "hot":
                    f = b["floor: sliced from memory"][3]
                    line += (f"; the read at {b['now'][3] / f:.0%} of the sliced-from-memory floor "
                             f"(which is {f / b['before'][3]:.1f}x before)")
                print(line)
        train_flops, _ = h100_demand(1.0)
        print(f"\nH100 demand, paper's ResNet-34 (23 x 300-frame chunk, 5994 speakers): "
              f"{train_flops / 1e9:.2f} GFLOP per chunk for training (3 x forward)")
        for util in (0.2, 0.4):
            _, d = h100_demand(util)
            print(f"  at {util:.0%} of 989 TFLOP/s (bf16 dense peak): {d:,.0f} chunks/s")
        best = max(r[5] for r in rows if r[0] == "hot" and r[2] == "now")
        print(f"  one loader worker gives {best:,.0f} chunks/s (hot); a GPU's 4 workers about 4x that, CPU allowing")
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
