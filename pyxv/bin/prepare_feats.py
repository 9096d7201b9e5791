"""Write x-vector network input (sliding CMN, voiced frames) for one job's share of a data dir.

python -m pyxv.bin.prepare_feats --config conf/xvector_demo.yaml --job 1 --nj 2 data/pretrain/train exp/xvector_clean/feats
  -> exp/xvector_clean/feats/feats.1.{ark,scp,utt2num_frames}
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pyxv.features.archive import exit_cleanly_on_signals
from pyxv.io import OutputError
from pyxv.nnet.config import ConfigError, load_config
from pyxv.train.data import prepare_features


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="x-vector YAML config (data.cmn_window, data.apply_vad)")
    ap.add_argument("--job", type=int, default=1, help="this job (1-based)")
    ap.add_argument("--nj", type=int, default=1, help="number of jobs: job k takes utterances k, k+nj, ...")
    ap.add_argument("--feats", default="feats.scp", help="feature scp name inside the data dir")
    ap.add_argument("data", help="data dir with feats.scp and vad.scp")
    ap.add_argument("out_dir")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(levelname)s] %(message)s", stream=sys.stdout)
    try:
        cfg = load_config(a.config)
    except ConfigError as e:
        print(f"prepare_feats: {e}", file=sys.stderr)
        return 1
    data = Path(a.data)
    feats, vad = data / a.feats, data / "vad.scp"
    if not feats.is_file():
        print(f"prepare_feats: {feats} does not exist (run the feature stage first)", file=sys.stderr)
        return 1
    if cfg["data"]["apply_vad"] and not vad.is_file():
        print(f"prepare_feats: {vad} does not exist (data.apply_vad is true)", file=sys.stderr)
        return 1
    exit_cleanly_on_signals()
    try:
        st = prepare_features(feats, vad if cfg["data"]["apply_vad"] else None, a.out_dir, f"feats.{a.job}",
                              cmn_window=cfg["data"]["cmn_window"], apply_vad=cfg["data"]["apply_vad"],
                              job=a.job, nj=a.nj)
    except OutputError as e:
        print(f"prepare_feats: FATAL: {e}; nothing of this job kept", file=sys.stderr)
        return 1
    return 0 if st.get("ok", 0) > 0 or st.get("bad", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
