#!/usr/bin/env python3
"""CREMA-D -> Kaldi data dirs: <data-dir>/all (4 classes: angry happy sad
neutral; disgust and fear left out) and <data-dir>/{train,dev,test} from the
committed 51/8/32-actor split (conf/crema_d_split.txt).

Usage: local/prepare_crema_d.py [--nj N] [--split FILE] [--demographics CSV] <crema-d-root> <data-dir>
<crema-d-root> holds AudioWAV/ and VideoDemographics.csv.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pyxv.corpora.common import run_tool  # noqa: E402
from pyxv.corpora.crema_d import prepare_crema_d  # noqa: E402

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nj", type=int, default=2, help="threads reading audio headers")
    p.add_argument("--split", default=os.path.join(REPO, "conf", "crema_d_split.txt"))
    p.add_argument("--demographics", default=None, help="default: <crema-d-root>/VideoDemographics.csv")
    p.add_argument("crema_d_root")
    p.add_argument("data_dir")
    a = p.parse_args()
    return run_tool("prepare_crema_d", prepare_crema_d, a.crema_d_root, a.data_dir, split_file=a.split,
                    demographics=a.demographics, nj=a.nj)


if __name__ == "__main__":
    sys.exit(main())
