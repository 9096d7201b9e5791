"""Data-dir tools (utils/*.sh over pyxv.datadir) on hand-made good and broken dirs."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from pyxv.datadir import DataDir, utt2spk_to_spk2utt, write_datadir
from pyxv.datadir.split import _balanced_chunks, split_datadir
from pyxv.datadir.tables import VERBATIM, c_less, c_sorted, ckey, classify, first_dups, read_lines, table_lines
from pyxv.datadir.validate import validate_datadir
from pyxv.io import read_table

REPO = Path(__file__).resolve().parents[1]


def tool(name, *args, cwd=None):
    return subprocess.run([str(REPO / name), *map(str, args)], cwd=cwd, capture_output=True, text=True)


def make_dir(root: Path, name="good", spk=("s1", "s2", "s3"), per=3, feats=True, emo=True) -> Path:
    """A small valid data dir: real wav files, MFCC-shaped feats, VAD vectors."""
    d = root / name
    d.mkdir(parents=True)
    wavdir = root / "wav"
    wavdir.mkdir(exist_ok=True)
    utt2spk = {}
    for s in spk:
        for i in range(per):
            utt2spk[f"{s}-u{i}"] = s
    utts = sorted(utt2spk)
    for u in utts:
        sf.write(wavdir / f"{u}.wav", np.zeros(800, np.float32), 16000)
    (d / "wav.scp").write_text("".join(f"{u} {wavdir}/{u}.wav\n" for u in utts))
    (d / "utt2spk").write_text("".join(f"{u} {utt2spk[u]}\n" for u in utts))
    spk2utt = utt2spk_to_spk2utt(utt2spk)
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(v)}\n" for s, v in spk2utt.items()))
    (d / "spk2gender").write_text("".join(f"{s} {'mf'[k % 2]}\n" for k, s in enumerate(sorted(spk))))
    if emo:
        emos = ["neutral", "happy", "sad", "angry", "disgust"]
        (d / "utt2emo").write_text("".join(f"{u} {emos[k % 5]}\n" for k, u in enumerate(utts)))
    if feats:
        n = {u: 20 + k for k, u in enumerate(utts)}
        kaldiio.save_ark(str(d / "feats.ark"), {u: np.random.rand(n[u], 23).astype(np.float32) for u in utts},
                         scp=str(d / "feats.scp"))
        kaldiio.save_ark(str(d / "vad.ark"), {u: np.ones(n[u], np.float32) for u in utts}, scp=str(d / "vad.scp"))
        (d / "utt2num_frames").write_text("".join(f"{u} {n[u]}\n" for u in utts))
    return d


def utts_of(d: Path) -> list[str]:
    return [ln.split()[0] for ln in (d / "utt2spk").read_text().splitlines()]


# ---------------------------------------------------------------------- split
def test_split_by_utterance_and_per_speaker(tmp_path):
    d = make_dir(tmp_path, spk=("s1", "s2", "s3", "s4"), per=3)
    p = tool("utils/split_data.sh", d, 5)
    assert p.returncode == 0, p.stderr
    sizes = [len(utts_of(d / "split5" / str(i))) for i in range(1, 6)]
    assert sizes == [3, 3, 2, 2, 2]
    assert sum((utts_of(d / "split5" / str(i)) for i in range(1, 6)), []) == utts_of(d)
    for i in range(1, 6):
        part = d / "split5" / str(i)
        assert validate_datadir(part) == [], i
        assert set(read_table(part / "feats.scp")) == set(utts_of(part))
    # Reused when up to date: nothing rewritten.
    t = (d / "split5/1/utt2spk").stat().st_mtime_ns
    p = tool("utils/split_data.sh", d, 5)
    assert p.returncode == 0 and p.stderr == ""
    assert (d / "split5/1/utt2spk").stat().st_mtime_ns == t
    # Per speaker: no speaker straddles two parts.
    p = tool("utils/split_data.sh", "--per-spk", d, 3)
    assert p.returncode == 0, p.stderr
    spk_sets = [set(read_table(d / "split3" / str(i) / "utt2spk").values()) for i in range(1, 4)]
    assert sum(len(s) for s in spk_sets) == 4 and set().union(*spk_sets) == {"s1", "s2", "s3", "s4"}
    assert all(s for s in spk_sets)
    # A changed source is re-split.
    os.utime(d / "utt2emo")
    (d / "utt2emo").write_text((d / "utt2emo").read_text().replace("neutral", "sad"))
    p = tool("utils/split_data.sh", "--per-spk", d, 3)
    assert "split" in p.stderr
    assert "neutral" not in (d / "split3/1/utt2emo").read_text()
    # A file removed from the source is removed from the parts.
    (d / "vad.scp").unlink()
    p = tool("utils/split_data.sh", "--per-spk", d, 3)
    assert "split" in p.stderr and not (d / "split3/2/vad.scp").exists()


def test_split_too_many_parts_is_a_clear_error(tmp_path):
    d = make_dir(tmp_path, spk=("s1", "s2"), per=1, feats=False)
    p = tool("utils/split_data.sh", d, 3)
    assert p.returncode == 1 and "cannot split 2 utterances into 3 parts" in p.stderr
    p = tool("utils/split_data.sh", "--per-spk", d, 3)
    assert p.returncode == 1 and "cannot split 2 speakers" in p.stderr


def _reference_filter(src: Path, dest: Path, keep_utts) -> None:
    """The per-part filter split_data.sh ran before it became one pass (every
    part re-reading every source file): the reference its parts must equal."""
    keep = set(keep_utts)
    kinds = classify(src)
    utt2spk = {u: s for u, s in first_dups(read_lines(src / "utt2spk")).items() if u in keep}
    keep &= set(utt2spk)
    speakers = set(utt2spk.values())
    recs = None
    if (src / "segments").is_file():
        segs = {u: v for u, v in first_dups(read_lines(src / "segments")).items() if u in keep}
        recs = {v.split()[0] for v in segs.values() if v.split()}
    dest.mkdir(parents=True)
    for name, kind in kinds.items():
        table = first_dups(read_lines(src / name))
        if kind == "utt":
            out = {k: v for k, v in table.items() if k in keep}
        elif kind == "spk":
            out = {k: v for k, v in table.items() if k in speakers}
        elif kind == "reco":
            out = {k: v for k, v in table.items() if recs is None or k in recs}
        else:
            out = {k: "" for k in table if k in keep}
        (dest / name).write_text("".join(ln + "\n" for ln in table_lines(out)))
    spk2utt = utt2spk_to_spk2utt(utt2spk)
    (dest / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in
                                          sorted(spk2utt.items(), key=lambda kv: ckey(kv[0]))))
    for name in VERBATIM:
        if (src / name).is_file():
            (dest / name).write_text((src / name).read_text())


def _reference_chunks(sizes, n):
    """The balanced per-speaker cut before bisection (a scan per cut)."""
    total = sum(sizes)
    cum = list(np.cumsum(sizes))
    bounds, start = [], 0
    for k in range(1, n):
        target = total * k / n
        lo, hi = start + 1, len(sizes) - (n - k)
        best = min(range(lo, hi + 1), key=lambda i: (abs(cum[i - 1] - target), i))
        bounds.append((start, best))
        start = best
    bounds.append((start, len(sizes)))
    return bounds


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file() and not p.name.startswith(".")}


@pytest.mark.parametrize("segments", [False, True])
def test_split_equals_the_per_part_filter(tmp_path, segments):
    # Uneven speakers, an unknown-speaker list, a duplicated and an out-of-order
    # line, and (with segments) recordings shared by utterances of two parts.
    rng = np.random.default_rng(3)
    d = tmp_path / "src"
    d.mkdir()
    utt2spk = {f"{s}-u{i:02d}": s for s in ("a1", "b2", "c3", "d4", "e5") for i in range(int(rng.integers(1, 9)))}
    utts = sorted(utt2spk)
    (d / "utt2spk").write_text("".join(f"{u} {utt2spk[u]}\n" for u in utts))
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(v)}\n" for s, v in utt2spk_to_spk2utt(utt2spk).items()))
    (d / "spk2gender").write_text("a1 m\nb2 f\nc3 m\nd4 f\ne5 m\n")
    emo = [f"{u} {['happy', 'sad'][k % 2]}" for k, u in enumerate(utts)]
    (d / "utt2emo").write_text("\n".join([emo[1], emo[0], *emo[1:], emo[2]]) + "\n")  # disorder + duplicate
    (d / "unknown_spk_utts").write_text(f"{utts[0]}\n{utts[-1]}\n")
    (d / "frame_shift").write_text("0.01\n")
    if segments:
        recs = {u: f"rec{k // 3}" for k, u in enumerate(utts)}
        (d / "segments").write_text("".join(f"{u} {recs[u]} 0.{k % 9} 1.5\n" for k, u in enumerate(utts)))
        (d / "wav.scp").write_text("".join(f"{r} /w/{r}.wav\n" for r in sorted(set(recs.values()))))
        (d / "reco2dur").write_text("".join(f"{r} 3.0\n" for r in sorted(set(recs.values()))))
    else:
        (d / "wav.scp").write_text("".join(f"{u} sox /w/{u}.flac -t wav - |\n" for u in utts))
    for n, per_spk in ((4, False), (len(utts), False), (1, False), (3, True), (5, True)):
        parts, _ = split_datadir(d, n, per_spk=per_spk, force=True)
        spk2utt = utt2spk_to_spk2utt(utt2spk)
        if per_spk:
            spks = sorted(spk2utt)
            groups = [[u for s in spks[a:b] for u in spk2utt[s]]
                      for a, b in _reference_chunks([len(spk2utt[s]) for s in spks], n)]
        else:
            q, r = divmod(len(utts), n)
            bounds = np.cumsum([0] + [q + (k < r) for k in range(n)])
            groups = [utts[bounds[k]:bounds[k + 1]] for k in range(n)]
        for k, (part, group) in enumerate(zip(parts, groups)):
            ref = tmp_path / f"ref_{n}_{per_spk}_{k}"
            _reference_filter(d, ref, group)
            assert _files(part) == _files(ref), (n, per_spk, k)


def test_c_locale_order_fast_paths():
    ascii_keys = ["b-2", "B-1", "a_1", "a-1", "a", "10", "9"]
    mixed = ascii_keys + ["\u00e9t\u00e9", "\uffff", "\U0001f600", "z\udcff", "\u0800"]
    for keys in (ascii_keys, mixed):
        assert c_sorted(keys) == sorted(keys, key=ckey)
        for a in keys:
            for b in keys:
                assert c_less(a, b) == (ckey(a) < ckey(b)), (a, b)


def test_balanced_chunks_equal_the_scan():
    rng = np.random.default_rng(0)
    for _ in range(300):
        m = int(rng.integers(1, 40))
        sizes = [int(x) for x in rng.integers(0 if rng.random() < 0.3 else 1, 12, size=m)]
        n = int(rng.integers(1, m + 1))
        assert _balanced_chunks(sizes, n) == _reference_chunks(sizes, n), (sizes, n)


# ------------------------------------------------------------------- validate
def test_validate_accepts_a_good_dir(tmp_path):
    d = make_dir(tmp_path)
    p = tool("utils/validate_data_dir.sh", d)
    assert p.returncode == 0, p.stderr
    assert "Successfully validated" in p.stdout


def _break(d: Path, name: str, fn):
    lines = (d / name).read_text().splitlines()
    (d / name).write_text("".join(ln + "\n" for ln in fn(lines)))


def test_validate_names_every_problem(tmp_path):
    d = make_dir(tmp_path)
    _break(d, "utt2emo", lambda ls: [ls[1], ls[0], *ls[2:]])               # unsorted
    _break(d, "spk2gender", lambda ls: [*ls, "s3 x"])                       # duplicate key, bad gender
    _break(d, "feats.scp", lambda ls: [*ls, "s9-u0 " + ls[0].split()[1]])   # utterance without speaker
    _break(d, "wav.scp", lambda ls: [ls[0].replace("s1-u0.wav", "gone.wav"), *ls[1:]])  # missing audio
    _break(d, "utt2num_frames", lambda ls: [ls[0].split()[0] + " 999", *ls[1:]])  # frames disagree
    kaldiio.save_ark(str(d / "vad2.ark"), {"s2-u1": np.ones(3, np.float32)}, scp=str(d / "vad2.scp"))
    vad = dict(read_table(d / "vad.scp"))
    vad["s2-u1"] = read_table(d / "vad2.scp")["s2-u1"]                   # feats vs vad disagree
    (d / "vad.scp").write_text("".join(f"{k} {vad[k]}\n" for k in sorted(vad)))
    p = tool("utils/validate_data_dir.sh", d)
    assert p.returncode == 1
    err = p.stderr
    assert "utt2emo is not sorted in C-locale order" in err and "'s1-u0' after 's1-u1'" in err
    assert "spk2gender: 1 duplicate keys: 's3' (line 4)" in err
    assert "feats.scp has 1 utterances not in utt2spk: s9-u0" in err
    assert "wav.scp: 1 audio files do not exist" in err and "gone.wav" in err
    assert "feats.scp and utt2num_frames disagree" in err and "s1-u0 (20 vs 999)" in err
    assert "feats.scp and vad.scp disagree" in err and "s2-u1 (24 vs 3)" in err
    assert "5 problems" not in err  # counted below
    assert sum(1 for ln in err.splitlines() if ln.startswith("validate_data_dir.sh:")) >= 7
    # --no-feats / --no-wav skip those checks.
    p = tool("utils/validate_data_dir.sh", "--no-feats", "--no-wav", d)
    assert "frames" not in p.stderr and "audio files" not in p.stderr and "utt2emo is not sorted" in p.stderr


def test_validate_speaker_files(tmp_path):
    d = make_dir(tmp_path, feats=False)
    _break(d, "spk2utt", lambda ls: ls[:-1])
    _break(d, "spk2gender", lambda ls: [ls[0].replace(" m", " male"), *ls[1:]])
    _break(d, "utt2emo", lambda ls: [ls[0].split()[0] + " Happy", *ls[1:]])
    problems = validate_datadir(d)
    text = "\n".join(problems)
    assert "spk2utt lacks 1 speakers of utt2spk: s3" in text
    assert "gender other than m/f" in text and "s1='male'" in text
    assert "utt2emo: 1 labels are not one lower-case word" in text


def test_validate_speaker_order_and_segments(tmp_path):
    d = make_dir(tmp_path, feats=False, emo=False)
    # An utterance whose id does not start with its speaker breaks Kaldi's sort order.
    (d / "utt2spk").write_text("a-1 s2\nb-1 s1\n")
    (d / "spk2utt").write_text("s1 b-1\ns2 a-1\n")
    (d / "spk2gender").write_text("s1 m\ns2 f\n")
    wav = list(read_table(tmp_path / "good" / "wav.scp").values())[0]
    (d / "wav.scp").write_text(f"rec1 {wav}\n")
    (d / "segments").write_text("a-1 rec1 0.0 0.02\nb-1 rec2 0.5 0.1\n")
    text = "\n".join(validate_datadir(d))
    assert "must start with their speaker id" in text
    assert "segments names 1 recordings missing from wav.scp: rec2" in text
    assert "0 <= start < end: b-1" in text


# ------------------------------------------------------------------------ fix
def test_fix_keeps_the_intersection_and_says_why(tmp_path):
    d = make_dir(tmp_path)
    _break(d, "utt2spk", lambda ls: [ls[1], ls[0], *ls[2:], ls[2]])         # unsorted + duplicate line
    _break(d, "utt2emo", lambda ls: [ln for ln in ls if not ln.startswith("s2-u0")])  # missing label
    _break(d, "feats.scp", lambda ls: [*ls, "zz-u9 " + ls[0].split()[1]])   # utterance without speaker
    _break(d, "utt2num_frames", lambda ls: [ls[0].split()[0] + " 999", *ls[1:]])  # frames disagree
    _break(d, "wav.scp", lambda ls: [ln for ln in ls if not ln.startswith("s3-")])  # speaker s3 loses all
    before = (d / "feats.scp").read_text()
    p = tool("utils/fix_data_dir.sh", d)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "utt2spk: dropped 1 duplicate lines" in out
    assert "dropped 3 utterances: not in wav.scp" in out
    assert "dropped 1 utterances: not in utt2emo" in out
    assert "dropped 1 utterances: frame counts of feats.scp and utt2num_frames disagree" in out
    assert "feats.scp: removed 1 entries of utterances not in utt2spk" in out
    assert "dropped 1 speakers left without utterances" in out
    assert "kept 4 of 9 utterances (5 dropped), 2 speakers" in out
    assert utts_of(d) == ["s1-u1", "s1-u2", "s2-u1", "s2-u2"]
    assert validate_datadir(d) == []
    assert (d / "spk2gender").read_text() == "s1 m\ns2 f\n"
    assert (d / ".backup" / "feats.scp").read_text() == before
    # Idempotent: a second run changes nothing.
    p = tool("utils/fix_data_dir.sh", d)
    assert "kept 4 of 4 utterances (0 dropped)" in p.stdout


# --------------------------------------------------------------------- subset
def test_subset_rules(tmp_path):
    d = make_dir(tmp_path)
    (tmp_path / "ul").write_text("s2-u1\ns1-u0 extra\nnot-there\n")
    (tmp_path / "sl").write_text("s3\n")
    cases = {
        ("--utt-list", tmp_path / "ul"): ["s1-u0", "s2-u1"],
        ("--spk-list", tmp_path / "sl"): ["s3-u0", "s3-u1", "s3-u2"],
        ("--first", 2): ["s1-u0", "s1-u1"],
        ("--last", 2): ["s3-u1", "s3-u2"],
    }
    for k, (args, want) in enumerate(cases.items()):
        dest = tmp_path / f"sub{k}"
        p = tool("utils/subset_data_dir.sh", *args, d, dest)
        assert p.returncode == 0, p.stderr
        assert utts_of(dest) == want
        assert validate_datadir(dest) == [], args
    # Kaldi's positional forms: --first <src> N <dest>; <src> N <dest> is random (seeded).
    p = tool("utils/subset_data_dir.sh", "--first", d, 3, tmp_path / "k1")
    assert p.returncode == 0 and utts_of(tmp_path / "k1") == ["s1-u0", "s1-u1", "s1-u2"]
    r = []
    for k, seed in enumerate((1, 1, 2, 3, 4)):
        dest = tmp_path / f"r{k}"
        p = tool("utils/subset_data_dir.sh", "--seed", seed, d, 4, dest)
        assert p.returncode == 0, p.stderr
        r.append(utts_of(dest))
        assert len(r[-1]) == 4 and r[-1] == sorted(r[-1])
    assert r[0] == r[1] and any(x != r[0] for x in r[2:])
    assert set(read_table(tmp_path / "r0/spk2gender")) == set(read_table(tmp_path / "r0/utt2spk").values())
    p = tool("utils/subset_data_dir.sh", "--first", 99, d, tmp_path / "x")
    assert p.returncode == 1 and "only 9 utterances" in p.stderr


# -------------------------------------------------------------------- combine
def test_combine(tmp_path):
    a = make_dir(tmp_path / "a", spk=("s1", "s2"))
    b = make_dir(tmp_path / "b", spk=("s3",), emo=False)
    (a / "gemaps.scp").write_text((a / "vad.scp").read_text())
    (b / "unknown_spk_utts").write_text("s3-u1\n")  # a list: absent elsewhere means none there
    dest = tmp_path / "comb"
    p = tool("utils/combine_data.sh", dest, a, b)
    assert p.returncode == 0, p.stderr
    assert "not combining utt2emo" in p.stderr and "not combining gemaps.scp" in p.stderr
    assert utts_of(dest) == utts_of(a) + utts_of(b)
    assert not (dest / "utt2emo").exists()
    assert (dest / "unknown_spk_utts").read_text() == "s3-u1\n"
    assert validate_datadir(dest) == []
    assert (dest / "spk2gender").read_text() == "s1 m\ns2 f\ns3 m\n"
    # Idempotent: the same call leaves every file untouched.
    stamps = {f.name: f.stat().st_mtime_ns for f in dest.iterdir()}
    p = tool("utils/combine_data.sh", dest, a, b)
    assert p.returncode == 0
    assert {f.name: f.stat().st_mtime_ns for f in dest.iterdir()} == stamps
    assert "up to date" in p.stdout   # decided in the shell, from dest/.combined
    # A changed source file is combined again.
    os.utime(b / "spk2gender", ns=(stamps[".combined"] + 10**9,) * 2)
    (b / "spk2gender").write_text("s3 f\n")
    p = tool("utils/combine_data.sh", dest, a, b)
    assert p.returncode == 0 and "up to date" not in p.stdout
    assert (dest / "spk2gender").read_text() == "s1 m\ns2 f\ns3 f\n"
    # Other arguments are another combine.
    p = tool("utils/combine_data.sh", "--skip-fix", "true", dest, a, b)
    assert p.returncode == 0 and "up to date" not in p.stdout
    # A repeated utterance id is an error.
    p = tool("utils/combine_data.sh", tmp_path / "dup", a, a)
    assert p.returncode == 1 and "occur in more than one source" in p.stderr and "s1-u0" in p.stderr


# ----------------------------------------------------------------------- copy
def test_copy_with_prefix_and_suffix(tmp_path):
    d = make_dir(tmp_path, feats=False)
    dest = tmp_path / "rev"
    p = tool("utils/copy_data_dir.sh", "--utt-suffix", "-reverb", d, dest)
    assert p.returncode == 0, p.stderr
    assert utts_of(dest)[:2] == ["s1-u0-reverb", "s1-u1-reverb"]
    assert read_table(dest / "utt2orig")["s2-u1-reverb"] == "s2-u1"
    assert read_table(dest / "utt2emo")["s2-u1-reverb"] == read_table(d / "utt2emo")["s2-u1"]
    assert validate_datadir(dest) == []
    dest2 = tmp_path / "pre"
    p = tool("utils/copy_data_dir.sh", "--utt-prefix", "x-", "--spk-prefix", "x-", d, dest2)
    assert p.returncode == 0, p.stderr
    assert read_table(dest2 / "spk2gender") == {"x-s1": "m", "x-s2": "f", "x-s3": "m"}
    assert validate_datadir(dest2) == []
    # A suffix that changes the sort order: output is re-sorted.
    e = tmp_path / "e"
    e.mkdir()
    (e / "utt2spk").write_text("a a\na-b a\n")
    (e / "spk2utt").write_text("a a a-b\n")
    wav = next(iter(read_table(d / "wav.scp").values()))
    (e / "wav.scp").write_text(f"a {wav}\na-b {wav}\n")
    p = tool("utils/copy_data_dir.sh", "--utt-suffix", "-x", e, tmp_path / "e2")
    assert p.returncode == 0, p.stderr
    assert utts_of(tmp_path / "e2") == ["a-b-x", "a-x"]
    assert validate_datadir(tmp_path / "e2") == []


# ------------------------------------------------------------------ propagate
def test_propagate_features(tmp_path):
    corpus = tmp_path / "corpus"
    alld = make_dir(corpus, "all")
    (alld / "gemaps.scp").write_text((alld / "vad.scp").read_text())
    for fold, utts in (("fold1/train", ["s1-u0", "s1-u1", "s2-u0"]), ("fold1/test", ["s3-u0", "s3-u9"])):
        (corpus / fold).mkdir(parents=True)
        (corpus / fold / "utt2spk").write_text("".join(f"{u} {u[:2]}\n" for u in utts))
    p = tool("local/propagate_features.sh", corpus)
    assert p.returncode == 0, p.stderr
    assert "fold1/test: 1 of 2 utterances lack feats.scp in all/: s3-u9" in p.stderr
    for name in ("feats.scp", "vad.scp", "utt2num_frames", "gemaps.scp"):
        t = read_table(corpus / "fold1/train" / name)
        assert list(t) == ["s1-u0", "s1-u1", "s2-u0"]
        assert t["s2-u0"] == read_table(alld / name)["s2-u0"]
    assert not (corpus / "fold1/train/gemaps_lld.scp").exists()
    # Nothing changed: skipped in the shell; a changed all/feats.scp or a new subset: redone.
    p = tool("local/propagate_features.sh", corpus)
    assert p.returncode == 0 and "the subsets of" in p.stdout
    feats = (alld / "feats.scp").read_text().splitlines()
    (alld / "feats.scp").write_text("".join(ln + "\n" for ln in feats if not ln.startswith("s1-u1 ")))
    later = (corpus / ".propagated").stat().st_mtime_ns + 10**9
    os.utime(alld / "feats.scp", ns=(later, later))
    p = tool("local/propagate_features.sh", corpus)
    assert "the subsets of" not in p.stdout and list(read_table(corpus / "fold1/train/feats.scp")) == ["s1-u0", "s2-u0"]
    (corpus / "fold2/test").mkdir(parents=True)
    (corpus / "fold2/test/utt2spk").write_text("s2-u1 s2\n")
    os.utime(corpus / "fold2/test/utt2spk", ns=(later + 10**9,) * 2)
    p = tool("local/propagate_features.sh", corpus)
    assert "the subsets of" not in p.stdout and list(read_table(corpus / "fold2/test/feats.scp")) == ["s2-u1"]
    p = tool("local/propagate_features.sh", "--strict", "true", corpus)
    assert p.returncode == 1
    p = tool("local/propagate_features.sh", "--strict", "true", corpus)
    assert p.returncode == 1   # a failed strict run leaves no stamp to skip on


# ------------------------------------------------------- filter_scp, spk2utt
def test_filter_scp_and_spk2utt(tmp_path):
    (tmp_path / "ids").write_text("b\nc x\n")
    (tmp_path / "t").write_text("a 1\nb 2\nc 3\n")
    p = tool("utils/filter_scp.py", tmp_path / "ids", tmp_path / "t")
    assert p.returncode == 0 and p.stdout == "b 2\nc 3\n"
    p = tool("utils/filter_scp.py", "--exclude", tmp_path / "ids", tmp_path / "t")
    assert p.stdout == "a 1\n"
    (tmp_path / "t2").write_text("u1 b\nu2 a\nu3 c\n")
    p = tool("utils/filter_scp.py", "-f", 2, tmp_path / "ids", tmp_path / "t2")
    assert p.stdout == "u1 b\nu3 c\n"
    (tmp_path / "u2s").write_text("s1-b s1\ns1-a s1\ns10-a s10\ns2-a s2\n")
    p = tool("utils/utt2spk_to_spk2utt.py", tmp_path / "u2s")
    assert p.returncode == 0 and p.stdout == "s1 s1-a s1-b\ns10 s10-a\ns2 s2-a\n"
    (tmp_path / "bad").write_text("u1 s1\nu1 s2\n")
    p = tool("utils/utt2spk_to_spk2utt.py", tmp_path / "bad")
    assert p.returncode == 1 and "duplicate utterance 'u1'" in p.stderr


# ------------------------------------------------------------------ pyxv.io
def test_io_tables_and_audio(tmp_path):
    from pyxv import io as pio

    (tmp_path / "t").write_text("b x y\na 1\n\n")
    assert pio.read_table(tmp_path / "t") == {"b": "x y", "a": "1"}
    assert pio.read_table(tmp_path / "t", split=True)["b"] == ["x", "y"]
    (tmp_path / "d").write_text("a 1\na 2\n")
    with pytest.raises(ValueError, match="d:2: duplicate key 'a'"):
        pio.read_table(tmp_path / "d")
    pio.write_table(tmp_path / "w", {"b": [1, 2], "B": "z", "a": "q"})
    assert (tmp_path / "w").read_text() == "B z\na q\nb 1 2\n"  # C-locale order
    with pytest.raises(RuntimeError):
        with pio.atomic_open(tmp_path / "w") as f:
            f.write("half")
            raise RuntimeError
    assert (tmp_path / "w").read_text() == "B z\na q\nb 1 2\n" and len(list(tmp_path.iterdir())) == 3
    # Audio: a file, a pipe, a segment, resampling; floats on the int16 scale.
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "a.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, subtype="PCM_16")
    x, sr = pio.read_audio(str(tmp_path / "a.wav"))
    assert sr == 16000 and len(x) == 16000 and abs(np.abs(x).max() - 16384) < 3
    y, _ = pio.read_audio(f"cat {tmp_path}/a.wav |")
    assert np.array_equal(x, y)
    s, _ = pio.read_audio(str(tmp_path / "a.wav"), start=0.25, end=0.5)
    assert np.array_equal(s, x[4000:8000])
    r, sr8 = pio.read_audio(str(tmp_path / "a.wav"), sample_rate=8000)
    assert sr8 == 8000 and len(r) == 8000
    assert pio.audio_duration(str(tmp_path / "a.wav")) == pytest.approx(1.0)
    with pytest.raises(pio.AudioError, match="u1 .*does not exist"):
        pio.read_audio(str(tmp_path / "missing.wav"), name="u1")
    with pytest.raises(pio.AudioError, match="exit status 3"):
        pio.read_audio("exit 3 |")


def test_write_datadir_writes_the_tables_and_returns_the_dir(tmp_path):
    d = write_datadir(tmp_path / "dd", utt2spk={"s1-a": "s1", "s1-b": "s1", "s2-a": "s2"},
                      wav_scp={"s1-a": "a.wav", "s1-b": "b.wav", "s2-a": "c.wav"}, utt2emo={"s1-a": "sad"},
                      feats_scp=None)
    assert d == tmp_path / "dd"
    assert (d / "spk2utt").read_text() == "s1 s1-a s1-b\ns2 s2-a\n"
    assert (d / "utt2emo").read_text() == "s1-a sad\n" and not (d / "feats.scp").exists()
    assert DataDir(d).utt2spk == {"s1-a": "s1", "s1-b": "s1", "s2-a": "s2"}
