"""Parity of exported models with pyxv on real RAVDESS clips: ``pyxv export``'s
ONNX (onnxruntime) and torch.export files against ``pyxv embed`` / ``pyxv emotion``
with dither off, and the export time.

    .venv-test/bin/python bench/export_parity.py                       # GE2E (Resemblyzer's weights) + exp/xvector_*
    .venv-test/bin/python bench/export_parity.py --ge2e --model exp/xvector_clean exp/emotion/demo/frozen_lr_clean_clean

Embeddings: cosine with pyxv's (min and mean over the clips; also against pyxv's
default dithered features, for scale), and of all the clips as one long file
(pooled over chunks). Emotion systems: the largest absolute posterior difference. Needs onnx, onnxscript, onnxruntime (.venv-test has them)
and, for GE2E, Resemblyzer's package (its weights are imported offline).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ravdess_clips(root: Path, n: int) -> list[Path]:
    """``n`` speech clips spread over actors and emotions."""
    files = sorted(root.glob("Actor_*/03-01-*.flac"))
    return [files[i] for i in np.linspace(0, len(files) - 1, n).round().astype(int)] if files else []


def run_exported(path: Path, fmt: str, waves: list[np.ndarray]) -> list[np.ndarray]:
    if fmt == "onnx":
        import onnxruntime as ort

        s = ort.InferenceSession(str(path))
        return [s.run(None, {"waveform": w})[0] for w in waves]
    import torch

    prog = torch.export.load(str(path)).module()
    with torch.no_grad():
        return [prog(torch.from_numpy(w)).numpy() for w in waves]


def reference(model_dir: str, clips: list[Path], dither: bool):
    """pyxv's outputs of the clips: ('embedding', (N, E)) or ('posteriors', (N, C))."""
    from pyxv.export import resolve

    kind, m = resolve(model_dir)
    front = m.front if kind == "xvector" else getattr(m, "front", None) or m.xvector.front
    if not dither and hasattr(front, "mfcc"):
        front.mfcc.opts.dither = 0.0
    names = [c.stem for c in clips]
    if kind == "xvector":
        return "embedding", m.embed_batch([str(c) for c in clips], names=names)
    return "posteriors", m.posteriors([str(c) for c in clips], names)[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", nargs="*", default=None, help="model dirs (default: GE2E imported now, exp/xvector_*)")
    ap.add_argument("--ge2e", action="store_true", help="with --model: also GE2E (Resemblyzer's weights)")
    ap.add_argument("--formats", nargs="+", default=["onnx", "torch"])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--ravdess", default=str(ROOT.parent / "shared/corpora/ravdess"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    clips = ravdess_clips(Path(a.ravdess), a.clips)
    if not clips:
        print(f"export_parity: no RAVDESS clips under {a.ravdess}; nothing measured")
        return 0
    with tempfile.TemporaryDirectory(prefix="export_parity.") as td:
        return measure(a, clips, Path(td))


def measure(a, clips: list[Path], tmp: Path) -> int:
    """Export each model in each format into tmp and print a line per pair."""
    from pyxv.export import export_model
    from pyxv.io import read_audio

    models = a.model
    if models is None:
        models = [str(p) for p in sorted((ROOT / "exp").glob("xvector_*")) if (p / "final.pt").is_file()]
    if a.model is None or a.ge2e:
        try:
            from pyxv.train.import_encoder import import_ge2e

            models.insert(0, str(import_ge2e(tmp / "ge2e_resemblyzer", download=False).parent))
        except Exception as e:   # noqa: BLE001 - no Resemblyzer package here: the others still run
            print(f"export_parity: GE2E left out ({e})")
    print(f"{len(clips)} RAVDESS clips ({', '.join(c.name for c in clips[:2])}, ...), and all of them as one "
          "long file, torch threads 1")
    print(f"{'model':44s} {'format':6s} {'export s':>8s}  against pyxv, dither off                  "
          f"against pyxv with its MFCC dither (for scale)")
    for md in models:
        what, want = reference(md, clips, dither=False)
        _, dithered = reference(md, clips, dither=True)
        card = None
        for fmt in a.formats:
            out = tmp / f"{Path(md).name}.{'onnx' if fmt == 'onnx' else 'pt2'}"
            t = time.perf_counter()
            card = export_model(md, out, fmt)
            secs = time.perf_counter() - t
            sr = card["input"]["sample_rate"]
            waves = [(read_audio(str(c), sample_rate=sr)[0] / 32768.0).astype(np.float32) for c in clips]
            got = np.stack(run_exported(out, fmt, waves))
            # All the clips as one long file: past one chunk of a ResNet's chunk_frames
            long_path = tmp / f"long_{sr}.wav"
            if not long_path.exists():
                import soundfile as sf

                sf.write(long_path, np.concatenate(waves), sr, subtype="FLOAT")
            long_got = run_exported(out, fmt, [np.concatenate(waves)])[0]
            long_want = reference(md, [long_path], dither=False)[1][0]
            if what == "embedding":
                def cos(X, Y):
                    return np.sum(X * Y, 1) / np.linalg.norm(X, axis=1) / np.linalg.norm(Y, axis=1)
                c, cd = cos(got, want), cos(got, dithered)
                lc = cos(long_got[None], long_want[None])[0]
                line = (f"cosine min {c.min():.7f} (1-cos max {1 - c.min():.1e})   "
                        f"cosine min {cd.min():.7f} (1-cos max {1 - cd.min():.1e})   long file: cosine {lc:.7f}")
            else:
                line = (f"max |posterior diff| {np.abs(got - want).max():.1e}            "
                        f"max |posterior diff| {np.abs(got - dithered).max():.1e}                    "
                        f"long file: {np.abs(long_got - long_want).max():.1e}")
            label = Path(md).name if str(tmp) in md else md
            print(f"{label[-44:]:44s} {fmt:6s} {secs:8.1f}  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
