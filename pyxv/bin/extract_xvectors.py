"""Extract x-vectors of a data dir's utterances, and merge job outputs.

python -m pyxv.bin.extract_xvectors extract [--job 1 --nj 2] [--use-gpu yes] [--batch-frames N] exp/xvector_clean/final.pt data/demo/all OUT/xvector.1.ark
python -m pyxv.bin.extract_xvectors merge --nj 2 data/demo/all OUT
python -m pyxv.bin.extract_xvectors inputs exp/xvector_clean/final.pt   # feats.scp, vad.scp (or wav.scp)
  -> OUT/xvector.{ark,scp}, OUT/spk_xvector.{ark,scp} (speaker means), OUT/num_utts.ark
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from pyxv.io import OutputError, atomic_open, read_table

log = logging.getLogger("pyxv.extract")


def cmd_extract(a) -> int:
    from pyxv.device import NoGpuError, device_for
    from pyxv.extract import ExtractionMemoryError, extract_embeddings, write_embeddings
    from pyxv.nnet.cpu_embedder import for_cpu_extraction
    from pyxv.train.checkpoint import CheckpointError, load_model

    for opt, v in (("--chunk-frames", a.chunk_frames), ("--batch-frames", a.batch_frames)):
        if v < 0:
            print(f"extract_xvectors: {opt} {v}: must be positive (0: the model config's)", file=sys.stderr)
            return 1
    try:
        device = device_for(a.use_gpu)
    except NoGpuError as e:
        print(f"extract_xvectors: {e}", file=sys.stderr)
        return 1
    try:
        net, ck = load_model(a.model, device)
    except CheckpointError as e:
        print(f"extract_xvectors: {e}", file=sys.stderr)
        return 1
    cfg = ck["config"]
    ec = cfg["extract"]
    data = Path(a.data)
    front = type(net).frontend(cfg, ck.get("extra") or {}, Path(a.model).parent)
    for f in front.data_requirements:
        if not (data / f).is_file():
            print(f"extract_xvectors: {data / f} does not exist ({front.describe()} needs it)", file=sys.stderr)
            return 1
    src, raw = front.data_source(data), front.fallback_source(data)
    utts = front.utterances(data)[a.job - 1::a.nj]
    chunk = a.chunk_frames or ec["chunk_frames"]
    batch_frames = a.batch_frames or ec["batch_frames"]
    stats: dict = {}
    t0 = time.time()
    embedder = for_cpu_extraction(net)   # the model no longer changes here: BN folded, oneDNN fusions
    try:
        # Inputs follow the model onto its device.
        n = write_embeddings(extract_embeddings(embedder, src, utts, chunk_frames=chunk,
                                                batch_frames=batch_frames, min_frames=ec["min_frames"],
                                                raw_source=raw, stats=stats), a.out_ark)
    except (OutputError, ExtractionMemoryError) as e:
        print(f"extract_xvectors: FATAL: {e}; nothing of this job kept", file=sys.stderr)
        return 1
    log.info("%d x-vectors of dim %d written to %s on %s in %.1fs; %d utterances failed",
             n, net.embed_dim, a.out_ark, device, time.time() - t0, stats.get("failed", 0))
    return 0 if n > 0 or not utts else 1


def cmd_inputs(a) -> int:
    """Print the data-dir files the model's front-end reads, the main one first."""
    from pyxv.train.checkpoint import CheckpointError, load_model

    try:
        net, ck = load_model(a.model)
    except CheckpointError as e:
        print(f"extract_xvectors: {e}", file=sys.stderr)
        return 1
    front = type(net).frontend(ck["config"], ck.get("extra") or {}, Path(a.model).parent)
    print("\n".join(front.data_requirements))
    return 0


def cmd_merge(a) -> int:
    import kaldiio

    from pyxv.extract import speaker_means, write_embeddings

    out = Path(a.out_dir)
    parts = [out / f"xvector.{j}.scp" for j in range(1, a.nj + 1)]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        print(f"extract_xvectors merge: missing job outputs {missing}", file=sys.stderr)
        return 1
    pairs = {}
    for p in parts:
        for k, v in kaldiio.load_scp_sequential(str(p)):
            pairs[k] = v
    # num_utts.ark is written last and marks a complete set (steps/extract_xvectors.sh
    # checks it): gone first, so a merge that fails half way is redone, never trusted.
    (out / "num_utts.ark").unlink(missing_ok=True)
    try:
        n = write_embeddings(((k, pairs[k]) for k in sorted(pairs, key=lambda s: s.encode())), out / "xvector.ark")
        means, counts = speaker_means(out / "xvector.scp", read_table(Path(a.data) / "utt2spk"))
        write_embeddings(means.items(), out / "spk_xvector.ark")
        with atomic_open(out / "num_utts.ark", "w", encoding="utf-8") as f:
            for s in means:
                f.write(f"{s} {counts[s]}\n")
    except OutputError as e:
        print(f"extract_xvectors merge: FATAL: {e}", file=sys.stderr)
        return 1
    for p in parts:  # job archives are merged into xvector.ark
        os.unlink(p)
        os.unlink(p.with_suffix(".ark"))
    n_data = len(read_table(Path(a.data) / "utt2spk"))
    log.info("merged %d x-vectors (%d utterances in %s, %d missing), %d speakers", n, n_data, a.data,
             n_data - n, len(means))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract")
    e.add_argument("--job", type=int, default=1)
    e.add_argument("--nj", type=int, default=1)
    e.add_argument("--use-gpu", choices=["auto", "yes", "no"], default="no")
    e.add_argument("--chunk-frames", type=int, default=0, help="override extract.chunk_frames of the model config")
    e.add_argument("--batch-frames", type=int, default=0,
                   help="frames per batch on a GPU (lower it when the GPU runs out of memory); "
                        "0: extract.batch_frames of the model config")
    e.add_argument("model")
    e.add_argument("data")
    e.add_argument("out_ark")
    i = sub.add_parser("inputs", help="the data-dir files a model reads")
    i.add_argument("model")
    m = sub.add_parser("merge")
    m.add_argument("--nj", type=int, required=True)
    m.add_argument("data")
    m.add_argument("out_dir")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(levelname)s] %(message)s", stream=sys.stdout)
    if a.cmd == "inputs":
        return cmd_inputs(a)
    from pyxv.features.archive import exit_cleanly_on_signals
    exit_cleanly_on_signals()  # SIGTERM removes the temporary archive too
    if a.cmd == "extract":
        import torch
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        return cmd_extract(a)
    return cmd_merge(a)


if __name__ == "__main__":
    sys.exit(main())
