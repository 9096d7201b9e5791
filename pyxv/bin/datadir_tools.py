"""Entry point of the data-dir tools in utils/ (argparse only; logic in the modules of pyxv.datadir).

    python -m pyxv.bin.datadir_tools validate [--no-feats] [--no-text] [--no-wav] <data>
    python -m pyxv.bin.datadir_tools fix <data>
    python -m pyxv.bin.datadir_tools split [--per-spk] <data> <N>
    python -m pyxv.bin.datadir_tools subset [--utt-list F|--spk-list F|--first N|--last N|--random N] [--seed S] <src> [N] <dest>
    python -m pyxv.bin.datadir_tools combine <dest> <src1> <src2> ...
    python -m pyxv.bin.datadir_tools copy [--utt-prefix P] [--utt-suffix S] [--spk-prefix P] [--spk-suffix S] <src> <dest>
    python -m pyxv.bin.datadir_tools propagate <data/corpus>
"""
from __future__ import annotations

import argparse
import sys

from pyxv.datadir.combine import CombineError, combine_datadirs
from pyxv.datadir.copy import copy_datadir
from pyxv.datadir.fix import fix_datadir
from pyxv.datadir.propagate import propagate_features
from pyxv.datadir.split import split_datadir
from pyxv.datadir.subset import filter_datadir, select_utts
from pyxv.datadir.tables import read_lines
from pyxv.datadir.validate import validate_datadir

TOOLS = {
    "validate": "validate_data_dir.sh",
    "fix": "fix_data_dir.sh",
    "split": "split_data.sh",
    "subset": "subset_data_dir.sh",
    "combine": "combine_data.sh",
    "copy": "copy_data_dir.sh",
    "propagate": "propagate_features.sh",
}


def _bool_flags(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """Let Kaldi-style flags also take an explicit value: ``--per-spk true``."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in flags and i + 1 < len(argv) and argv[i + 1] in ("true", "false"):
            if argv[i + 1] == "true":
                out.append(a)
            i += 2
            continue
        if "=" in a and a.split("=", 1)[0] in flags:
            if a.split("=", 1)[1] == "true":
                out.append(a.split("=", 1)[0])
            i += 1
            continue
        out.append(a)
        i += 1
    return out


def _join_values(argv: list[str], opts: tuple[str, ...]) -> list[str]:
    """``--utt-suffix -reverb`` -> ``--utt-suffix=-reverb`` (argparse would take
    a value starting with '-' for an option)."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in opts and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _parser(tool: str, usage: str, desc: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=TOOLS[tool], usage=usage, description=desc)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in TOOLS:
        print(__doc__, file=sys.stderr)
        return 2
    tool, argv = argv[0], argv[1:]
    prog = TOOLS[tool]
    try:
        return globals()[f"_{tool}"](argv, prog)
    except (FileNotFoundError, ValueError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1


def _validate(argv, prog):
    p = _parser("validate", f"{prog} [--no-feats] [--no-text] [--no-wav] <data-dir>",
                "Check a Kaldi data dir and print every problem found; exit 1 if any.")
    p.add_argument("--no-feats", action="store_true", help="do not check feats.scp/vad.scp/utt2num_frames")
    p.add_argument("--no-text", action="store_true", help="do not check text")
    p.add_argument("--no-wav", action="store_true", help="do not check wav.scp/segments")
    p.add_argument("data")
    a = p.parse_args(_bool_flags(argv, ("--no-feats", "--no-text", "--no-wav")))
    problems = validate_datadir(a.data, no_feats=a.no_feats, no_text=a.no_text, no_wav=a.no_wav)
    for msg in problems:
        print(f"{prog}: {a.data}: {msg}", file=sys.stderr)
    if problems:
        print(f"{prog}: {a.data}: {len(problems)} problem{'s' if len(problems) > 1 else ''} "
              "(utils/fix_data_dir.sh may repair them)", file=sys.stderr)
        return 1
    n = len(read_lines(f"{a.data}/utt2spk"))
    print(f"{prog}: Successfully validated data-directory {a.data} ({n} utterances)")
    return 0


def _fix(argv, prog):
    p = _parser("fix", f"{prog} <data-dir>",
                "Keep the utterances consistent across all files, re-sort, rebuild spk2utt "
                "(originals saved in <data-dir>/.backup).")
    p.add_argument("data")
    a = p.parse_args(argv)
    for line in fix_datadir(a.data):
        print(f"{prog}: {a.data}: {line}")
    return 0


def _split(argv, prog):
    p = _parser("split", f"{prog} [--per-spk] <data-dir> <num-to-split>",
                "Split a data dir into <data-dir>/splitN/{1..N}, by utterance or by whole speakers; "
                "an up-to-date split is reused.")
    p.add_argument("--per-spk", action="store_true", help="keep each speaker in one part")
    p.add_argument("--per-utt", action="store_true", help="split by utterance (the default)")
    p.add_argument("--force", action="store_true", help="redo even if up to date")
    p.add_argument("data")
    p.add_argument("n", type=int)
    a = p.parse_args(_bool_flags(argv, ("--per-spk", "--per-utt", "--force")))
    parts, reused = split_datadir(a.data, a.n, per_spk=a.per_spk and not a.per_utt, force=a.force)
    if not reused:
        print(f"{prog}: split {a.data} into {a.n} parts in {parts[0].parent}", file=sys.stderr)
    return 0


def _subset(argv, prog):
    usage = (f"{prog} [--utt-list F | --spk-list F | --first N | --last N | --random N [--seed S]] "
             "<src> <dest>\n   or: " + f"{prog} [--first|--last] <src> <N> <dest>  (Kaldi's form; "
             "without --first/--last, N utterances at random)")
    p = _parser("subset", usage, "Make a data dir from part of another.")
    p.add_argument("--utt-list")
    p.add_argument("--spk-list")
    p.add_argument("--first", type=int)
    p.add_argument("--last", type=int)
    p.add_argument("--random", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("pos", nargs="+")
    # Kaldi's flags --first/--last come without a value; N is then positional.
    norm, flag = [], None
    i = 0
    while i < len(argv):
        x = argv[i]
        if x in ("--first", "--last", "--random") and (i + 1 >= len(argv) or not argv[i + 1].lstrip("-").isdigit()):
            flag = x
            i += 1
            continue
        norm.append(x)
        i += 1
    a = p.parse_args(norm)
    pos = a.pos
    if len(pos) == 3:
        try:
            n = int(pos[1])
        except ValueError:
            p.error(f"the middle argument must be a number of utterances, not '{pos[1]}'")
        setattr(a, (flag or "--random")[2:], n)
        src, dest = pos[0], pos[2]
    elif len(pos) == 2:
        if flag:
            p.error(f"{flag} needs a number")
        src, dest = pos
    else:
        p.error("expected <src> [N] <dest>")
    rules = [r for r in ("utt_list", "spk_list", "first", "last", "random") if getattr(a, r) is not None]
    if len(rules) != 1:
        p.error("give exactly one of --utt-list, --spk-list, --first, --last, --random (or N)")
    for r in ("first", "last", "random"):
        v = getattr(a, r)
        if v is not None and v < 1:
            p.error(f"--{r} needs a positive number")
    from pathlib import Path

    if Path(src).resolve() == Path(dest).resolve():
        p.error("source and destination are the same dir")
    utts = select_utts(src, utt_list=a.utt_list, spk_list=a.spk_list, first=a.first, last=a.last,
                          random_n=a.random, seed=a.seed)
    if not utts:
        raise ValueError(f"the selection keeps no utterance of {src}")
    filter_datadir(src, dest, utts)
    n_src = len(read_lines(f"{src}/utt2spk"))
    print(f"{prog}: {dest}: {len(utts)} of {n_src} utterances of {src}")
    return 0


def _combine(argv, prog):
    p = _parser("combine", f"{prog} <dest-data-dir> <src-data-dir1> <src-data-dir2> ...",
                "Combine data dirs (files present in all sources); duplicate utterance ids are an error.")
    p.add_argument("--extra-files", default="",
                   help="files that must be combined (Kaldi's option; every common file is combined anyway)")
    p.add_argument("--skip-fix", choices=("true", "false"), default="true", help="accepted for Kaldi compatibility")
    p.add_argument("dest")
    p.add_argument("srcs", nargs="+")
    a = p.parse_args(argv)
    from pathlib import Path

    for f in a.extra_files.split():
        lack = [s for s in a.srcs if not (Path(s) / f).is_file()]
        if lack:
            print(f"{prog}: error: --extra-files {f} is missing from {', '.join(lack)}", file=sys.stderr)
            return 1
    try:
        lines = combine_datadirs(a.dest, a.srcs)
    except CombineError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    for line in lines:
        print(f"{prog}: {line}", file=sys.stderr if line.startswith("warning") else sys.stdout)
    return 0


def _copy(argv, prog):
    p = _parser("copy", f"{prog} [--utt-prefix P] [--utt-suffix S] [--spk-prefix P] [--spk-suffix S] <src> <dest>",
                "Copy a data dir, optionally renaming utterances and speakers (Kaldi's semantics).")
    for o in ("--utt-prefix", "--utt-suffix", "--spk-prefix", "--spk-suffix"):
        p.add_argument(o, default="")
    p.add_argument("src")
    p.add_argument("dest")
    a = p.parse_args(_join_values(argv, ("--utt-prefix", "--utt-suffix", "--spk-prefix", "--spk-suffix")))
    copy_datadir(a.src, a.dest, utt_prefix=a.utt_prefix, utt_suffix=a.utt_suffix,
                    spk_prefix=a.spk_prefix, spk_suffix=a.spk_suffix)
    n = len(read_lines(f"{a.dest}/utt2spk"))
    print(f"{prog}: copied {n} utterances from {a.src} to {a.dest}")
    return 0


def _propagate(argv, prog):
    p = _parser("propagate", f"{prog} [--strict true|false] data/<corpus>",
                "Copy feats.scp, vad.scp, utt2num_frames, gemaps_lld.scp and gemaps.scp from all/ "
                "(and all_aug/) into every protocol subset, filtered to its utterances.")
    p.add_argument("--strict", choices=("true", "false"), default="false",
                   help="exit 1 when some utterance lacks a feature")
    p.add_argument("corpus_dir")
    a = p.parse_args(argv)
    lines = propagate_features(a.corpus_dir)
    warned = False
    for line in lines:
        w = line.startswith("warning")
        warned |= w
        print(f"{prog}: {line}", file=sys.stderr if w else sys.stdout)
    return 1 if warned and a.strict == "true" else 0


if __name__ == "__main__":
    sys.exit(main())
