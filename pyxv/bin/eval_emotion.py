"""Score a trained emotion system's final model on another prepared corpus (cross-corpus).

    python -m pyxv.bin.eval_emotion [--label-map map.txt] [--standardise yes] [--target NAME] \\
        exp/emotion/ravdess/frozen_lr_clean_clean data/demo/all exp/emotion/ravdess/cross/demo/frozen_lr_clean_clean

See pyxv.emotion.crosscorpus; steps/eval_emotion.sh wraps it as a job.
"""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label-map", default=None,
                    help="lines '<corpus label> <model class>' ('<label> -' leaves its utterances out)")
    ap.add_argument("--standardise", choices=["yes", "no"], default="no",
                    help="LR systems: also score the target's back-end inputs standardised on the target's own "
                         "statistics (no labels), reported beside the plain figure [no]")
    ap.add_argument("--use-gpu", choices=["auto", "yes", "no"], default="no",
                    help="the networks (x-vectors, fine-tuned and random-init systems) on a GPU [no]")
    ap.add_argument("--target", default=None, help="name of the target corpus in the report [the data dir's name]")
    ap.add_argument("system_dir")
    ap.add_argument("data_dir")
    ap.add_argument("out_dir")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    from pyxv.device import NoGpuError, device_for
    from pyxv.emotion.crosscorpus import CrossCorpusError, evaluate
    from pyxv.io import OutputError

    try:
        device = device_for(a.use_gpu)
        evaluate(a.system_dir, a.data_dir, a.out_dir, label_map=a.label_map, standardise=a.standardise == "yes",
                 target=a.target, device=device)
    except (NoGpuError, CrossCorpusError, FileNotFoundError, OutputError) as e:
        print(f"eval_emotion: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
