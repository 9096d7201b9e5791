#!/usr/bin/env python3
"""IEMOCAP -> Kaldi data dirs: <data-dir>/all (4 classes: angry happy sad
neutral, excited merged into happy; 5531 utterances on the full release) and
<data-dir>/fold{1..5}/{train,dev,test} (leave one session out; dev = the
speakers of the next session, carved from training).

Usage: local/prepare_iemocap.py [--nj N] [--dev-speakers N] <IEMOCAP_full_release> <data-dir>
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pyxv.corpora.common import run_tool  # noqa: E402
from pyxv.corpora.iemocap import prepare_iemocap  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nj", type=int, default=2, help="threads reading audio headers")
    p.add_argument("--dev-speakers", type=int, default=2,
                   help="speakers carved from the training sessions as dev (0: no dev)")
    p.add_argument("iemocap_root")
    p.add_argument("data_dir")
    a = p.parse_args()
    return run_tool("prepare_iemocap", prepare_iemocap, a.iemocap_root, a.data_dir, nj=a.nj,
                    dev_speakers=a.dev_speakers)


if __name__ == "__main__":
    sys.exit(main())
