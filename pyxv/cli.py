"""pyxv: trained recipe models applied to audio files.

    pyxv emotion <model-dir> <wav>... [--json]        emotion posteriors per file
    pyxv verify <xvector-exp> <wav-a> <wav-b>         same-speaker score and decision
    pyxv embed <xvector-exp> <wav-or-scp> <out-ark>   x-vectors to a Kaldi ark/scp

Audio: wav, flac (anything libsndfile reads), any sample rate, mono or
multi-channel (channels averaged); features are computed with the configs kept
in the model dir, as in training. Logic in :mod:`pyxv.inference`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

EPILOG_EMOTION = """model-dir is a trained fold of stage 5, e.g.
  exp/emotion/demo/frozen_lr_clean_clean/fold1     (x-vectors + logistic regression, model.pkl)
  exp/emotion/demo/finetune_aug_clean/fold1        (a network, final.pt)
or a system dir (its first fold is used)."""

EPILOG_VERIFY = """xvector-exp is a trained x-vector model dir (exp/xvector_clean, exp/xvector_aug).
The back-end and its threshold (the EER threshold on the back-end's training
data) come from stage 6 (exp/sv/<corpus>/xvector_<m>/<backend>/backend.pkl);
without one, a cosine back-end is fitted on <xvector-exp>/xvectors_pretrain/train.
Exit status: 0 same speaker, 2 different speakers, 1 error."""


def _threads() -> None:
    import torch

    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit() and int(n) > 0:
        torch.set_num_threads(int(n))


def cmd_emotion(a) -> int:
    from .inference import load_emotion_model, read_inputs

    model = load_emotion_model(a.model_dir, a.device)
    items = []
    for w in a.wav:
        items += read_inputs(w)
    names = [n for n, _ in items]
    _, P = model.posteriors([s for _, s in items], names)
    if a.json:
        out = {"model": model.source, "system": model.kind, "classes": model.classes,
               "results": [{"name": n, "file": s, "emotion": model.classes[int(p.argmax())],
                            "posteriors": {c: round(float(x), 6) for c, x in zip(model.classes, p)}}
                           for (n, s), p in zip(items, P)]}
        print(json.dumps(out, indent=1))
        return 0
    w = max([len(n) for n in names] + [4])
    print(f"{'file':<{w}}  {'emotion':<8}  " + "  ".join(f"{c:>8}" for c in model.classes))
    for n, p in zip(names, P):
        print(f"{n:<{w}}  {model.classes[int(p.argmax())]:<8}  " + "  ".join(f"{x:8.4f}" for x in p))
    return 0


def cmd_verify(a) -> int:
    from .inference import Verifier

    v = Verifier.load(a.xvector_exp, a.backend, a.device)
    r = v.verify(a.wav_a, a.wav_b, a.threshold)
    if a.json:
        print(json.dumps(r, indent=1))
    else:
        decision = {True: "same speaker", False: "different speakers", None: "undecided (no threshold)"}[r["same"]]
        print(f"score {r['score']:.4f}  threshold {r['threshold']:.4f}  -> {decision}  "
              f"({r['backend']} back-end: {r['backend_source']})")
    return 0 if r["same"] else 2


def cmd_embed(a) -> int:
    from .inference import XVectorModel, read_inputs, write_ark

    xv = XVectorModel(a.xvector_exp, a.device)
    items = read_inputs(a.input)
    stats: dict = {}
    n = write_ark(xv.embed_table(items, stats), a.out_ark)
    scp = a.out_ark[:-4] + ".scp" if a.out_ark.endswith(".ark") else a.out_ark + ".scp"
    print(f"pyxv embed: {n} x-vectors of dim {xv.dim} written to {a.out_ark} and {scp}"
          + (f"; {stats['failed']} file(s) failed (see the warnings)" if stats.get("failed") else ""),
          file=sys.stderr)
    return 0 if n > 0 else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyxv", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Run 'pyxv <command> --help' for a command's options.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{emotion,verify,embed}")

    def common(sp):
        sp.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1 ...)")
        sp.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")

    e = sub.add_parser("emotion", help="emotion posteriors of audio files",
                       description="Emotion posteriors of audio files from a trained emotion system.",
                       epilog=EPILOG_EMOTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("model_dir", help="trained fold (or system) dir under exp/emotion/")
    e.add_argument("wav", nargs="+", help="audio files (or wav.scp tables)")
    e.add_argument("--json", action="store_true", help="JSON output instead of a table")
    common(e)
    e.set_defaults(func=cmd_emotion)

    v = sub.add_parser("verify", help="same-speaker score of two audio files",
                       description="Score two audio files with an x-vector model and an SV back-end, and "
                                   "decide same/different speaker at the back-end's stored threshold.",
                       epilog=EPILOG_VERIFY, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("xvector_exp", help="x-vector model dir (exp/xvector_clean) or its final.pt")
    v.add_argument("wav_a")
    v.add_argument("wav_b")
    v.add_argument("--backend", default=None,
                   help="back-end file (backend.pkl) or cosine|plda (default: a saved cosine, else plda, else "
                        "cosine fitted on the model's pre-training x-vectors)")
    v.add_argument("--threshold", type=float, default=None, help="override the stored threshold")
    v.add_argument("--json", action="store_true", help="JSON output")
    common(v)
    v.set_defaults(func=cmd_verify)

    m = sub.add_parser("embed", help="x-vectors of audio files to a Kaldi ark/scp",
                       description="x-vectors of an audio file, or of every entry of a wav.scp "
                                   "('name path-or-command |' lines), written with kaldiio to <out-ark> "
                                   "and <out-ark minus .ark>.scp.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("xvector_exp", help="x-vector model dir (exp/xvector_clean) or its final.pt")
    m.add_argument("input", help="an audio file or a wav.scp")
    m.add_argument("out_ark", help="output archive, e.g. out/xvector.ark")
    common(m)
    m.set_defaults(func=cmd_embed)
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING,
                        format="pyxv: %(levelname)s: %(message)s", stream=sys.stderr)
    from .inference import InferenceError
    from .io import AudioError

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
    except (InferenceError, AudioError, FileNotFoundError, ValueError) as e:
        print(f"pyxv {a.command}: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
