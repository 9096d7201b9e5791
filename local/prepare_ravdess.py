#!/usr/bin/env python3
"""RAVDESS speech -> Kaldi data dirs: <data-dir>/all (4 classes: neutral happy
sad angry; calm left out) and <data-dir>/fold{1..6}/{train,test} (fold k tests
actors 4k-3..4k). Accepts .wav and .flac.

Usage: local/prepare_ravdess.py [--nj N] [--dev-speakers N] <ravdess-root> <data-dir>
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pyxv.corpora.common import run_tool  # noqa: E402
from pyxv.corpora.ravdess import prepare_ravdess  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nj", type=int, default=2, help="threads reading audio headers")
    p.add_argument("--dev-speakers", type=int, default=0,
                   help="actors carved from each fold's training actors as dev (0: no dev)")
    p.add_argument("ravdess_root")
    p.add_argument("data_dir")
    a = p.parse_args()
    return run_tool("prepare_ravdess", prepare_ravdess, a.ravdess_root, a.data_dir, nj=a.nj,
                    dev_speakers=a.dev_speakers)


if __name__ == "__main__":
    sys.exit(main())
