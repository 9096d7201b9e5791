"""pyxv: trained recipe models applied to audio files.

    pyxv embed <xvector-exp> <wav-or-scp>... <out-ark>            x-vectors to a Kaldi ark/scp
    pyxv emotion <model-dir> <wav>... [--window S | --segments F] emotion posteriors per file or segment
    pyxv verify <xvector-exp> <wav-a> <wav-b>                     same-speaker score and decision
    pyxv verify <xvector-exp> --enroll <wav>... --test <wav>...   several enrolment files, several tests
    pyxv export <model-dir> <out> --format onnx|torch             a model with its front-end, one graph

Audio: wav, flac (anything libsndfile reads), any sample rate, mono or
multi-channel (channels averaged); features are computed with the configs kept
in the model dir, as in training. Many files: features per file (--nj worker
processes), the network in blocks of --batch files with stage 4's batching.
Logic in :mod:`pyxv.inference`.
"""
from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path

EXIT_PARTIAL = 3   # some inputs could not be used: each named on stderr, the others done

EPILOG_EMOTION = """model-dir is a system dir of stage 5, whose final/ model is used (trained once on
all labelled data after the folds; final/README.txt says how), e.g.
  exp/emotion/demo/frozen_lr_clean_clean           (x-vectors + logistic regression)
  exp/emotion/demo/finetune_aug_clean              (a network, final.pt)
or one fold of it (exp/emotion/ravdess/finetune_aug_clean/fold1: trained on that fold's
training part). A system dir trained before final models existed gives its first
fold, with a warning.

Over time: --window S [--hop S] cuts each file into windows of S seconds every
hop seconds (default: the window); the last window runs to the end of the file
and a remainder under half a window joins the window before it; a file shorter
than one window is one segment of its whole length (a line on stderr says so).
--segments FILE takes Kaldi segments lines 'seg-id rec-id start end' (seconds;
end -1: to the end), rec-id being an input's name (its stem, or its wav.scp key).
Each file then gets a summary: the segments' posteriors averaged with their
durations as weights, and the argmax of that mean as its label ('majority', in
JSON and CSV: the label that is the segments' argmax for the most time).

Exit status: 0 all done, 3 some files or segments could not be used (each named
on stderr in one line, the others output), 1 error (nothing output)."""

EPILOG_VERIFY = """xvector-exp is a trained x-vector model dir (exp/xvector_clean, exp/xvector_aug).
The back-end and its threshold (the EER threshold on the back-end's training
data) come from stage 6 (exp/sv/<corpus>/xvector_<m>/<backend>/backend.json);
without one, a cosine back-end is fitted on <xvector-exp>/xvectors_pretrain/train.

Several enrolment files: the speaker is the mean of their length-normalised
x-vectors (at their mean norm, the scale the back-end was trained on), scored
against each test file by the back-end. --save-speaker FILE keeps it (JSON: the
mean, the count, the encoder and a SHA-256 of its weights); --speaker FILE uses
it again (only with the encoder it was made with), and with --enroll adds files.

Exit status: 0 same speaker (every test file), 2 different speakers or undecided
(any test file), 3 a test file could not be used (named on stderr; the others
scored), 1 error (an enrolment file that cannot be used, a speaker file of
another encoder, ...: one line each)."""

EPILOG_EMBED = """Exit status: 0 every input embedded; 3 some inputs could not be used (each
named on stderr in one line; every other one written); 1 error (nothing
written: model, options, output, or no usable input).
--timing prints the seconds spent on features and on the network (stage 4's
part: it reads features made beforehand) and the x real time of each."""


def _threads() -> None:
    import torch

    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit() and int(n) > 0:
        torch.set_num_threads(int(n))


def _err(cmd: str, msg: str) -> None:
    for line in str(msg).splitlines() or [""]:
        print(f"pyxv {cmd}: {line}", file=sys.stderr)


def _check_output(path: str | None, opt: str) -> None:
    """An output named like audio is almost surely an input typed in its place: refuse to overwrite it."""
    from .inference import AUDIO_SUFFIXES, InferenceError

    if path and path != "-" and Path(path).suffix.lower() in AUDIO_SUFFIXES:
        raise InferenceError(f"{opt} {path}: an output named like audio (an input in the wrong place?); "
                             "not overwriting it")


def _timing(cmd: str, timing) -> None:
    for line in timing.lines():
        print(f"pyxv {cmd}: {line}", file=sys.stderr)


def _write_text(path: str, text: str) -> None:
    from .io import atomic_open

    if path == "-":
        sys.stdout.write(text)
        return
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


# --------------------------------------------------------------------- emotion
def _emotion_rows(model, results, segmented: bool) -> tuple[list[dict], list[str]]:
    from .segments import summarize

    done, bad = [], []
    for r in results:
        bad += r.segment_errors
        for note in r.notes:
            print(f"pyxv emotion: {note}", file=sys.stderr)
        if not r.ok:
            bad.append(r.error)
            continue
        P = r.outputs
        rec = {"name": r.name, "file": r.label}
        if not segmented:
            rec.update(emotion=model.classes[int(P[0].argmax())], posteriors=P[0])
        else:
            times = [(s, e) for _, s, e in r.bounds]
            rec.update(duration=r.duration, segments=[
                {"segment": seg, "start": s, "end": e, "emotion": model.classes[int(p.argmax())], "posteriors": p}
                for (seg, s, e), p in zip(r.bounds, P)], summary=summarize(times, P, model.classes))
        done.append(rec)
    return done, bad


def _post(classes, p) -> dict:
    return {c: round(float(x), 6) for c, x in zip(classes, p)}


def _emotion_json(model, done, bad, segmented, a) -> str:
    out = {"model": model.source, "system": model.kind, "classes": model.classes}
    if segmented:
        hop = (a.window if a.hop is None else a.hop) if a.window else None
        out.update(window=a.window, hop=hop, segments_file=a.segments,
                   summary_rule="posteriors: duration-weighted mean over the segments; emotion: its argmax; "
                                "majority: the segments' argmax label covering the most time")
        out["results"] = [{"name": d["name"], "file": d["file"], "duration": round(d["duration"], 4),
                           "segments": [{"segment": s["segment"], "start": round(s["start"], 4),
                                         "end": round(s["end"], 4), "emotion": s["emotion"],
                                         "posteriors": _post(model.classes, s["posteriors"])} for s in d["segments"]],
                           "summary": {"emotion": d["summary"]["emotion"], "majority": d["summary"]["majority"],
                                       "posteriors": _post(model.classes, d["summary"]["posteriors"]),
                                       "seconds_per_label": {c: round(t, 4) for c, t in
                                                             d["summary"]["seconds_per_label"].items()},
                                       "segments": d["summary"]["segments"]}} for d in done]
    else:
        out["results"] = [{"name": d["name"], "file": d["file"], "emotion": d["emotion"],
                           "posteriors": _post(model.classes, d["posteriors"])} for d in done]
    out["failed"] = bad
    return json.dumps(out, indent=1) + "\n"


def _emotion_csv(model, done, segmented) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if not segmented:
        w.writerow(["name", "file", "emotion", *model.classes])
        for d in done:
            w.writerow([d["name"], d["file"], d["emotion"], *(f"{x:.6f}" for x in d["posteriors"])])
        return buf.getvalue()
    w.writerow(["kind", "name", "file", "segment", "start", "end", "emotion", "majority", *model.classes])
    for d in done:
        for s in d["segments"]:
            w.writerow(["segment", d["name"], d["file"], s["segment"], f"{s['start']:.3f}", f"{s['end']:.3f}",
                        s["emotion"], "", *(f"{x:.6f}" for x in s["posteriors"])])
        sm = d["summary"]
        w.writerow(["file", d["name"], d["file"], "", "0.000", f"{d['duration']:.3f}", sm["emotion"], sm["majority"],
                    *(f"{x:.6f}" for x in sm["posteriors"])])
    return buf.getvalue()


def _emotion_table(model, done, segmented) -> str:
    cls = "  ".join(f"{c:>8}" for c in model.classes)
    if not segmented:
        w = max([len(d["name"]) for d in done] + [4])
        lines = [f"{'file':<{w}}  {'emotion':<8}  {cls}"]
        lines += [f"{d['name']:<{w}}  {d['emotion']:<8}  " + "  ".join(f"{x:8.4f}" for x in d["posteriors"])
                  for d in done]
        return "\n".join(lines) + "\n"
    w = max([len(d["name"]) for d in done] + [4])
    ws = max([len(s["segment"]) for d in done for s in d["segments"]] + [7])
    lines = [f"{'file':<{w}}  {'segment':<{ws}}  {'start':>8}  {'end':>8}  {'emotion':<8}  {cls}"]
    for d in done:
        for s in d["segments"]:
            lines.append(f"{d['name']:<{w}}  {s['segment']:<{ws}}  {s['start']:8.2f}  {s['end']:8.2f}  "
                         f"{s['emotion']:<8}  " + "  ".join(f"{x:8.4f}" for x in s["posteriors"]))
        sm = d["summary"]
        lines.append(f"{d['name']:<{w}}  {'(mean)':<{ws}}  {0:8.2f}  {d['duration']:8.2f}  {sm['emotion']:<8}  "
                     + "  ".join(f"{x:8.4f}" for x in sm["posteriors"]))
    return "\n".join(lines) + "\n"


def cmd_emotion(a) -> int:
    from .batch import Timing
    from .inference import gather_inputs, load_emotion_model
    from .segments import read_segments

    _check_output(a.json, "--json")
    _check_output(a.csv, "--csv")
    if a.hop is not None and a.window is None:
        raise ValueError("--hop needs --window")
    items, bad = gather_inputs(a.wav)
    segs = None
    if a.segments:
        segs = read_segments(a.segments)
        names = {n for n, _ in items}
        bad += [f"{a.segments}: recording '{rec}' is not among the inputs" for rec in segs if rec not in names]
        without = [n for n, _ in items if n not in segs]
        if without:
            print(f"pyxv emotion: {len(without)} input(s) without segments in {a.segments} left out: "
                  f"{', '.join(without[:5])}{' ...' if len(without) > 5 else ''}", file=sys.stderr)
        items = [(n, s) for n, s in items if n in segs]
    t = time.perf_counter()
    model = load_emotion_model(a.model_dir, a.device)
    timing = Timing(setup=time.perf_counter() - t)
    segmented = a.window is not None or segs is not None
    results = model.iter_posteriors([s for _, s in items], [n for n, _ in items], window=a.window, hop=a.hop,
                                    segments=segs, nj=a.nj, batch=a.batch, timing=timing)
    done, bad2 = _emotion_rows(model, results, segmented)
    bad += bad2
    for line in bad:
        print(f"pyxv emotion: {line}", file=sys.stderr)
    if a.timing:
        _timing("emotion", timing)
    if not done:
        print("pyxv emotion: no input could be used", file=sys.stderr)
        return 1
    if a.json is not None:
        _write_text(a.json, _emotion_json(model, done, bad, segmented, a))
    if a.csv is not None:
        _write_text(a.csv, _emotion_csv(model, done, segmented))
    if a.json is None and a.csv is None:
        sys.stdout.write(_emotion_table(model, done, segmented))
    return EXIT_PARTIAL if bad else 0


# ---------------------------------------------------------------------- verify
def _decision(same) -> str:
    return {True: "same speaker", False: "different speakers", None: "undecided (no threshold)"}[same]


def cmd_verify(a) -> int:
    from .inference import InferenceError, Verifier, XVectorModel, gather_inputs
    from .speaker import SpeakerModel

    _check_output(a.save_speaker, "--save-speaker")
    multi = a.enroll is not None or a.test is not None or a.speaker or a.save_speaker
    if not multi:
        if len(a.wavs) != 2:
            raise ValueError(f"give two files (wav-a wav-b), or --enroll/--speaker with --test; got {len(a.wavs)} "
                             "file(s)")
        v = Verifier.load(a.xvector_exp, a.backend, a.device)
        r = v.verify(a.wavs[0], a.wavs[1], a.threshold)
        if a.json:
            print(json.dumps(r, indent=1))
        else:
            print(f"score {r['score']:.4f}  threshold {r['threshold']:.4f}  -> {_decision(r['same'])}  "
                  f"({r['backend']} back-end: {r['backend_source']})")
        return 0 if r["same"] else 2
    if a.wavs:
        raise ValueError(f"{a.wavs[0]}: with --enroll/--speaker/--test the files go after --enroll and --test")
    if a.enroll is None and not a.speaker:
        raise ValueError("--test needs a speaker: --enroll FILES or --speaker FILE")
    if a.test is None and not a.save_speaker:
        raise ValueError("nothing to do: give --test FILES and/or --save-speaker FILE")
    speaker = SpeakerModel.load(a.speaker) if a.speaker else None
    xv = XVectorModel(a.xvector_exp, a.device)
    if speaker is not None:   # before the back-end: a speaker of another encoder is refused whatever the back-end
        speaker.check(xv.encoder_info(), a.speaker)
    v = Verifier.load(a.xvector_exp, a.backend, a.device, xvector=xv)
    if a.enroll is not None:
        items, missing = gather_inputs(a.enroll)
        if missing:
            raise InferenceError("\n".join(f"enrolment: {m}" for m in missing) + "\nno speaker model made")
        try:
            speaker = v.enroll([s for _, s in items], [n for n, _ in items], speaker=speaker, nj=a.nj,
                               batch=a.batch)
        except InferenceError as e:
            raise InferenceError("\n".join(f"enrolment: {m}" for m in str(e).splitlines())
                                 + "\nno speaker model made") from None
    if a.save_speaker:
        speaker.save(a.save_speaker)
        print(f"pyxv verify: speaker model of {speaker.count} enrolment file(s) saved to {a.save_speaker}",
              file=sys.stderr)
    if a.test is None:
        return 0
    items, bad = gather_inputs(a.test)
    res = v.score_speaker(speaker, [s for _, s in items], [n for n, _ in items], threshold=a.threshold, nj=a.nj,
                          batch=a.batch, where=a.speaker or "speaker model")
    bad += [r["error"] for r in res if "error" in r]
    scored = [r for r in res if "error" not in r]
    for line in bad:
        print(f"pyxv verify: {line}", file=sys.stderr)
    th = scored[0]["threshold"] if scored else (float(v.backend.threshold) if a.threshold is None else a.threshold)
    if a.json:
        print(json.dumps({"model": str(v.xvector.exp_dir), "backend": getattr(v.backend, "kind", "?"),
                          "backend_source": v.source, "threshold": th,
                          "speaker": {"count": speaker.count, "files": speaker.files, "file": a.speaker,
                                      "saved_to": a.save_speaker, "encoder": speaker.encoder},
                          "results": scored, "failed": bad}, indent=1))
    else:
        print(f"speaker of {speaker.count} enrolment file(s){' (' + a.speaker + ')' if a.speaker else ''}; "
              f"{getattr(v.backend, 'kind', '?')} back-end: {v.source}; threshold {th:.4f}")
        w = max([len(r["test"]) for r in scored] + [4])
        for r in scored:
            print(f"{r['test']:<{w}}  score {r['score']:8.4f}  -> {_decision(r['same'])}")
    if bad:
        return EXIT_PARTIAL
    if not scored:
        return 1
    return 0 if all(r["same"] for r in scored) else 2


# ----------------------------------------------------------------------- embed
def cmd_embed(a) -> int:
    from .batch import Timing
    from .inference import XVectorModel, gather_inputs, write_ark

    _check_output(a.out_ark, "out-ark")
    if not a.inputs:
        raise ValueError("give the inputs (audio files or wav.scp tables) and then the output ark")
    items, bad = gather_inputs(a.inputs)
    t = time.perf_counter()
    xv = XVectorModel(a.xvector_exp, a.device)
    xv.embedder   # stage 4's compiled CPU copy made now: start-up, not embedding time
    timing = Timing(setup=time.perf_counter() - t)
    stats: dict = {}
    pairs = xv.embed_table(items, stats, nj=a.nj, batch=a.batch, batch_frames=a.batch_frames or None,
                           timing=timing)
    first = next(pairs, None)   # no usable input: no output files at all, not empty ones
    n = write_ark(itertools.chain([first], pairs), a.out_ark) if first is not None else 0
    bad += stats.get("errors", [])
    for line in bad:
        print(f"pyxv embed: skipped {line}", file=sys.stderr)
    scp = a.out_ark[:-4] + ".scp" if a.out_ark.endswith(".ark") else a.out_ark + ".scp"
    print(f"pyxv embed: {n} x-vectors of dim {xv.dim} written to {a.out_ark} and {scp}"
          + (f"; {len(bad)} input(s) skipped (named above)" if bad else "") if n else
          "pyxv embed: no input could be used; nothing written", file=sys.stderr)
    if a.timing:
        _timing("embed", timing)
    if n == 0:
        return 1
    return EXIT_PARTIAL if bad else 0


# ----------------------------------------------------------------------- parser
def _positive(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: must be at least 1")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyxv", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Run 'pyxv <command> --help' for a command's options.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{emotion,verify,embed,export}")

    def common(sp):
        sp.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1 ...)")
        sp.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
        sp.add_argument("--trust", action="store_true",
                        help="also load model files in an older pyxv's pickled form (model.pkl, backend.pkl, "
                             "checkpoints that need torch.load(weights_only=False)); reading those can run code, "
                             "so only for files whose source you trust (a warning says when it happens)")

    def batching(sp):
        sp.add_argument("--nj", type=_positive, default=1,
                        help="worker processes computing features, each a share of the files (default 1: "
                             "in this process)")
        sp.add_argument("--batch", type=_positive, default=256,
                        help="files whose inputs go through the network together, as stage 4's blocks "
                             "(default 256; on a GPU in padded batches of --batch-frames)")

    e = sub.add_parser("emotion", help="emotion posteriors of audio files, or of their segments over time",
                       description="Emotion posteriors of audio files from a trained emotion system: one row per "
                                   "file, or per segment (--window, --segments) with a summary per file.",
                       epilog=EPILOG_EMOTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("model_dir", help="trained fold (or system) dir under exp/emotion/")
    e.add_argument("wav", nargs="+", help="audio files (or wav.scp tables)")
    e.add_argument("--window", type=float, default=None, metavar="S", help="posteriors per window of S seconds")
    e.add_argument("--hop", type=float, default=None, metavar="S", help="window start every S seconds "
                                                                        "(default: the window)")
    e.add_argument("--segments", default=None, metavar="FILE",
                   help="Kaldi segments file: 'seg-id rec-id start end' per line")
    e.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="JSON output, to FILE or (no FILE) to stdout instead of the table")
    e.add_argument("--csv", default=None, metavar="FILE", help="CSV output to FILE ('-': stdout)")
    e.add_argument("--timing", action="store_true", help="print feature and network seconds to stderr")
    batching(e)
    common(e)
    e.set_defaults(func=cmd_emotion)

    v = sub.add_parser("verify", help="same-speaker scores: two files, or enrolment files against test files",
                       description="Score audio files with an x-vector model and an SV back-end, and decide "
                                   "same/different speaker at the back-end's stored threshold: two files "
                                   "(wav-a wav-b), or a speaker enrolled from several files (--enroll, or a "
                                   "saved --speaker) against each --test file.",
                       epilog=EPILOG_VERIFY, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("xvector_exp", help="x-vector model dir (exp/xvector_clean) or its final.pt")
    v.add_argument("wavs", nargs="*", metavar="wav", help="two files to compare (wav-a wav-b)")
    v.add_argument("--enroll", nargs="+", default=None, metavar="WAV",
                   help="enrolment files (or wav.scp tables) of one speaker")
    v.add_argument("--test", nargs="+", default=None, metavar="WAV", help="files to score against the speaker")
    v.add_argument("--speaker", default=None, metavar="FILE", help="a speaker file saved with --save-speaker")
    v.add_argument("--save-speaker", default=None, metavar="FILE", help="save the enrolled speaker (JSON)")
    v.add_argument("--backend", default=None,
                   help="back-end file (backend.json) or cosine|plda (default: a saved cosine, else plda, else "
                        "cosine fitted on the model's pre-training x-vectors)")
    v.add_argument("--threshold", type=float, default=None, help="override the stored threshold")
    v.add_argument("--json", action="store_true", help="JSON output")
    batching(v)
    common(v)
    v.set_defaults(func=cmd_verify)

    m = sub.add_parser("embed", help="x-vectors of audio files to a Kaldi ark/scp",
                       description="x-vectors of audio files, or of every entry of wav.scp tables "
                                   "('name path-or-command |' lines), written with kaldiio to <out-ark> "
                                   "and <out-ark minus .ark>.scp. Features per file (--nj processes), the "
                                   "network in blocks of --batch files (stage 4's batching).",
                       epilog=EPILOG_EMBED, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("xvector_exp", help="x-vector model dir (exp/xvector_clean) or its final.pt")
    m.add_argument("inputs", nargs="+", metavar="input", help="audio files or wav.scp tables")
    m.add_argument("out_ark", help="output archive, e.g. out/xvector.ark")
    batching(m)
    m.add_argument("--batch-frames", type=_positive, default=None,
                   help="frames per padded batch on a GPU (lower it when the GPU runs out of memory; default: "
                        "extract.batch_frames of the model's config)")
    m.add_argument("--timing", action="store_true", help="print feature and network seconds to stderr")
    common(m)
    m.set_defaults(func=cmd_embed)

    from .export import add_parser as add_export   # logic and options in pyxv.export

    add_export(sub, common)
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING,
                        format="pyxv: %(levelname)s: %(message)s", stream=sys.stderr)
    from .batch import FeatureWorkerError
    from .extract import ExtractionMemoryError
    from .inference import InferenceError
    from .io import AudioError, OutputError
    from .params import set_trust
    from .train.checkpoint import CheckpointError

    set_trust(a.trust)

    _threads()
    import torch

    from .device import no_gpu_reason

    try:
        device = torch.device(a.device)
    except RuntimeError:
        print(f"pyxv {a.command}: --device {a.device}: not a torch device (cpu, cuda, cuda:1 ...)", file=sys.stderr)
        return 1
    reason = no_gpu_reason() if device.type == "cuda" else None
    if reason:   # one line, not a CUDA traceback from loading the model
        print(f"pyxv {a.command}: --device {a.device} but {reason}", file=sys.stderr)
        return 1
    try:
        return a.func(a)
    except (InferenceError, AudioError, FileNotFoundError, ValueError, OutputError, ExtractionMemoryError,
            CheckpointError, FeatureWorkerError) as e:
        _err(a.command, str(e))
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
