#!/usr/bin/env python3
"""Stage 7 of run.sh: exp/RESULTS.md, results.csv beside it, pictures under report/.

Usage: local/make_report.py [--if-stale] [--corpus NAME] [--data DIR] [--no-plots] [--projection pca|tsne]
                            <exp-dir> <out-md>

With --if-stale the report is rebuilt only when something it reads is newer than it
(a file under <exp-dir>, the data dir root, pyxv/report/ or this script; its own
outputs, exp/stage_times and dot files aside), or when it leads with another corpus;
otherwise it says it is up to date, in well under a second.
"""
import argparse
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)


def newer_input(out_md: str, exp_dir: str, data: str):
    """The first file the report reads that is newer than ``out_md``, "missing" when
    ``out_md`` or a folder it reads from does not exist, else None.

    Skipped: the report's own outputs (``out_md``, results.csv and report/ beside it),
    ``<exp-dir>/stage_times`` (rewritten by every stage, the report's own included),
    names starting with a dot (locks, stamps, staging dirs) and __pycache__."""
    try:
        ref = os.stat(out_md).st_mtime_ns
    except OSError:
        return "missing"
    out_dir = os.path.dirname(out_md)
    skip = {os.path.normpath(p) for p in (out_md, os.path.join(out_dir, "results.csv"),
                                          os.path.join(out_dir, "report"), os.path.join(exp_dir, "stage_times"))}

    def skipped(path: str, name: str) -> bool:
        return name.startswith(".") or name == "__pycache__" or os.path.normpath(path) in skip

    for root in (exp_dir, data, os.path.join(ROOT, "pyxv", "report"), os.path.abspath(__file__)):
        if not os.path.exists(root):
            return "missing"
        if os.path.isfile(root):
            if os.stat(root).st_mtime_ns > ref:
                return root
            continue
        stack = [root]
        while stack:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    if skipped(e.path, e.name):
                        continue
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif e.is_file(follow_symlinks=False) and e.stat(follow_symlinks=False).st_mtime_ns > ref:
                        return e.path
    return None


def leads_with(out_md: str, corpus) -> bool:
    """Whether the report at ``out_md`` is about ``corpus`` first (its title line)."""
    with open(out_md, encoding="utf-8") as f:
        first = f.readline().rstrip("\n")
    return corpus is None or re.match(rf"# pyxv results: {re.escape(corpus)}(,|$)", first) is not None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--if-stale", action="store_true", help="rebuild only when an input is newer than the "
                   "report or the report leads with another corpus")
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
    if not os.path.isdir(a.exp_dir):
        print(f"make_report.py: exp dir {a.exp_dir} does not exist", file=sys.stderr)
        return 1
    if a.if_stale:
        data = a.data or os.path.join(os.path.dirname(os.path.realpath(a.exp_dir)), "data")
        if newer_input(a.out_md, a.exp_dir, data) is None and leads_with(a.out_md, a.corpus):
            print(f"make_report.py: {a.out_md} is newer than every result; up to date, not rebuilt")
            return 0
    os.environ.setdefault("MPLBACKEND", "Agg")
    from pyxv.report import build_report

    out = build_report(a.exp_dir, a.out_md, corpus=a.corpus, data=a.data, plots=not a.no_plots,
                       projection=a.projection, max_points=a.max_points)
    print(f"make_report.py: wrote {out}, {os.path.join(os.path.dirname(out), 'results.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
