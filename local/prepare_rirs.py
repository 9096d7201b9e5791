#!/usr/bin/env python3
"""RIRS_NOISES simulated room impulse responses -> a Kaldi data dir.

Usage: local/prepare_rirs.py [--nj N] [--rooms smallroom,mediumroom] <rirs-root> <out-data-dir>
<rirs-root> holds simulated_rirs/ (or is a folder containing RIRS_NOISES/).
Utterance ids are <roomtype>-RoomNNN-NNNNN, speakers the rooms (as Kaldi's rir_list).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pyxv.corpora.common import run_tool  # noqa: E402
from pyxv.corpora.noise import prepare_rirs  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nj", type=int, default=2)
    p.add_argument("--rooms", default="smallroom,mediumroom")
    p.add_argument("rirs_root")
    p.add_argument("out_dir")
    a = p.parse_args()
    return run_tool("prepare_rirs", prepare_rirs, a.rirs_root, a.out_dir, nj=a.nj,
                    rooms=tuple(r for r in a.rooms.split(",") if r))


if __name__ == "__main__":
    sys.exit(main())
