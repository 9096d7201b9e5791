#!/usr/bin/env python3
"""Write the synthetic demo corpus (espeak-ng): pre-training voices, emotion
voices, MUSAN-like noises and RIRs. Reused when already complete.

Usage: local/make_demo_corpus.py [--seed S] [--size full|small] [--nj N] <out-root>
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pyxv.corpora.demo import SIZES, make_demo_corpus  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--size", choices=sorted(SIZES), default="full")
    p.add_argument("--nj", type=int, default=2, help="synthesis processes")
    p.add_argument("out_root")
    a = p.parse_args()
    try:
        make_demo_corpus(a.out_root, seed=a.seed, size=a.size, nj=a.nj,
                         log=lambda m: print(m, file=sys.stderr, flush=True))
    except (RuntimeError, ValueError) as e:
        print(f"make_demo_corpus: ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
