#!/usr/bin/env python3
"""VoxCeleb 1/2 (wav/<spk>/<video>/<n>.wav) -> one Kaldi data dir for x-vector
pre-training, utterances <spk>-<video>-<n>. WAV only: convert VoxCeleb2's
.m4a first (the error message says how). Gender from vox1_meta.csv /
vox2_meta.csv when they cover every speaker, else no spk2gender.

Usage: local/prepare_voxceleb.py [--nj N] [--min-dur S] [--min-utts N] [--meta CSV ...] <voxceleb-root> <data-dir>
Several roots (VoxCeleb1 and 2): prepare each and combine with utils/combine_data.sh.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pyxv.corpora.common import run_tool  # noqa: E402
from pyxv.corpora.voxceleb import prepare_voxceleb  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nj", type=int, default=2, help="threads reading audio headers")
    p.add_argument("--min-dur", type=float, default=0.0, help="leave out utterances shorter than this (s)")
    p.add_argument("--min-utts", type=int, default=0, help="leave out speakers with fewer utterances")
    p.add_argument("--meta", action="append", default=None, help="vox1_meta.csv / vox2_meta.csv")
    p.add_argument("voxceleb_root")
    p.add_argument("data_dir")
    a = p.parse_args()
    return run_tool("prepare_voxceleb", prepare_voxceleb, a.voxceleb_root, a.data_dir, min_dur=a.min_dur,
                    min_utts=a.min_utts, meta=a.meta, nj=a.nj)


if __name__ == "__main__":
    sys.exit(main())
