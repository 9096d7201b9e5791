#!/usr/bin/env python3
"""MSP-Podcast -> Kaldi data dirs: <data-dir>/{all,train,dev,test} with 5
classes (angry happy sad neutral disgust). Unknown speakers become one
pseudo-speaker per utterance (unknown_<file>), listed in unknown_spk_utts.

Usage: local/prepare_msp_podcast.py [--nj N] [--test-set Test1] [--labels CSV] <msp-root> <data-dir>
<msp-root> holds Audios/ and Labels/labels_concensus.csv (columns
FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set). For release
1.4, build such a CSV from its label/partition/speaker files and pass --labels.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pyxv.corpora.common import run_tool  # noqa: E402
from pyxv.corpora.msp_podcast import prepare_msp_podcast  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nj", type=int, default=2, help="threads reading audio headers")
    p.add_argument("--test-set", default="Test1", help="the Split_Set used as test")
    p.add_argument("--labels", default=None, help="label CSV (default: <msp-root>/Labels/labels_concensus.csv)")
    p.add_argument("msp_root")
    p.add_argument("data_dir")
    a = p.parse_args()
    return run_tool("prepare_msp_podcast", prepare_msp_podcast, a.msp_root, a.data_dir, labels=a.labels,
                    test_set=a.test_set, nj=a.nj)


if __name__ == "__main__":
    sys.exit(main())
