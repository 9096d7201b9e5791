#!/usr/bin/env python3
"""Stage 7 of run.sh: exp/RESULTS.md, results.csv beside it, pictures under report/.

Usage: local/make_report.py [--corpus NAME] [--data DIR] [--no-plots] [--projection pca|tsne] <exp-dir> <out-md>
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--corpus", default=None, help="the corpus of this run (listed first); others found "
                   "under exp/emotion and exp/sv are reported too")
    p.add_argument("--data", default=None, help="data dir root (default: <exp-dir>/../data)")
    p.add_argument("--no-plots", action="store_true", help="tables only, no pictures")
    p.add_argument("--projection", choices=("pca", "tsne"), default="pca",
                   help="2-D projection of the x-vectors")
    p.add_argument("--max-points", type=int, default=3000, help="x-vectors drawn per projection")
    p.add_argument("exp_dir")
    p.add_argument("out_md")
    a = p.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    from pyxv.report import build_report

    if not os.path.isdir(a.exp_dir):
        print(f"make_report.py: exp dir {a.exp_dir} does not exist", file=sys.stderr)
        return 1
    out = build_report(a.exp_dir, a.out_md, corpus=a.corpus, data=a.data, plots=not a.no_plots,
                       projection=a.projection, max_points=a.max_points)
    print(f"make_report.py: wrote {out}, {os.path.join(os.path.dirname(out), 'results.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
