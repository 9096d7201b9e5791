#!/usr/bin/env python3
"""Any corpus from a CSV manifest -> Kaldi data dirs.

Usage: local/prepare_manifest.py [options] <manifest.csv> <data-dir>

Columns: path,speaker,emotion (required) and utt,gender,split,start,end
(optional); relative paths are relative to the CSV's folder. Writes
<data-dir>/all and the protocol: <data-dir>/{train,dev,test} from the split
column, or else <data-dir>/fold<k>/{train,[dev,]test} with speakers dealt into
--folds gender-balanced folds. With start/end the dirs get a segments file.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pyxv.corpora.common import run_tool  # noqa: E402
from pyxv.corpora.manifest import prepare_manifest  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--emotions", default=None,
                   help="comma-separated allowed emotion labels; others are an error")
    p.add_argument("--folds", type=int, default=5, help="speaker folds when there is no split column")
    p.add_argument("--dev-speakers", type=int, default=0,
                   help="speakers carved from each fold's training speakers as dev")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    p.add_argument("--nj", type=int, default=2, help="threads reading audio headers")
    p.add_argument("--no-protocol", action="store_true",
                   help="write only <data-dir>/<subset-name> (e.g. pre-training data)")
    p.add_argument("--subset-name", default="all")
    p.add_argument("--no-emotion", action="store_true",
                   help="the emotion column is optional (pre-training speakers)")
    p.add_argument("manifest")
    p.add_argument("data_dir")
    a = p.parse_args()
    emotions = [e for e in a.emotions.split(",") if e] if a.emotions else None
    return run_tool("prepare_manifest", prepare_manifest, a.manifest, a.data_dir, emotions=emotions,
                    folds=a.folds, dev_speakers=a.dev_speakers, seed=a.seed, nj=a.nj,
                    protocol=not a.no_protocol, subset_name=a.subset_name,
                    require_emotion=not a.no_emotion)


if __name__ == "__main__":
    sys.exit(main())
