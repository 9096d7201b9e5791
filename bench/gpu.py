#!/usr/bin/env python3
"""The GPU check: every GPU figure of the recipe from one prepared script.

    bench/gpu.sh [--out DIR]       on a machine with a GPU: a few minutes, under 10 in all
    bench/gpu.sh --dry-run-cpu     every part on the CPU at tiny sizes (CI: the script works end to end)
    bench/gpu.sh --pack [DIR]      here, where pip reaches PyPI: the wheels a bare GPU machine may
                                   lack, into DIR [bench/wheels]; carry DIR along with the checkout

On a machine without a GPU it says so in one line and exits 0. On synthetic
features made in a temporary directory (no corpus, no network, no ../shared):

1. training: the paper's ResNet-34 (conf/xvector_resnet34.yaml, 5994 classes)
   through the trainer (pyxv.train.trainer.train_classifier on prepared
   features in an ark, as stage 3 runs it) at per-GPU batch 32 and 128, in the
   config's train.amp (bf16, or fp16 with loss scaling where the GPU has no
   bf16): chunks/s between two synchronised steps, peak GPU memory. Chunks of
   a fixed 300 frames (the config's 200-400 mean): cuDNN tunes each new length
   once, which a run of a hundred steps would mostly measure;
2. extraction (stage 4) with the model written by 1: x real time through
   pyxv.extract.extract_embeddings on utterances of realistic lengths (0.1 s
   to 2.5 min) held in memory, at the config's extract.batch_frames and larger
   budgets; host syncs counted (CUDA sync debug mode); and a whole stage-4 job
   (pyxv.bin.extract_xvectors extract --use-gpu yes) reading an ark;
3. CPU vs GPU x-vectors (the CPU's stage-4 path, pyxv.nnet.cpu_embedder): largest
   relative difference and smallest cosine; over 1e-4 the check fails (exit 1);
4. the GE2E encoder (random weights): x real time (its 1.6 s windows of all
   utterances of a block share batches) and CPU vs GPU agreement;
5. stage 5: one fold of fine-tuning (pyxv.emotion.nnet.run_nnet_system,
   finetune_clean from the model of 1, CREMA-D-sized fold, a few epochs),
   its time and seconds per epoch.

A bare GPU machine is assumed to have only a Python with torch (any version
the recipe supports). kaldiio and PyYAML, which the trainer needs at run time
(features are read with kaldiio, config.yaml written with PyYAML), and numpy
come from wheels made beforehand with ``--pack``: each is extracted into a
temporary directory and put on sys.path only where the machine's Python lacks
it (kaldiio's wheel is pure Python, PyYAML falls back to pure Python without
its C extension; numpy's fits ``--python-version`` only).
That was chosen over making every import lazy because those two are used,
not only imported, and the trainer's modules are not this script's to change.
The paths used here need no scikit-learn, SciPy, soundfile or espeak-ng.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch   # the one package every machine this runs on has; numpy may come from a wheel (main)

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "bench" / "wheels"
# import name -> distribution name; numpy last (kaldiio needs it).
PACKED = {"kaldiio": "kaldiio", "yaml": "PyYAML", "numpy": "numpy"}
FAIL_REL = 1e-4
PREFIX = "gpu-check:"


def say(msg: str) -> None:
    print(f"{PREFIX} {msg}", flush=True)


# ------------------------------------------------------------------ wheels
def pack(dest: Path, python_version: str) -> int:
    """Download the wheels of PACKED, at this environment's versions, for ``python_version``."""
    import importlib.metadata as md
    import subprocess

    pins = []
    for dist in PACKED.values():
        try:
            pins.append(f"{dist}=={md.version(dist)}")
        except md.PackageNotFoundError:
            pins.append(dist)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           python_version, "--implementation", "cp", "-d", str(dest)]
    for plat in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"):
        cmd += ["--platform", plat]
    p = subprocess.run(cmd + pins, capture_output=True, text=True)
    if p.returncode != 0:
        err = [line for line in p.stderr.splitlines() if line.startswith("ERROR")] or p.stderr.splitlines()[-1:]
        print(f"bench/gpu.sh --pack: pip download failed: {' '.join(err)}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in dest.glob("*.whl")) / 2 ** 20
    say(f"{', '.join(pins)} for Python {python_version} in {dest} ({size:.1f} MiB); carry it with the checkout "
        f"and run bench/gpu.sh there")
    return 0


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def use_wheels(wheels: Path) -> list[str]:
    """Make PACKED importable: each module this Python lacks comes from its
    wheel in ``wheels``, extracted into a temporary directory put first on
    sys.path. Returns the modules taken from wheels; exits with one line when
    one is missing and has no wheel, or its wheel does not import here."""
    missing = []
    for mod in PACKED:
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(mod)
    if not missing:
        return []
    target = tempfile.mkdtemp(prefix="pyxv-gpu-wheels-")
    for mod in missing:
        found = sorted(w for w in wheels.glob("*.whl") if _norm(w.name.split("-")[0]) == _norm(PACKED[mod]))
        if not found:
            sys.exit(f"bench/gpu.sh: {mod} is not importable here and {wheels} has no {PACKED[mod]} wheel: run "
                     f"'bench/gpu.sh --pack' where pip reaches PyPI and carry {wheels} along")
        with zipfile.ZipFile(found[-1]) as z:
            z.extractall(target)
    sys.path.insert(0, target)
    importlib.invalidate_caches()
    for mod in missing:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            sys.exit(f"bench/gpu.sh: the {PACKED[mod]} wheel in {wheels} does not import on Python "
                     f"{sys.version.split()[0]} ({e}): make it with 'bench/gpu.sh --pack --python-version "
                     f"{sys.version_info[0]}.{sys.version_info[1]}'")
    return missing


# ------------------------------------------------------------------ sizes
FULL = {
    "model": {},                                # the paper's ResNet-34 as configured
    "speakers": 200, "utts_per_speaker": 2, "utt_frames": 1000, "classes": 5994,
    "chunk": 300, "batches": (32, 128), "warm_steps": 20, "steps": 100, "num_workers": None,
    "extract_seconds": 6 * 3600, "budgets": (None, 80_000, 320_000), "chunk_frames": None, "agree_utts": 40,
    "sync_utts": 256, "job_utts": 500,
    "ge2e": {}, "ge2e_seconds": 3600,
    "emo_train": 5950, "emo_test": 1490, "emo_speakers": 91, "emo_classes": 6, "emo_epochs": 3,
}
TINY = {
    "model": {"channels": [4, 8, 8, 16], "blocks": [1, 1, 1, 1], "heads": 2, "embed_dim": 16, "first_kernel": 3},
    "speakers": 6, "utts_per_speaker": 2, "utt_frames": 120, "classes": 5994,
    "chunk": 40, "batches": (4, 8), "warm_steps": 1, "steps": 2, "num_workers": 1,
    "extract_seconds": 60, "budgets": (None, 1500), "chunk_frames": 300, "agree_utts": 12,
    "sync_utts": 0, "job_utts": 6,
    "ge2e": {"hidden": 8, "layers": 1, "embed_dim": 8}, "ge2e_seconds": 20,
    "emo_train": 24, "emo_test": 8, "emo_speakers": 6, "emo_classes": 4, "emo_epochs": 1,
}


# ------------------------------------------------------------------ data
def lengths_for(rng, seconds: float, fps: int = 100):
    """Utterance lengths in frames, ``seconds`` in all, shaped like VoxCeleb's test
    utterances after VAD: mostly 3-15 s, 3 % under a second, 2 % of 1-2.5 min
    (chunked at 60 s)."""
    out, total = [], 0
    while total < seconds * fps:
        u = rng.random()
        if u < 0.03:
            n = rng.integers(10, 100)
        elif u < 0.05:
            n = rng.integers(6000, 15000)
        else:
            n = int(min(4000, max(100, rng.lognormal(np.log(700), 0.5))))
        out.append(int(n))
        total += n
    return out


def write_feats(d: Path, mats: dict, vad: bool = False) -> None:
    """feats.scp/ark and utt2num_frames (and an all-voiced-but-10 % vad.scp) in ``d``."""
    from pyxv.features.archive import ArkScpWriter

    d.mkdir(parents=True, exist_ok=True)
    with ArkScpWriter(d / "feats.ark", d / "feats.scp", num_frames=d / "utt2num_frames") as w:
        for u in sorted(mats):
            w.write(u, mats[u])
    if vad:
        rng = np.random.default_rng(1)
        with ArkScpWriter(d / "vad.ark", d / "vad.scp") as w:
            for u in sorted(mats):
                w.write(u, (rng.random(len(mats[u])) > 0.1).astype(np.float32))


# ------------------------------------------------------------------ parts
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train(cfg_path: Path, work: Path, S: dict, device, batch: int, res: dict) -> Path:
    """Part 1 at one batch size; returns the final.pt written."""
    from pyxv.nnet.config import load_config
    from pyxv.features.network_input import FeatureSource
    from pyxv.train.trainer import train_classifier

    data = work / "train_feats"
    if not (data / "feats.scp").is_file():
        rng = np.random.default_rng(0)
        mats = {f"id{s:05d}-{i}": rng.normal(size=(S["utt_frames"], 23)).astype(np.float32)
                for s in range(S["speakers"]) for i in range(S["utts_per_speaker"])}
        write_feats(data, mats)
    cfg = load_config(cfg_path)
    cfg["model"].update(S["model"])
    warm, steps = S["warm_steps"], S["steps"]
    cfg["data"].update(chunk_min=S["chunk"], chunk_max=S["chunk"], min_frames=S["chunk"],
                       min_utts_per_class=S["utts_per_speaker"])
    cfg["train"].update(epochs=1, steps_per_epoch=warm + steps, batch_size=batch, log_interval=warm + steps,
                        checkpoint_interval=0, keep_checkpoints=1)
    if S["num_workers"] is not None:
        cfg["train"]["num_workers"] = S["num_workers"]
    labels = [f"id{s:05d}" for s in range(S["classes"])]
    src = FeatureSource(data / "feats.scp", utt2num_frames=data / "utt2num_frames")
    u2s = {u: u.split("-")[0] for u in src.keys()}
    marks = {}

    def on_step(epoch, step):   # the trainer syncs nowhere per step; the window's two ends do
        if step in (warm, warm + steps):
            sync(device)
            marks[step] = time.perf_counter()

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    out = work / f"xvector_b{batch}"
    t = time.perf_counter()
    train_classifier(src, u2s, cfg, out, labels=labels, valid_utts=[], progress=False,
                     use_gpu=device.type == "cuda", on_step=on_step)
    wall = time.perf_counter() - t
    rate = steps * batch / (marks[warm + steps] - marks[warm])
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else None
    res.setdefault("train", []).append({"batch": batch, "chunks_per_s": rate, "peak_gib": peak, "wall_s": wall,
                                        "chunk_frames": S["chunk"], "amp": cfg["train"]["amp"]})
    say(f"training, batch {batch} x {S['chunk']} frames: {rate:.0f} chunks/s over steps {warm + 1}-"
        f"{warm + steps}" + (f", peak GPU memory {peak:.2f} GiB" if peak is not None else "")
        + f" ({wall:.0f} s with start-up and checkpoints)")
    return out / "final.pt"


def _rel(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(largest relative difference, smallest cosine) of rows of a against b."""
    rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(rel.max()), float(cos.min())


def _count_calls(module):
    calls = []
    return calls, module.register_forward_hook(lambda m, i, o: calls.append(1))


def extraction(model: Path, work: Path, S: dict, device, res: dict) -> bool:
    """Parts 2 and 3; False when CPU and device disagree or the job fails."""
    from pyxv.extract import embed_matrices, extract_embeddings
    from pyxv.nnet.cpu_embedder import for_cpu_extraction
    from pyxv.train.checkpoint import load_model

    net, ck = load_model(model, device)
    ec = ck["config"]["extract"]
    chunk = S["chunk_frames"] or ec["chunk_frames"]
    batching = "padded"   # what a GPU gets (auto); named so the CPU dry run takes the same path
    rng = np.random.default_rng(2)
    lens = lengths_for(rng, S["extract_seconds"])
    src = {f"u{i:06d}": rng.normal(size=(n, net.input_dim)).astype(np.float32) for i, n in enumerate(lens)}
    utts = list(src)
    seconds = sum(lens) / 100
    list(extract_embeddings(net, src, utts[:8], chunk_frames=chunk, batching=batching))   # warm-up
    rtfs = []
    for budget in S["budgets"]:
        bf = budget or ec["batch_frames"]
        calls, hook = _count_calls(net.trunk)
        sync(device)
        t = time.perf_counter()
        n = sum(1 for _ in extract_embeddings(net, src, utts, chunk_frames=chunk, batch_frames=bf,
                                              batching=batching))
        sync(device)
        dt = time.perf_counter() - t
        hook.remove()
        rtfs.append({"batch_frames": bf, "x_real_time": seconds / dt, "batches": len(calls), "utts": n})
    res["extract"] = {"seconds": seconds, "utts": len(utts), "chunk_frames": chunk, "runs": rtfs}
    say(f"extraction in memory ({seconds / 3600:.2f} h of speech in {len(utts)} utterances of "
        f"{min(lens) / 100:.1f}-{max(lens) / 100:.0f} s, chunks of {chunk} frames): "
        + "; ".join(f"{r['x_real_time']:.0f}x real time at batch_frames {r['batch_frames']} ({r['batches']} "
                    f"batches)" for r in rtfs))
    # The stage-4 job itself: features and VAD read from an ark, sliding CMN, x-vectors written.
    from pyxv.bin import extract_xvectors

    job = {u: src[u] for u in utts[:S["job_utts"]]}
    write_feats(work / "extract_data", job, vad=True)
    threads = torch.get_num_threads()   # the job sets its own (OMP_NUM_THREADS, else 1), as in stage 4
    t = time.perf_counter()
    rc = extract_xvectors.main(["extract", "--use-gpu", "yes" if device.type == "cuda" else "no",
                                "--chunk-frames", str(chunk), str(model), str(work / "extract_data"),
                                str(work / "xvector.1.ark")])
    dt = time.perf_counter() - t
    torch.set_num_threads(threads)
    job_s = sum(map(len, job.values())) / 100
    res["extract"]["job"] = {"rc": rc, "seconds": job_s, "x_real_time": job_s / dt}
    say(f"extraction as a stage-4 job (extract_xvectors.py extract --use-gpu "
        f"{'yes' if device.type == 'cuda' else 'no'}, {job_s / 3600:.2f} h of recordings read from an ark, "
        f"model loading and the ark written included): {job_s / dt:.0f}x real time" + ("" if rc == 0 else
                                                                                  f"  FAIL: exit status {rc}"))
    if device.type == "cuda" and S["sync_utts"]:
        import warnings

        calls, hook = _count_calls(net.trunk)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                embed_matrices(net, [src[u] for u in utts[:S["sync_utts"]]], chunk_frames=chunk,
                               batch_frames=ec["batch_frames"])
            finally:
                torch.cuda.set_sync_debug_mode("default")
        hook.remove()
        syncs = sum("synchroniz" in str(w.message) for w in caught)
        res["extract"]["host_syncs"] = {"syncs": syncs, "batches": len(calls), "utts": S["sync_utts"]}
        say(f"extraction host syncs: {syncs} in one call of {S['sync_utts']} utterances, {len(calls)} batches "
            f"(the call's one copy back of the embeddings included)")
    # Part 3: the CPU's stage-4 path against the device's, on ordinary utterances and on
    # the shortest stage 4 embeds and ones cut into 2 and 3 chunks.
    mats = [src[u] for u in utts[:S["agree_utts"]]]
    mats += [rng.normal(size=(n, net.input_dim)).astype(np.float32) for n in (10, 37, chunk + 1, 2 * chunk + 17)]
    cpu = for_cpu_extraction(load_model(model, "cpu")[0])
    a = embed_matrices(net, mats, chunk_frames=chunk, batching=batching)
    b = embed_matrices(cpu, mats, chunk_frames=chunk)
    rel, cos = _rel(a, b)
    res["agreement"] = {"utts": len(mats), "max_rel": rel, "min_cos": cos}
    ok = rel <= FAIL_REL and rc == 0
    say(f"x-vectors of padded batches on {device.type} vs the CPU's stage-4 path ({len(mats)} utterances of "
        f"{min(map(len, mats)) / 100:.1f}-{max(map(len, mats)) / 100:.0f} s): max relative difference {rel:.1e}, "
        f"min cosine {cos:.7f}" + ("" if ok else f"  FAIL: over {FAIL_REL:g}"))
    return ok


def ge2e(S: dict, device, res: dict) -> bool:
    """Part 4; False when CPU and device disagree."""
    import copy

    from pyxv.extract import embed_matrices, extract_embeddings
    from pyxv.nnet.ge2e import GE2EEncoder

    torch.manual_seed(0)
    cpu = GE2EEncoder(**S["ge2e"]).eval()
    net = copy.deepcopy(cpu).to(device)
    rng = np.random.default_rng(3)
    lens = lengths_for(rng, S["ge2e_seconds"])
    src = {f"g{i:06d}": np.abs(rng.normal(size=(n, cpu.input_dim))).astype(np.float32) for i, n in enumerate(lens)}
    seconds = sum(lens) / 100
    list(extract_embeddings(net, src, list(src)[:4]))
    calls, hook = _count_calls(net.lstm)
    sync(device)
    t = time.perf_counter()
    list(extract_embeddings(net, src, list(src)))
    sync(device)
    dt = time.perf_counter() - t
    hook.remove()
    mats = [src[u] for u in list(src)[:S["agree_utts"]]]
    rel, cos = _rel(embed_matrices(net, mats), embed_matrices(cpu, mats))
    res["ge2e"] = {"seconds": seconds, "x_real_time": seconds / dt, "batches": len(calls), "max_rel": rel,
                   "min_cos": cos}
    ok = rel <= FAIL_REL
    say(f"GE2E encoder (random weights, {seconds / 60:.0f} min of speech, 1.6 s windows of all utterances "
        f"in batches): {seconds / dt:.0f}x real time in {len(calls)} batches; CPU vs {device.type}: max "
        f"relative difference {rel:.1e}, min cosine {cos:.7f}" + ("" if ok else f"  FAIL: over {FAIL_REL:g}"))
    return ok


def finetune(model: Path, work: Path, S: dict, device, res: dict) -> None:
    """Part 5: one stage-5 fold, finetune_clean, through the recipe's own fold code."""
    import json

    from pyxv.emotion.config import load_emotion_config
    from pyxv.emotion.data import LabeledSet, Split
    from pyxv.emotion.nnet import run_nnet_system

    emo = work / "emo"
    rng = np.random.default_rng(4)
    classes = [f"emo{c}" for c in range(S["emo_classes"])]
    train, test = LabeledSet(), LabeledSet()
    mats = {}
    n_train_spk = max(1, S["emo_speakers"] * 4 // 5)
    for i in range(S["emo_train"] + S["emo_test"]):
        is_test = i >= S["emo_train"]
        spk = f"s{(n_train_spk + i % (S['emo_speakers'] - n_train_spk)) if is_test else i % n_train_spk:03d}"
        utt, label = f"{spk}-{i:05d}", classes[i % len(classes)]
        # CREMA-D-like clips of 1.5-4 s; the class sets the scale, which survives the sliding CMN
        x = rng.normal(size=(int(rng.integers(150, 400)), 23)) * (1 + classes.index(label))
        mats[utt] = x.astype(np.float32)
        (test if is_test else train).add(utt, label, spk)
    write_feats(emo / "all", mats, vad=True)
    cfg = load_emotion_config(None, overrides={"xvector_models": {"clean": str(model.parent)},
                                               "nnet": {"epochs": S["emo_epochs"]}})
    fold = work / "fold1"
    sync(device)
    t = time.perf_counter()
    scored, post = run_nnet_system("finetune_clean", Split("fold1", emo / "train", emo / "test"), train, None,
                                   test, classes, emo, cfg, fold, use_gpu=device.type == "cuda")
    sync(device)
    wall = time.perf_counter() - t
    hist = json.loads((fold / "log" / "history.json").read_text())
    per_epoch = [h["seconds"] for h in hist]
    acc = float(np.mean([classes[k] == y for k, y in zip(post.argmax(1), scored.labels)]))
    res["finetune"] = {"train_utts": len(train), "test_utts": len(test), "epochs": len(hist), "wall_s": wall,
                       "epoch_s": per_epoch, "test_acc": acc}
    say(f"stage 5, one fold of finetune_clean ({len(train)} training, {len(test)} test utterances, "
        f"{len(hist)} epochs): {wall:.0f} s in all, epochs of {', '.join(f'{s:.1f}' for s in per_epoch)} s "
        f"(test accuracy {acc:.2f}, chance {1 / len(classes):.2f})")


def _native_bf16() -> bool:
    try:   # emulated bf16 (before Ampere) does not count
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:   # torch < 2.3
        return torch.cuda.is_bf16_supported()


# ------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run-cpu", action="store_true", help="every part on the CPU at tiny sizes")
    ap.add_argument("--pack", nargs="?", const=str(WHEELS), metavar="DIR",
                    help=f"download the wheels a bare GPU machine may lack into DIR [{WHEELS}]")
    ap.add_argument("--python-version", default="3.12", help="of the GPU machine's Python, for --pack [3.12]")
    ap.add_argument("--wheels", default=str(WHEELS), help="where the packed wheels are [%(default)s]")
    ap.add_argument("--out", help="also write the figures to DIR/gpu_check.json")
    ap.add_argument("--config", default=str(ROOT / "conf" / "xvector_resnet34.yaml"))
    a = ap.parse_args(argv)
    if a.pack:
        return pack(Path(a.pack), a.python_version)
    if not a.dry_run_cpu and not torch.cuda.is_available():
        from pyxv.device import no_gpu_reason

        print(f"bench/gpu.sh: no GPU here ({no_gpu_reason()}); nothing measured (--dry-run-cpu runs every part "
              f"on the CPU)")
        return 0
    t0 = time.perf_counter()
    from_wheels = use_wheels(Path(a.wheels))
    global np   # the parts use it; importable only now
    import numpy as np

    S = TINY if a.dry_run_cpu else FULL
    device = torch.device("cpu" if a.dry_run_cpu else "cuda")
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU (dry run, tiny sizes)"
    say(f"{where}; torch {torch.__version__}, Python {sys.version.split()[0]}"
        + (f"; {', '.join(from_wheels)} from {a.wheels}" if from_wheels else "")
        + ("" if device.type == "cpu" else f"; native bf16: {'yes' if _native_bf16() else 'no'}"))
    res: dict = {"device": where, "torch": torch.__version__, "python": sys.version.split()[0],
                 "from_wheels": from_wheels}
    ok = True
    with tempfile.TemporaryDirectory(prefix="pyxv-gpu-check-") as tmp:
        work = Path(tmp)
        models = [train(Path(a.config), work, S, device, b, res) for b in S["batches"]]
        ok &= extraction(models[0], work, S, device, res)
        ok &= ge2e(S, device, res)
        finetune(models[0], work, S, device, res)
    res["wall_s"] = time.perf_counter() - t0
    if a.out:
        import json

        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "gpu_check.json").write_text(json.dumps(res, indent=1))
    say(f"{'done' if ok else 'FAILED'} in {res['wall_s']:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
