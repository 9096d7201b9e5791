"""Batch inference, emotion over time and several-utterance enrolment (issue 25
parts 2-4): ``pyxv embed --nj/--batch/--timing``, ``pyxv emotion --window/--segments``,
``pyxv verify --enroll/--test/--speaker``, on real RAVDESS clips with the tiny
models of tests/cli_models.py."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from cli_models import clips, run_cli, setup  # noqa: F401 - the module's fixture, trained once here too

from pyxv.segments import SegmentsError, read_segments, segment_id, summarize, uniform_windows


# ------------------------------------------------------------------ pure parts
def test_uniform_windows_cover_the_file():
    assert uniform_windows(10.4, 3, 3) == [(0, 3), (3, 6), (6, 10.4)]       # 1.4 s left: joined to the last window
    assert uniform_windows(10.5, 3, 3) == [(0, 3), (3, 6), (6, 9), (9, 10.5)]  # half a window: kept
    assert uniform_windows(9.0, 3, 3) == [(0, 3), (3, 6), (6, 9)]
    assert uniform_windows(7.0, 3, 1.5) == [(0, 3), (1.5, 4.5), (3, 6), (4.5, 7.0)]
    assert uniform_windows(2.0, 3, 1) == [(0, 2.0)]                        # shorter than a window: all of it
    from pyxv.segments import check_window

    assert check_window(2.0, None) == 2.0
    for w, h in ((0, None), (-1, 1), (2, 3), (float("nan"), None)):
        with pytest.raises(SegmentsError):
            check_window(w, h)
    assert segment_id("mix", 1.5, 4.5) == "mix-0000150-0000450"


def test_read_segments_and_its_errors(tmp_path):
    f = tmp_path / "segments"
    f.write_text("s1 recA 0.0 1.5\n# note\n\ns2 recA 1.5 -1\ns3 recB 0.25 0.75\n")
    assert read_segments(f) == {"recA": [("s1", 0.0, 1.5), ("s2", 1.5, -1.0)], "recB": [("s3", 0.25, 0.75)]}
    for text, what in (("s1 recA 0.0\n", "expected 'seg-id rec-id start end'"), ("s1 recA a b\n", "seconds"),
                       ("s1 recA 2 1\n", "0 <= start < end"), ("s1 r 0 1\ns1 r 1 2\n", "duplicate segment id")):
        f.write_text(text)
        with pytest.raises(SegmentsError, match=what) as e:
            read_segments(f)
        assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_summary_is_duration_weighted():
    P = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    s = summarize([(0, 1), (1, 4), (4, 5)], P, ["a", "b"])
    np.testing.assert_allclose(s["posteriors"], (P[0] * 1 + P[1] * 3 + P[2] * 1) / 5)
    assert s["emotion"] == "b" and s["majority"] == "b" and s["seconds_per_label"] == {"a": 1.0, "b": 4.0}
    # Duration, not count: one long 'a' segment outweighs two short 'b' ones.
    s = summarize([(0, 4), (4, 4.5), (4.5, 5)], P, ["a", "b"])
    assert s["majority"] == "a" and s["emotion"] == "a" and s["segments"] == 3 and s["duration"] == 5


# ------------------------------------------------------------ part 2: embed
def _scp(path: Path, entries) -> Path:
    path.write_text("".join(f"{n} {p}\n" for n, p in entries))
    return path


def test_embed_batched_equals_one_at_a_time(setup, tmp_path, capsys):
    import kaldiio

    xv = setup["xv"]
    entries = [(u, p) for u, p, _, _ in setup["test"]]          # 8 clips of two unseen actors
    scp = _scp(tmp_path / "wav.scp", entries)
    outs = {}
    for nj, batch in ((1, 256), (2, 3)):                         # in-process; 2 workers, blocks of 3 files
        ark = tmp_path / f"nj{nj}.ark"
        rc, _, err = run_cli(["embed", setup["xdir"], scp, ark, "--nj", nj, "--batch", batch], capsys)
        assert rc == 0, err
        outs[nj] = list(kaldiio.load_scp_sequential(str(ark.with_suffix(".scp"))))
        assert [k for k, _ in outs[nj]] == [u for u, _ in entries]  # input order
    for (k, a), (_, b) in zip(outs[1], outs[2]):
        np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_allclose(a, xv.embed_file(dict(entries)[k], k), atol=1e-5)
    # The Python API on arrays (the same samples, the same names: the same dither) gives the same vectors.
    arrays = [sf.read(p, dtype="float32") for _, p in entries[:3]]
    E = xv.embed_batch(arrays, names=[u for u, _ in entries[:3]], batch=2)
    np.testing.assert_allclose(E, np.stack([v for _, v in outs[1][:3]]), atol=1e-4)
    with pytest.raises(Exception, match="sample rate"):
        xv.embed_batch([arrays[0][0]])


def test_embed_equals_stage_4_on_the_same_clips(setup, tmp_path, repo_root):
    """pyxv embed (features from audio, then stage 4's batching) gives stage 4's
    x-vectors of the stage-2-style features of the same clips."""
    import kaldiio

    from pyxv.datadir import write_datadir

    train = setup["train"][:10]
    feats = setup["root"] / "feats"
    d = tmp_path / "data"
    write_datadir(d, utt2spk={u: s for u, _, s, _ in train}, wav_scp={u: p for u, p, _, _ in train})
    keep = {u for u, _, _, _ in train}
    for name in ("feats.scp", "vad.scp"):
        (d / name).write_text("".join(ln + "\n" for ln in (feats / name).read_text().splitlines()
                                      if ln.split()[0] in keep))
    r = subprocess.run([sys.executable, "-m", "pyxv.bin.extract_xvectors", "extract", str(setup["xdir"] / "final.pt"),
                        str(d), str(tmp_path / "stage4.ark")], cwd=repo_root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    stage4 = dict(kaldiio.load_scp(str(tmp_path / "stage4.scp")))
    got = dict(zip([u for u, _, _, _ in train], setup["xv"].embed_batch([p for _, p, _, _ in train],
                                                                         names=[u for u, _, _, _ in train], nj=2)))
    assert set(got) == set(stage4)
    for u in got:
        np.testing.assert_allclose(got[u], stage4[u], rtol=1e-4, atol=1e-5)


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    bad = {"corrupt": tmp_path / "corrupt.wav", "empty": tmp_path / "empty.wav", "text": tmp_path / "text.flac",
           "blip": tmp_path / "blip.wav"}
    bad["corrupt"].write_bytes(b"RIFF" + rng.integers(0, 255, 400, dtype=np.uint8).tobytes())
    bad["empty"].write_bytes(b"")
    bad["text"].write_text("this is not audio\n")
    sf.write(bad["blip"], np.zeros(3, np.float32), 8000)   # 3 samples: not one 25 ms frame
    return bad


def test_embed_bad_files_are_named_and_the_rest_written(setup, tmp_path, capsys):
    import kaldiio

    good = [(u, p) for u, p, _, _ in setup["test"][:4]]
    bad = _bad_files(tmp_path)
    entries = [good[0], ("corrupt", bad["corrupt"]), good[1], ("empty", bad["empty"]), good[2],
               ("text", bad["text"]), ("blip", bad["blip"]), ("missing", tmp_path / "nope.wav"), good[3]]
    scp = _scp(tmp_path / "wav.scp", entries)
    for nj in (1, 2):
        ark = tmp_path / f"o{nj}.ark"
        rc, _, err = run_cli(["embed", setup["xdir"], scp, ark, "--nj", nj, "--batch", 4], capsys)
        assert rc == 3, err                                   # documented: some skipped, the rest written
        got = [k for k, _ in kaldiio.load_scp_sequential(str(ark.with_suffix(".scp")))]
        assert got == [u for u, _ in good]
        lines = [ln for ln in err.splitlines() if ln.startswith("pyxv embed: skipped")]
        assert len(lines) == 5
        for name in ("corrupt", "empty", "text", "blip", "missing"):
            assert sum(name in ln for ln in lines) == 1, (name, lines)
        assert "4 x-vectors" in err and "5 input(s) skipped" in err
    # Files on the command line: a bad one among them likewise; a missing one too.
    rc, _, err = run_cli(["embed", setup["xdir"], good[0][1], bad["empty"], tmp_path / "gone.flac",
                          tmp_path / "cl.ark"], capsys)
    assert rc == 3 and "1 x-vectors" in err and "empty.wav" in err and "gone.flac: no such file" in err
    # Nothing usable: exit 1 and no output files at all.
    rc, _, err = run_cli(["embed", setup["xdir"], bad["empty"], bad["text"], tmp_path / "none.ark"], capsys)
    assert rc == 1 and "nothing written" in err
    assert not (tmp_path / "none.ark").exists() and not (tmp_path / "none.scp").exists()
    # An output named like audio is an input in the wrong place: refused, the file left alone.
    before = Path(good[1][1]).read_bytes()
    keep = tmp_path / "keep.flac"
    keep.write_bytes(before)
    rc, _, err = run_cli(["embed", setup["xdir"], good[0][1], keep], capsys)
    assert rc == 1 and "not overwriting" in err and keep.read_bytes() == before


def test_embed_timing(setup, tmp_path, capsys):
    entries = [(u, p) for u, p, _, _ in setup["test"]]
    rc, _, err = run_cli(["embed", setup["xdir"], _scp(tmp_path / "wav.scp", entries), tmp_path / "t.ark",
                          "--timing"], capsys)
    assert rc == 0
    t = [ln for ln in err.splitlines() if "timing:" in ln or "  features" in ln or "  embedding" in ln]
    assert len(t) == 3, err
    audio = sum(sf.info(p).duration for _, p in entries)
    assert f"{len(entries)} files (0 failed), {audio:.1f} s of audio" in t[0]
    for ln in t[1:]:
        secs = float(ln.split()[3])
        xrt = float(ln.split()[5])
        assert secs > 0 and xrt == pytest.approx(audio / secs, rel=0.0006 / secs + 0.002)   # printed rounded


# ------------------------------------------------------ part 3: emotion over time
def _concat(path: Path, parts: list[str]) -> list[float]:
    """Write the clips one after another; their end times."""
    xs, sr, ends = [], None, []
    for p in parts:
        x, r = sf.read(p, dtype="float32", always_2d=True)
        sr = sr or r
        assert r == sr
        xs.append(x.mean(1))
        ends.append(sum(len(y) for y in xs) / sr)
    sf.write(path, np.concatenate(xs), sr, subtype="FLOAT")
    return ends


def test_emotion_windows_times_counts_and_summary(setup, tmp_path, capsys):
    a, b = setup["test"][0][1], setup["test"][4][1]
    mix = tmp_path / "mix.wav"
    dur = _concat(mix, [a, b])[-1]
    for d in (setup["lr_dir"], setup["ft_dir"], setup["g_dir"]):   # MFCC frames cut; eGeMAPS samples cut
        out = tmp_path / f"{d.parent.name}.json"
        rc, _, err = run_cli(["emotion", d, mix, "--window", 1.0, "--hop", 0.5, "--json", out], capsys)
        assert rc == 0, err
        res = json.loads(out.read_text())
        (r,) = res["results"]
        want = uniform_windows(sf.info(mix).duration, 1.0, 0.5)
        assert [(s["start"], s["end"]) for s in r["segments"]] == [(round(s, 4), round(e, 4)) for s, e in want]
        assert [s["segment"] for s in r["segments"]] == [segment_id("mix", s, e) for s, e in want]
        assert r["duration"] == pytest.approx(dur, abs=1e-4) and res["window"] == 1.0 and res["hop"] == 0.5
        P = np.array([list(s["posteriors"].values()) for s in r["segments"]])
        assert P.shape == (len(want), 4) and np.allclose(P.sum(1), 1, atol=1e-4)
        w = np.array([e - s for s, e in want])
        mean = (w[:, None] * P).sum(0) / w.sum()
        np.testing.assert_allclose(list(r["summary"]["posteriors"].values()), mean, atol=1e-5)
        assert r["summary"]["emotion"] == res["classes"][int(mean.argmax())]
        assert r["summary"]["segments"] == len(want)
    # The same through 2 worker processes and blocks of 1 file: the same numbers.
    rc, out1, _ = run_cli(["emotion", setup["lr_dir"], mix, a, "--window", 1.5, "--json"], capsys)
    rc2, out2, _ = run_cli(["emotion", setup["lr_dir"], mix, a, "--window", 1.5, "--json", "--nj", 2, "--batch", 1],
                           capsys)
    r1, r2 = json.loads(out1)["results"], json.loads(out2)["results"]
    assert rc == rc2 == 0 and len(r1) == len(r2) == 2
    for x, y in zip(r1, r2):   # other blocks pack other rows: equal to float rounding
        assert [(s["segment"], s["start"], s["end"]) for s in x["segments"]] == \
               [(s["segment"], s["start"], s["end"]) for s in y["segments"]]
        np.testing.assert_allclose([list(s["posteriors"].values()) for s in x["segments"]],
                                   [list(s["posteriors"].values()) for s in y["segments"]], atol=1e-5)
    # Table: per segment, then the file's duration-weighted mean.
    rc, out, _ = run_cli(["emotion", setup["lr_dir"], mix, "--window", 1.5], capsys)
    lines = out.strip().splitlines()
    want = uniform_windows(sf.info(mix).duration, 1.5, 1.5)
    assert lines[0].split()[:5] == ["file", "segment", "start", "end", "emotion"]
    assert len(lines) == 1 + len(want) + 1 and lines[-1].split()[1] == "(mean)"
    assert [float(ln.split()[3]) for ln in lines[1:-1]] == [round(e, 2) for _, e in want]


def test_emotion_follows_an_angry_then_neutral_recording(setup, ravdess_root, tmp_path, capsys):
    """Two clips the model tells apart on their own (angry, neutral), one after the
    other: the segments at the change get the two labels, in order."""
    from pyxv.inference import load_emotion_model

    m = load_emotion_model(setup["lr_dir"])
    cand = [c for c in setup["train"] if c[3] in ("angry", "neutral")]
    _, P = m.posteriors([p for _, p, _, _ in cand], [u for u, _, _, _ in cand])
    conf = {c[0]: P[i, m.classes.index(c[3])] for i, c in enumerate(cand)}
    pairs = [(x, y) for x in cand if x[3] == "angry" for y in cand if y[3] == "neutral" and y[2] == x[2]]
    x, y = max(pairs, key=lambda p: min(conf[p[0][0]], conf[p[1][0]]))
    assert min(conf[x[0]], conf[y[0]]) > 0.6, "the tiny model separates no angry/neutral pair of an actor"
    mix = tmp_path / "mix.wav"
    t1, t2 = _concat(mix, [x[1], y[1]])
    seg = tmp_path / "segments"
    seg.write_text(f"first mix 0 {t1:.3f}\nsecond mix {t1:.3f} -1\n")
    csv_out = tmp_path / "out.csv"
    rc, _, err = run_cli(["emotion", setup["lr_dir"], mix, "--segments", seg, "--csv", csv_out], capsys)
    assert rc == 0, err
    rows = list(csv.DictReader(csv_out.open()))
    assert [(r["kind"], r["segment"], r["emotion"]) for r in rows] == [
        ("segment", "first", "angry"), ("segment", "second", "neutral"), ("file", "", rows[2]["emotion"])]
    assert float(rows[1]["end"]) == pytest.approx(t2, abs=1e-3) and float(rows[2]["end"]) == pytest.approx(t2, abs=1e-3)


def test_emotion_short_and_bad_files(setup, tmp_path, capsys):
    utt, path, _, _ = setup["test"][0]
    x, sr = sf.read(path, dtype="float32")
    short = tmp_path / "short.wav"
    sf.write(short, x[: int(1.2 * sr)], sr, subtype="FLOAT")
    bad = _bad_files(tmp_path)
    rc, out, err = run_cli(["emotion", setup["lr_dir"], short, bad["corrupt"], path, "--window", 3, "--json"], capsys)
    assert rc == 3                                            # one file bad: named, the others output
    res = json.loads(out)
    assert [r["name"] for r in res["results"]] == ["short", Path(path).name.split(".")[0]]
    assert len(res["failed"]) == 1 and "corrupt.wav" in res["failed"][0]
    (seg,) = res["results"][0]["segments"]                    # shorter than the window: all of it, one segment
    assert (seg["start"], seg["end"]) == (0.0, 1.2)
    notes = [ln for ln in err.splitlines() if "shorter than the 3 s window" in ln]
    assert len(notes) == 1 and "short.wav" in notes[0]
    assert len([ln for ln in err.splitlines() if "corrupt.wav" in ln]) == 1
    # One window over the whole file is exactly the whole-file posterior.
    rc, out, _ = run_cli(["emotion", setup["lr_dir"], short, "--json"], capsys)
    assert json.loads(out)["results"][0]["posteriors"] == seg["posteriors"]
    # Segments: -1 runs to the end, a small overshoot is cut, one past the end is named.
    seg_file = tmp_path / "segments"
    seg_file.write_text("a short 0 0.6\nb short 0.6 -1\nc short 0.6 1.5\nd short 2.0 3.0\ne other 0 1\n")
    rc, out, err = run_cli(["emotion", setup["lr_dir"], short, "--segments", seg_file, "--json"], capsys)
    assert rc == 3
    r = json.loads(out)["results"][0]
    assert [(s["segment"], s["start"], s["end"]) for s in r["segments"]] == [("a", 0, 0.6), ("b", 0.6, 1.2),
                                                                              ("c", 0.6, 1.2)]
    assert [ln for ln in err.splitlines() if "segment d" in ln and "short.wav" in ln]
    assert [ln for ln in err.splitlines() if "recording 'other' is not among the inputs" in ln]
    rc, _, err = run_cli(["emotion", setup["lr_dir"], short, "--window", 0], capsys)
    assert rc == 1 and "--window 0" in err
    rc, _, err = run_cli(["emotion", setup["lr_dir"], short, "--window", 1, "--segments", seg_file], capsys)
    assert rc == 1 and "not both" in err


def test_emotion_generated_audio(setup, tmp_path, capsys):
    """Generated audio of known length: windows and shapes follow from it exactly,
    whatever the model makes of a tone in noise."""
    sr = 16000
    rng = np.random.default_rng(1)
    n = int(7.3 * sr)
    t = np.arange(n) / sr
    y = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0) + 0.01 * rng.standard_normal(n)
    f = tmp_path / "tone.wav"
    sf.write(f, y.astype(np.float32), sr)
    rc, out, err = run_cli(["emotion", setup["ft_dir"], f, "--window", 2, "--hop", 1, "--json"], capsys)
    assert rc == 0, err
    r = json.loads(out)["results"][0]
    assert [(s["start"], s["end"]) for s in r["segments"]] == [(0, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
                                                                (6, 7.3)]   # 1.3 s left: at least half a window


# ----------------------------------------------------- part 4: enrolment
def _other_encoder(setup, tmp_path) -> Path:
    """The same encoder with one weight nudged: another checksum."""
    import torch

    xdir = tmp_path / "exp/xvector_other"
    shutil.copytree(setup["xdir"], xdir, ignore=shutil.ignore_patterns("checkpoints"))
    ck = torch.load(xdir / "final.pt", map_location="cpu", weights_only=True)
    k = next(k for k in ck["model"] if k.startswith("embedding.") and k.endswith("weight"))
    ck["model"][k] = ck["model"][k] + 1e-3
    torch.save(ck, xdir / "final.pt")
    return xdir


def test_enrol_several_files_save_and_reuse(setup, ravdess_root, tmp_path, capsys):
    from pyxv.inference import Verifier
    from pyxv.speaker import SpeakerModel, weights_checksum

    spk9 = [p for _, p, s, _ in clips(ravdess_root, [9], per_emotion=2)]
    spk10 = [p for _, p, s, _ in clips(ravdess_root, [10], per_emotion=1)]
    enrol, tests = spk9[:3], [spk9[3], spk9[5], *spk10]
    sp = tmp_path / "actor09.json"
    rc, out, err = run_cli(["verify", setup["xdir"], "--enroll", *enrol, "--test", *tests, "--save-speaker", sp,
                            "--json"], capsys)
    assert rc in (0, 2), err
    res = json.loads(out)
    d = json.loads(sp.read_text())
    v = Verifier.load(setup["xdir"])
    E = v.xvector.embed_batch(enrol).astype(np.float64)
    U = E / np.linalg.norm(E, axis=1, keepdims=True)
    assert d["count"] == 3 and len(d["mean"]) == 16 and d["files"] == enrol
    assert d["encoder"]["sha256"] == weights_checksum(v.xvector.net)
    np.testing.assert_allclose(d["mean"], U.mean(0), atol=1e-6)
    np.testing.assert_allclose(d["norm"], np.linalg.norm(E, axis=1).mean(), rtol=1e-6)
    # Each score is the back-end's score of the enrolment vector against the test x-vector.
    T = v.xvector.embed_batch(tests)
    want = v.backend.score_pairs(np.tile(U.mean(0) * np.linalg.norm(E, axis=1).mean(), (len(tests), 1)), T)
    got = [r["score"] for r in res["results"]]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert [r["same"] for r in res["results"]] == [bool(s >= res["threshold"]) for s in got]
    assert np.mean(got[:2]) > np.mean(got[2:])           # actor 09's own clips score above actor 10's
    assert rc == (0 if all(r["same"] for r in res["results"]) else 2)
    # The saved speaker gives the same scores.
    rc2, out2, _ = run_cli(["verify", setup["xdir"], "--speaker", sp, "--test", *tests, "--json"], capsys)
    assert rc2 == rc and [r["score"] for r in json.loads(out2)["results"]] == pytest.approx(got, abs=1e-9)
    # Text output: one line per test file.
    rc, out, _ = run_cli(["verify", setup["xdir"], "--speaker", sp, "--test", *tests], capsys)
    assert len(out.strip().splitlines()) == 1 + len(tests) and "speaker of 3 enrolment file(s)" in out
    # More enrolment files extend it: the running means.
    sp2 = tmp_path / "more.json"
    rc, _, err = run_cli(["verify", setup["xdir"], "--speaker", sp, "--enroll", spk9[4], "--save-speaker", sp2],
                         capsys)
    assert rc == 0, err
    more = SpeakerModel.load(sp2)
    E4 = v.xvector.embed_batch(enrol + [spk9[4]]).astype(np.float64)
    assert more.count == 4
    np.testing.assert_allclose(more.mean, (E4 / np.linalg.norm(E4, axis=1, keepdims=True)).mean(0), atol=1e-6)


def test_one_file_enrolment_equals_the_pair_form(setup, capsys):
    a, b = setup["test"][0][1], setup["test"][5][1]
    rc, out, _ = run_cli(["verify", setup["xdir"], a, b, "--json"], capsys)
    pair = json.loads(out)
    rc2, out, _ = run_cli(["verify", setup["xdir"], "--enroll", a, "--test", b, "--json"], capsys)
    (one,) = json.loads(out)["results"]
    assert one["score"] == pytest.approx(pair["score"], abs=1e-5) and rc == rc2 and one["same"] == pair["same"]


def test_enrolment_errors(setup, tmp_path, capsys):
    good = [p for _, p, _, _ in setup["test"][:3]]
    sp = tmp_path / "spk.json"
    # A missing enrolment file: named, no speaker made or saved.
    rc, _, err = run_cli(["verify", setup["xdir"], "--enroll", good[0], tmp_path / "gone.wav", "--test", good[1],
                          "--save-speaker", sp], capsys)
    assert rc == 1 and not sp.exists()
    assert [ln for ln in err.splitlines() if "gone.wav" in ln] and "no speaker model made" in err
    # An unreadable one likewise.
    bad = _bad_files(tmp_path)
    rc, _, err = run_cli(["verify", setup["xdir"], "--enroll", good[0], bad["corrupt"], "--save-speaker", sp], capsys)
    assert rc == 1 and not sp.exists() and len([ln for ln in err.splitlines() if "corrupt.wav" in ln]) == 1
    # A bad test file: named, the others scored, exit 3.
    rc, out, err = run_cli(["verify", setup["xdir"], "--enroll", *good[:2], "--test", good[2], bad["empty"],
                            "--save-speaker", sp, "--json"], capsys)
    assert rc == 3 and len(json.loads(out)["results"]) == 1 and "empty.wav" in err and sp.exists()
    # A speaker file of another encoder: refused in one line naming it.
    other = _other_encoder(setup, tmp_path)
    rc, _, err = run_cli(["verify", other, "--speaker", sp, "--test", good[2]], capsys)   # (it has no back-end)
    lines = [ln for ln in err.strip().splitlines()]
    assert rc == 1 and len(lines) == 1 and str(sp) in lines[0] and "enrol the speaker again" in lines[0]
    # Not a speaker file; options that do not fit together.
    rc, _, err = run_cli(["verify", setup["xdir"], "--speaker", bad["text"], "--test", good[2]], capsys)
    assert rc == 1 and "not a speaker file" in err
    rc, _, err = run_cli(["verify", setup["xdir"], good[0]], capsys)
    assert rc == 1 and "give two files" in err
    rc, _, err = run_cli(["verify", setup["xdir"], "--test", good[0]], capsys)
    assert rc == 1 and "--test needs a speaker" in err


# ------------------------------------------------------- the runner itself
class _Rows:
    """A stand-in front-end: item spec 'n' -> an (n, 2) input filled with its index; 'bad' fails."""

    def __call__(self, item):
        if item.spec == "bad":
            raise ValueError("cannot be used")
        n = int(item.spec)
        return [np.full((n, 2), item.index, np.float32)], [(item.name, 0.0, n / 100)], n / 100, [], []


class _Dies(_Rows):
    def __call__(self, item):
        import os

        os._exit(3)


def test_runner_order_shares_blocks_and_failures():
    from pyxv.batch import Item, Timing, run

    specs = ["5", "bad", "7", "1", "bad", "3", "2", "9", "4"]
    items = [Item(i, f"u{i}", spec=s) for i, s in enumerate(specs)]
    calls = []

    def embed(mats):
        calls.append(len(mats))
        return np.stack([m.mean(0) for m in mats])

    for nj in (1, 3):
        calls.clear()
        t = Timing()
        res = list(run(items, _Rows(), embed, nj=nj, batch=4, timing=t))
        assert [r.index for r in res] == list(range(len(specs)))
        assert [r.ok for r in res] == [s != "bad" for s in specs]
        assert res[1].error == "bad: cannot be used" and res[4].error == "bad: cannot be used"   # named
        for r, s in zip(res, specs):
            if r.ok:
                assert r.outputs.shape == (1, 2) and r.outputs[0, 0] == r.index and r.frames == int(s)
        assert calls == [3, 3, 1]                      # blocks of 4 files, the bad ones left out
        assert (t.files, t.failed, t.frames) == (9, 2, 31) and t.audio_seconds == pytest.approx(0.31)
        assert t.workers == nj


def test_runner_worker_death_is_an_error_not_a_hang():
    from pyxv.batch import FeatureWorkerError, Item, run

    items = [Item(i, f"u{i}", spec="3") for i in range(4)]
    # its own class, which pyxv's commands report in one line (not a traceback)
    with pytest.raises(FeatureWorkerError, match="worker process died"):
        list(run(items, _Dies(), lambda m: np.zeros((len(m), 2)), nj=2))


# ------------------------------------------------------------ an imported GE2E
def test_ge2e_batch_arrays_and_windows(ravdess_root, tmp_path):
    pytest.importorskip("resemblyzer", reason="the GE2E weights come from the resemblyzer package here")
    from pyxv.batch import FeatureMaker, Item
    from pyxv.inference import XVectorModel
    from pyxv.train.import_encoder import import_ge2e
    from pyxv.speaker import weights_checksum

    import_ge2e(tmp_path / "xvector_ge2e", download=False)
    xv = XVectorModel(tmp_path / "xvector_ge2e")
    files = [p for _, p, _, _ in clips(ravdess_root, [9], per_emotion=1)]
    E = xv.embed_batch(files, nj=2, batch=3)
    assert E.shape == (4, 256) and np.allclose(np.linalg.norm(E, axis=1), 1, atol=1e-5)
    for f, e in zip(files, E):
        np.testing.assert_allclose(e, xv.embed_file(f), atol=1e-5)
    # Samples in memory take the front-end's own samples path: the same vectors.
    A = xv.embed_batch([sf.read(f, dtype="float32") for f in files])
    np.testing.assert_allclose(A, E, atol=1e-5)
    # Windows cut samples; one window over a whole file is the whole-file input.
    mk = FeatureMaker(xv.front)
    dur = sf.info(files[0]).duration
    mats, bounds, d, notes, errors = mk(Item(0, "x", spec=files[0], window=(1.0, 1.0)))
    assert d == pytest.approx(dur) and [(s, e) for _, s, e in bounds] == uniform_windows(dur, 1.0, 1.0)
    assert len(mats) == len(bounds) and all(len(m) > 0 for m in mats)
    whole, _, _, notes, _ = mk(Item(0, "x", spec=files[0], window=(60.0, 60.0)))
    np.testing.assert_array_equal(whole[0], xv.front(files[0], "x"))
    assert len(notes) == 1 and "shorter than the 60 s window" in notes[0]
    assert weights_checksum(xv.net) != "" and len(weights_checksum(xv.net)) == 64
