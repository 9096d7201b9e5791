"""Kaldi compute-mfcc-feats for one data dir (one job of steps/make_mfcc.sh).

python -m pyxv.bin.compute_mfcc --config conf/mfcc_8k.conf [--seed 0] \\
    <data-dir> <out.ark> <out.scp> [--num-frames utt2num_frames]

Audio at another rate is resampled to --sample-frequency. Bad utterances are
logged (``ERROR utterance ...``) and skipped (the step counts them).
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="Kaldi-style MFCC options file")
    p.add_argument("--seed", type=int, default=0, help="dither seed (per utterance: seed + utt id)")
    p.add_argument("--num-frames", help="also write 'utt frames' lines here")
    p.add_argument("data", help="data dir (wav.scp, utt2spk, optional segments)")
    p.add_argument("ark")
    p.add_argument("scp")
    a = p.parse_args(argv)

    import torch
    torch.set_num_threads(1)
    from pyxv.config import ConfigError
    from pyxv.datadir import DataDir
    from pyxv.features.archive import ArkScpWriter, run_utterances
    from pyxv.features.mfcc import Mfcc, num_frames, utt_seed

    try:
        mfcc = Mfcc.from_conf(a.config)
        data = DataDir(a.data)
        utts = data.utts
        data.wav_scp, data.segments  # read now: a broken table stops before any work
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"compute_mfcc: {e}", file=sys.stderr)
        return 1
    o = mfcc.opts
    print(f"compute_mfcc: {a.data}: {len(utts)} utterances, {mfcc.sample_rate} Hz, "
          f"{o.num_ceps} ceps, snip-edges={str(o.snip_edges).lower()}", file=sys.stderr, flush=True)

    def job(utt):
        def compute():
            if data.segments is None and utt not in data.wav_scp:
                raise ValueError("not in wav.scp")
            x, _ = data.read_audio(utt, sample_rate=mfcc.sample_rate)
            if len(x) < o.min_duration * mfcc.sample_rate:
                raise ValueError(f"shorter than --min-duration={o.min_duration}")
            if num_frames(len(x), o) == 0:
                raise ValueError(f"{len(x)} samples give no frames (shorter than one "
                                 f"{o.window_size}-sample window with --snip-edges=true)")
            return mfcc(x, seed=utt_seed(a.seed, utt))
        return utt, compute

    return run_utterances("compute_mfcc", (job(u) for u in utts),
                          [ArkScpWriter(a.ark, a.scp, num_frames=a.num_frames)], len(utts))


if __name__ == "__main__":
    sys.exit(main())
