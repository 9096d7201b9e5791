"""Speaker verification by emotion: fit a back-end, score all same-gender trials, write the tables.

  python -m pyxv.bin.score_sv --backend plda --config conf/sv.yaml \
      --backend-train exp/xvector_clean/xvectors_pretrain/train \
      exp/xvector_clean/xvectors_demo/all data/demo/all exp/sv/demo/xvector_clean/plda

  # per-fold protocol: a back-end per fold on its training speakers, trials of its test speakers, pooled
  python -m pyxv.bin.score_sv --backend cosine --config conf/sv.yaml --folds data/ravdess \
      [--emotion-posteriors exp/emotion/ravdess/frozen_lr_clean_clean] \
      exp/xvector_clean/xvectors_ravdess/all data/ravdess/all exp/sv/ravdess/xvector_clean/cosine_folds

Usually run through steps/score_sv.sh. The runs are pyxv.sv.run; see pyxv.sv.trials for the trial rule,
pyxv.sv.folds for the folds.
"""
from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("score_sv")


def str2bool(v: str) -> bool:
    if v.lower() in ("true", "1", "yes"):
        return True
    if v.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not '{v}'")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["cosine", "plda"], default="cosine")
    p.add_argument("--config", default="conf/sv.yaml")
    p.add_argument("--backend-train", default="",
                   help="x-vector dir to fit the back-end on; empty: the evaluation set itself (not held out)")
    p.add_argument("--backend-train-data", default="",
                   help="data dir with the back-end training set's utt2spk [derived: "
                        "exp/xvector_M/xvectors_X/Y -> data/X/Y, else <backend-train>/utt2spk]")
    p.add_argument("--backend-in", default="", help="use this fitted back-end (backend.json; an older pyxv's "
                   "pickled backend.pkl only with PYXV_TRUST_PICKLE=1) instead of fitting one")
    p.add_argument("--trials", default="", help="Kaldi trials file to score instead of all same-gender pairs")
    p.add_argument("--skip-unknown", type=str2bool, default=False,
                   help="with --trials: skip trials naming utterances not in the set (default: error)")
    p.add_argument("--symmetric", type=str2bool, default=True,
                   help="with --trials: a trial (a, b) also counts in cell (b, a) [true]")
    p.add_argument("--write-scores", type=str2bool, default=False, help="write <out-dir>/scores")
    p.add_argument("--folds", default="",
                   help="corpus dir with fold<k>/{train,test}: per-fold protocol (back-end per fold on its "
                        "training speakers, trials of its test speakers, tables pooled)")
    p.add_argument("--emotion-posteriors", default="",
                   help="stage-5 emotion system dir (<dir>/<fold>/posteriors): trial-side emotions for the "
                        "emotion-aware pieces from the recogniser instead of utt2emo")
    p.add_argument("--model", default="", help="model name for the tables [from the x-vector dir]")
    p.add_argument("--corpus", default="", help="corpus name for the tables [from the data dir]")
    p.add_argument("xvector_dir")
    p.add_argument("data")
    p.add_argument("out_dir")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    from ..sv.run import ScoringJob, run

    try:
        return run(ScoringJob(**vars(a)))
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        log.error("%s", e)
        print(f"score_sv.py: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
