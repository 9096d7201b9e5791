"""Import a published speaker encoder as a pyxv model: <exp-dir>/final.pt, config.yaml, README.txt.

python -m pyxv.bin.import_encoder [--weights F | --wheel W] [--no-download] ge2e exp/xvector_clean
"""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
    from pyxv.train.import_encoder import IMPORTERS, EncoderImportError

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="the encoder's weights file (Resemblyzer's pretrained.pt)")
    ap.add_argument("--wheel", help="a downloaded wheel holding the weights (Resemblyzer-0.1.4-py3-none-any.whl)")
    ap.add_argument("--no-download", action="store_true", help="never call pip download")
    ap.add_argument("encoder", choices=sorted(IMPORTERS))
    ap.add_argument("exp_dir")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(levelname)s] %(message)s", stream=sys.stdout)
    try:
        IMPORTERS[a.encoder](a.exp_dir, weights=a.weights, wheel=a.wheel, download=not a.no_download)
    except EncoderImportError as e:
        print(f"import_encoder: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
