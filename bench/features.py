#!/usr/bin/env python3
"""Feature benchmark: our MFCC vs kaldi-native-fbank, and the MFCC+VAD stage.

  OMP_NUM_THREADS=1 python bench/features.py [--ravdess DIR] [--config conf/mfcc_8k.conf]
                                             [--max-clips N] [--skip-stage]

1. Reads the RAVDESS clips (resampled to the config's rate, outside the timing),
   computes MFCC with ours and with kaldi-native-fbank in this process, both
   single-threaded with dither 0, and prints real-time factors (audio seconds
   per compute second), their ratio, and the largest difference.
2. Builds a data dir of the same clips in a temp folder and times
   steps/make_mfcc.sh + steps/compute_vad.sh with --nj 2 (wall clock; this
   includes reading the FLACs, resampling to 8 kHz, process start-up and the
   job runner).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ravdess", default=str(REPO.parent / "shared" / "corpora" / "ravdess"))
    p.add_argument("--config", default="conf/mfcc_8k.conf")
    p.add_argument("--max-clips", type=int, default=0, help="0: all")
    p.add_argument("--skip-stage", action="store_true", help="only the single-thread comparison")
    a = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"

    import numpy as np
    import torch
    torch.set_num_threads(1)
    import kaldi_native_fbank as knf

    from pyxv.features.mfcc import Mfcc, MfccOptions
    from pyxv.io import read_audio

    files = sorted(Path(a.ravdess).glob("Actor_*/*.flac"))
    if a.max_clips:
        files = files[:a.max_clips]
    if not files:
        print(f"no RAVDESS clips under {a.ravdess}", file=sys.stderr)
        return 1
    opts = MfccOptions.from_conf(REPO / a.config)
    opts.dither = 0.0
    sr = int(opts.sample_frequency)
    t = time.perf_counter()
    waves = [read_audio(str(f), sample_rate=sr)[0] for f in files]
    t_read = time.perf_counter() - t
    audio_s = sum(len(w) for w in waves) / sr
    print(f"{len(files)} clips, {audio_s:.0f} s of audio at {sr} Hz (read+resample {t_read:.1f} s); "
          f"config {a.config} with dither 0; torch threads {torch.get_num_threads()}")

    ko = knf.MfccOptions()
    fo = ko.frame_opts
    fo.samp_freq, fo.frame_length_ms, fo.frame_shift_ms = opts.sample_frequency, opts.frame_length, opts.frame_shift
    fo.dither, fo.snip_edges = 0.0, opts.snip_edges
    ko.mel_opts.num_bins, ko.mel_opts.low_freq, ko.mel_opts.high_freq = opts.num_mel_bins, opts.low_freq, opts.high_freq
    ko.num_ceps, ko.use_energy = opts.num_ceps, opts.use_energy

    def run_knf(x):
        m = knf.OnlineMfcc(ko)
        m.accept_waveform(opts.sample_frequency, x)
        m.input_finished()
        return np.array([m.get_frame(i) for i in range(m.num_frames_ready)], dtype=np.float32)

    mfcc = Mfcc(opts)
    run_knf(waves[0]), mfcc(waves[0])  # warm-up
    best = {}
    for name, fn in (("kaldi-native-fbank", run_knf), ("pyxv (torch)", mfcc)):
        times = []
        for _ in range(2):
            t = time.perf_counter()
            outs = [fn(w) for w in waves]
            times.append(time.perf_counter() - t)
        best[name] = (min(times), outs)
        print(f"  {name:20s} {min(times):6.2f} s  {audio_s / min(times):7.0f} x real time")
    (tk, ref), (to, ours) = best["kaldi-native-fbank"], best["pyxv (torch)"]
    diff = max(float(np.abs(x - y).max()) for x, y in zip(ours, ref))
    close = sum(np.allclose(x, y, rtol=1e-4, atol=1e-3) for x, y in zip(ours, ref))
    print(f"  throughput ratio ours/knf: {tk / to:.2f}x; max |diff| {diff:.2e}; "
          f"{close}/{len(ours)} clips allclose(rtol=1e-4, atol=1e-3)")

    if a.skip_stage:
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="pyxv_bench_"))
    try:
        d = tmp / "data" / "ravdess"
        d.mkdir(parents=True)
        rows = []
        for f in files:
            parts = f.stem.split("-")
            spk = f"ravdess{parts[-1]}"
            rows.append((f"{spk}-{f.stem}", spk, str(f)))
        rows.sort()
        (d / "wav.scp").write_text("".join(f"{u} {p}\n" for u, _, p in rows))
        (d / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s, _ in rows))
        spk2utt: dict[str, list[str]] = {}
        for u, s, _ in rows:
            spk2utt.setdefault(s, []).append(u)
        (d / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items())))
        env = dict(os.environ, OMP_NUM_THREADS="1")
        t = time.perf_counter()
        for cmd in (["steps/make_mfcc.sh", "--nj", "2", "--mfcc-config", a.config, str(d), str(tmp / "log"), str(tmp / "mfcc")],
                    ["steps/compute_vad.sh", "--nj", "2", str(d), str(tmp / "log"), str(tmp / "mfcc")]):
            subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        n = sum(1 for _ in open(d / "vad.scp"))
        print(f"feature stage (make_mfcc.sh + compute_vad.sh, --nj 2, {a.config}) on {n} clips: "
              f"{wall:.1f} s wall")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
