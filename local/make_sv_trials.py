#!/usr/bin/env python3
"""Write the speaker-verification trials of a data dir in Kaldi format.

  local/make_sv_trials.py [--max-trials N] [--force] <data> <trials>

Every unordered pair of distinct utterances of the same gender (spk2gender),
``enroll test target|nontarget``, target when the speakers match. Utterances
of unknown speakers (``unknown_spk_utts``) or without an emotion are left out
and counted. The scorer (steps/score_sv.sh) does not need this file: it applies
the same rule on the fly; write it to inspect the trials or to feed other tools.
Sets of more than --max-trials trials are refused unless --force.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyxv.io import atomic_open  # noqa: E402
from pyxv.sv.trials import iter_trials, load_trial_set  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-trials", type=int, default=20_000_000,
                   help="refuse to write more trials than this without --force (default 20 million)")
    p.add_argument("--force", action="store_true", help="write however many trials there are")
    p.add_argument("data")
    p.add_argument("trials")
    a = p.parse_args(argv)
    try:
        ts = load_trial_set(a.data)
    except (FileNotFoundError, ValueError) as e:
        print(f"make_sv_trials.py: {e}", file=sys.stderr)
        return 1
    for m in ts.messages:
        print(f"make_sv_trials.py: {m}", file=sys.stderr)
    n, n_tar = ts.count_trials()
    if n > a.max_trials and not a.force:
        print(f"make_sv_trials.py: {a.data} gives {n} trials (over --max-trials {a.max_trials}, about "
              f"{n * 40 / 1e9:.1f} GB of text); steps/score_sv.sh scores them without a file. "
              "Use --force to write it anyway.", file=sys.stderr)
        return 1
    with atomic_open(a.trials) as f:
        utts = ts.utts
        for i, j, t in iter_trials(ts):
            f.write(f"{utts[i]} {utts[j]} {'target' if t else 'nontarget'}\n")
    print(f"make_sv_trials.py: wrote {n} trials ({n_tar} target, {n - n_tar} nontarget) of {len(ts)} "
          f"utterances to {a.trials}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
