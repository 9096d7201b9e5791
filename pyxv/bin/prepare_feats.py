"""Write the network input of one job's share of a data dir, through the front-end
the config's encoder type declares (ResNet: sliding CMN + voiced frames of
feats.scp/vad.scp; GE2E: mel spectrograms of wav.scp).

python -m pyxv.bin.prepare_feats --config conf/xvector_demo.yaml --job 1 --nj 2 data/pretrain/train exp/xvector_clean/feats
  -> exp/xvector_clean/feats/feats.1.{ark,scp,utt2num_frames}
python -m pyxv.bin.prepare_feats --config C --requirements data/pretrain/train   # the data files it reads
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pyxv.features.archive import exit_cleanly_on_signals
from pyxv.io import OutputError
from pyxv.config import ConfigError
from pyxv.nnet.config import load_config
from pyxv.nnet.registry import encoder_class
from pyxv.features.network_input import write_network_input


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="x-vector YAML config (model.type, data.cmn_window, data.apply_vad)")
    ap.add_argument("--job", type=int, default=1, help="this job (1-based)")
    ap.add_argument("--nj", type=int, default=1, help="number of jobs: job k takes utterances k, k+nj, ...")
    ap.add_argument("--requirements", action="store_true", help="print the data-dir files the front-end reads")
    ap.add_argument("data", help="data dir")
    ap.add_argument("out_dir", nargs="?")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(levelname)s] %(message)s", stream=sys.stdout)
    try:
        cfg = load_config(a.config)
    except ConfigError as e:
        print(f"prepare_feats: {e}", file=sys.stderr)
        return 1
    front = encoder_class(cfg["model"]["type"]).frontend(cfg)
    data = Path(a.data)
    if a.requirements:
        print("\n".join(front.data_requirements))
        return 0
    missing = [str(data / f) for f in front.data_requirements if not (data / f).is_file()]
    if missing:
        print(f"prepare_feats: {', '.join(missing)} does not exist ({front.describe()} needs it; run the "
              "feature stage first)", file=sys.stderr)
        return 1
    if a.out_dir is None:
        ap.error("out_dir is required")
    src = front.data_source(data)
    utts = front.utterances(data)[a.job - 1::a.nj]
    exit_cleanly_on_signals()
    try:
        st = write_network_input(utts, src.__getitem__, a.out_dir, f"feats.{a.job}")
    except OutputError as e:
        print(f"prepare_feats: FATAL: {e}; nothing of this job kept", file=sys.stderr)
        return 1
    return 0 if st.get("ok", 0) > 0 or st.get("bad", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
