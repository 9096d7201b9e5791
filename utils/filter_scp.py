#!/usr/bin/env python3
"""Keep the lines of a table whose key is listed in an id list (Kaldi's filter_scp.pl).

  utils/filter_scp.py [--exclude] [-f N] <id-list> [<in.scp>] > out.scp

The ids are the first field of each line of <id-list>. A line of <in.scp>
(standard input if absent) is kept when its field N (default 1) is one of
them; --exclude keeps the others. Input order is preserved. Standard library only.
"""
import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="filter_scp.py", description=__doc__.split("\n")[0])
    p.add_argument("--exclude", action="store_true", help="keep lines whose key is NOT listed")
    p.add_argument("-f", "--field", type=int, default=1, help="1-based field to match (default 1)")
    p.add_argument("id_list")
    p.add_argument("input", nargs="?")
    a = p.parse_args(argv)
    if a.field < 1:
        p.error("-f needs a positive field number")
    try:
        with open(a.id_list, encoding="utf-8", errors="surrogateescape") as f:
            ids = {ln.split()[0] for ln in f if ln.strip()}
        src = open(a.input, encoding="utf-8", errors="surrogateescape") if a.input else sys.stdin
    except OSError as e:
        print(f"filter_scp.py: cannot read {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    out = sys.stdout
    with src:
        for lineno, line in enumerate(src, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < a.field:
                print(f"filter_scp.py: {a.input or 'stdin'}:{lineno}: fewer than {a.field} fields",
                      file=sys.stderr)
                return 1
            if (fields[a.field - 1] in ids) != a.exclude:
                out.write(line if line.endswith("\n") else line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
