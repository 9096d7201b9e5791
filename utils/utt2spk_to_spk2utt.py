#!/usr/bin/env python3
"""Make spk2utt from utt2spk (Kaldi's utt2spk_to_spk2utt.pl).

  utils/utt2spk_to_spk2utt.py [<utt2spk>] > spk2utt

Reads standard input when no file is given. Speakers and each speaker's
utterances come out sorted in C-locale (byte) order, as Kaldi's tools expect.
Standard library only.
"""
import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if len(argv) > 1:
        print("usage: utt2spk_to_spk2utt.py [<utt2spk>] > spk2utt", file=sys.stderr)
        return 1
    name = argv[0] if argv else "stdin"
    try:
        src = open(argv[0], encoding="utf-8", errors="surrogateescape") if argv else sys.stdin
    except OSError as e:
        print(f"utt2spk_to_spk2utt.py: cannot read {name}: {e.strerror}", file=sys.stderr)
        return 1
    spk2utt = {}
    seen = set()
    with src:
        for lineno, line in enumerate(src, 1):
            f = line.split()
            if not f:
                continue
            if len(f) != 2:
                print(f"utt2spk_to_spk2utt.py: {name}:{lineno}: expected 'utt spk', got '{line.strip()}'",
                      file=sys.stderr)
                return 1
            if f[0] in seen:
                print(f"utt2spk_to_spk2utt.py: {name}:{lineno}: duplicate utterance '{f[0]}'", file=sys.stderr)
                return 1
            seen.add(f[0])
            spk2utt.setdefault(f[1], []).append(f[0])
    key = lambda s: s.encode("utf-8", "surrogateescape")  # noqa: E731 - C-locale order
    for spk in sorted(spk2utt, key=key):
        sys.stdout.write(spk + " " + " ".join(sorted(spk2utt[spk], key=key)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
