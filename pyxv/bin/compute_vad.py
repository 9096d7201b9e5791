"""Kaldi compute-vad over a feats.scp (one job of steps/compute_vad.sh).

python -m pyxv.bin.compute_vad --config conf/vad.conf <feats.scp> <out.ark> <out.scp>

Writes one 0/1 float vector per utterance (Kaldi's vad.scp format).
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="Kaldi-style VAD options file")
    p.add_argument("feats_scp")
    p.add_argument("ark")
    p.add_argument("scp")
    a = p.parse_args(argv)

    import kaldiio
    from pyxv.config import ConfigError
    from pyxv.features.archive import ArkScpWriter, run_utterances
    from pyxv.features.vad import VadOptions, compute_vad
    from pyxv.io import read_table

    try:
        opts = VadOptions.from_conf(a.config)
        table = read_table(a.feats_scp)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"compute_vad: {e}", file=sys.stderr)
        return 1
    print(f"compute_vad: {a.feats_scp}: {len(table)} utterances", file=sys.stderr, flush=True)

    def job(utt, spec):
        def compute():
            feats = kaldiio.load_mat(spec)
            if feats.ndim != 2 or feats.shape[0] == 0:
                raise ValueError(f"empty feature matrix ({spec})")
            v = compute_vad(feats, opts)
            if opts.omit_unvoiced_utts and v.sum() == 0:
                raise ValueError("no voiced frames (--omit-unvoiced-utts=true)")
            return v
        return utt, compute

    return run_utterances("compute_vad", (job(u, s) for u, s in table.items()),
                          [ArkScpWriter(a.ark, a.scp)], len(table))


if __name__ == "__main__":
    sys.exit(main())
