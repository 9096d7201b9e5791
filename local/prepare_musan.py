#!/usr/bin/env python3
"""MUSAN -> <out-dir>/musan_noise, musan_music, musan_speech (Kaldi data dirs).

Usage: local/prepare_musan.py [--nj N] [--use-vocals] <musan-root> <out-dir>
<musan-root> holds noise/ music/ speech/ (or is a folder containing musan/).
Music with vocals (ANNOTATIONS column 3 = Y) is left out unless --use-vocals.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pyxv.corpora.common import run_tool  # noqa: E402
from pyxv.corpora.noise import prepare_musan  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nj", type=int, default=2)
    p.add_argument("--use-vocals", action="store_true")
    p.add_argument("musan_root")
    p.add_argument("out_dir")
    a = p.parse_args()
    return run_tool("prepare_musan", prepare_musan, a.musan_root, a.out_dir, nj=a.nj, use_vocals=a.use_vocals)


if __name__ == "__main__":
    sys.exit(main())
