"""Train the x-vector network on a data dir's speakers (or any utterance -> label table).

python -m pyxv.bin.train_xvector --config conf/xvector_demo.yaml --feats-dir exp/xvector_clean/feats \
    [--labels data/pretrain/train/utt2spk] [--start-over] [--init-from M.pt] data/pretrain/train exp/xvector_clean

Training continues from the newest checkpoint in the output dir when it was
written under the same config, data, initial model and global batch (a code edit
is logged and the run goes on); otherwise, and with --start-over, the old
training state is moved into <out_dir>/stale_<YYYYmmdd-HHMMSS>/ (never deleted)
and training starts over. train.batch_size is per process.

Run under ``torchrun --nproc_per_node N`` for DistributedDataParallel.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pyxv.features.archive import exit_cleanly_on_signals
from pyxv.io import OutputError, read_table
from pyxv.config import ConfigError
from pyxv.train.checkpoint import CheckpointError
from pyxv.features.network_input import FeatureSource
from pyxv.train.trainer import TrainingDataError, train_classifier


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--feats-dir", help="prepared features (feats.scp, utt2num_frames); "
                    "default: the data dir's feats.scp + vad.scp processed on the fly")
    ap.add_argument("--labels", help="utterance -> class table [<data>/utt2spk]")
    ap.add_argument("--resume", action="store_true", help="(the default) continue from the newest checkpoint")
    ap.add_argument("--start-over", action="store_true",
                    help="start over, moving the existing training state into <out_dir>/stale_<time>/")
    ap.add_argument("--init-from", help="model file to start from (all but the output layer)")
    ap.add_argument("--extra-file", action="append", default=[], metavar="NAME=PATH",
                    help="a text file stored inside final.pt (e.g. mfcc.conf=conf/mfcc_8k.conf)")
    ap.add_argument("--use-gpu", choices=["auto", "yes", "no"], default="auto")
    ap.add_argument("--log-file", help="also log here (the job runner's log usually suffices)")
    ap.add_argument("data")
    ap.add_argument("out_dir")
    a = ap.parse_args(argv)
    if a.use_gpu == "yes":
        from pyxv.device import no_gpu_reason

        no_gpu = no_gpu_reason()
        if no_gpu:   # one line before any work, not the trainer's RuntimeError traceback
            print(f"train_xvector: --use-gpu yes but {no_gpu}", file=sys.stderr)
            return 1
    data = Path(a.data)
    labels_file = Path(a.labels) if a.labels else data / "utt2spk"
    try:
        utt2label = read_table(labels_file)
        if a.feats_dir:
            fd = Path(a.feats_dir)
            src = FeatureSource(fd / "feats.scp", utt2num_frames=fd / "utt2num_frames")
        else:
            from pyxv.nnet.config import load_config
            dc = load_config(a.config)["data"]
            src = FeatureSource(data / "feats.scp", vad_scp=(data / "vad.scp") if dc["apply_vad"] else None,
                                cmn_window=dc["cmn_window"], apply_vad=dc["apply_vad"])
        utt2orig = read_table(data / "utt2orig") if (data / "utt2orig").is_file() else {}
        # Kaldi's augmented ids <utt>-<type>: held-out utterances' copies must not be trained on.
        for u in utt2label:
            base, _, kind = u.rpartition("-")
            if kind in ("reverb", "noise", "music", "babble") and base in utt2label:
                utt2orig.setdefault(u, base)
        extra = {}
        for item in a.extra_file:
            name, _, path = item.partition("=")
            extra[name] = Path(path).read_text(encoding="utf-8")
        if a.init_from:
            # Say where the start weights came from (the report names an adapted imported encoder).
            from pyxv.train.checkpoint import load as load_checkpoint

            extra["init_from"] = str(a.init_from)
            origin = (load_checkpoint(a.init_from).get("extra") or {})
            if origin.get("imported_from") or origin.get("adapted_from_imported"):
                extra["adapted_from_imported"] = origin.get("imported_from") or origin["adapted_from_imported"]
        use_gpu = None if a.use_gpu == "auto" else a.use_gpu == "yes"
        exit_cleanly_on_signals()  # SIGTERM (Slurm pre-emption) leaves no temporary checkpoint file
        train_classifier(src, utt2label, a.config, a.out_dir, init_from=a.init_from, resume=not a.start_over,
                         utt2orig=utt2orig, extra=extra, log_file=a.log_file, use_gpu=use_gpu)
    except (ConfigError, CheckpointError, TrainingDataError, OutputError, FileNotFoundError, KeyError) as e:
        print(f"train_xvector: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
