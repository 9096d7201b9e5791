"""eGeMAPS LLDs and functionals for one data dir (one job of steps/make_gemaps.sh).

python -m pyxv.bin.compute_gemaps [--sample-rate 0] <data-dir> <lld.ark> <lld.scp> <func.ark> <func.scp>

LLDs: T x 25 matrices at 100 frames/s; functionals: 1 x 88 matrices. Audio is
analysed at its own rate unless --sample-rate is given. Bad utterances are
logged and skipped (the step counts them).
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample-rate", type=int, default=0, help="resample to this rate first (0: keep)")
    p.add_argument("data")
    p.add_argument("lld_ark")
    p.add_argument("lld_scp")
    p.add_argument("func_ark")
    p.add_argument("func_scp")
    a = p.parse_args(argv)

    from pyxv.datadir import DataDir
    from pyxv.features.archive import ArkScpWriter, run_utterances
    from pyxv.features.gemaps import Gemaps

    try:
        data = DataDir(a.data)
        utts = data.utts
        data.wav_scp, data.segments
    except (FileNotFoundError, ValueError) as e:
        print(f"compute_gemaps: {e}", file=sys.stderr)
        return 1
    g = Gemaps()
    print(f"compute_gemaps: {a.data}: {len(utts)} utterances", file=sys.stderr, flush=True)

    def job(utt):
        def compute():
            x, sr = data.read_audio(utt, sample_rate=a.sample_rate or None)
            lld, func = g.both(x, sr)
            return lld, func[None, :]
        return utt, compute

    rc = run_utterances("compute_gemaps", (job(u) for u in utts),
                        [ArkScpWriter(a.lld_ark, a.lld_scp), ArkScpWriter(a.func_ark, a.func_scp)],
                        len(utts), every=100)
    if g.nan_count:
        print(f"compute_gemaps: {g.nan_count} undefined values (NaN) set to 0", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
