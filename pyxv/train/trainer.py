"""Generic trainer of the x-vector network on any utterance -> label map.

The same code trains the speaker x-vector (labels from ``utt2spk``) and the
emotion systems (labels from ``utt2emo``: random init on MFCC or GeMAPS LLDs,
or fine-tuning of a pre-trained x-vector)::

    from pyxv.features.network_input import FeatureSource
    from pyxv.train.trainer import train_classifier
    src = FeatureSource("data/demo/all/feats.scp", vad_scp="data/demo/all/vad.scp", cmn_window=300)
    res = train_classifier(src, utt2emo, cfg, "exp/emotion/x",
                           init_from="exp/xvector_clean/final.pt",   # all but the output layer
                           dev=(dev_src, dev_utt2emo))              # validation + early stopping
    res.model, res.labels, res.history, res.final_path

``cfg`` is a config dict or YAML path (:mod:`pyxv.nnet.config`); its
``train`` section holds the optimiser (Adam, warm-up, exp/cosine decay),
``pretrained_lr_mult`` (lr factor of layers loaded by ``init_from``),
``freeze: embedding`` (train only the layers after the x-vector),
``patience`` (early stopping on the dev metric), and ``model.loss: softmax``
gives plain cross-entropy; ``data.sampling: balanced`` draws classes
uniformly. ``model.input_dim`` is taken from the features.

Outputs in ``out_dir``: ``config.yaml``, ``log/history.json`` (one dict per
epoch: epoch, train_loss, train_acc, valid_loss, valid_acc, lr [, dev_metric]),
``checkpoints/epoch_N.pt`` and, every ``train.checkpoint_interval`` optimizer
steps, ``checkpoints/epoch_N_step_S.pt`` (resume state), ``final.pt`` (model,
config, labels, ``extra``).

Resuming is the default: a run finds the newest checkpoint in ``out_dir`` and
continues from it when it was written under the same config, training data,
initial model and global batch (:func:`pyxv.train.checkpoint.fingerprint`); a
changed code revision is logged and the run goes on. Otherwise it moves the old
training state (checkpoints, best.pt, final.pt, config.yaml, history) into
``out_dir/stale_<YYYYmmdd-HHMMSS>/`` and starts over, saying what changed and
where the old state went (``resume=False``, the CLI's ``--start-over``, starts
over on purpose, moving aside too); nothing is deleted. A resumed run ends with
the same weights as an uninterrupted one, also from a mid-epoch checkpoint
(batches depend only on seed, epoch, step and global batch; RNG state is saved).

Under ``torchrun`` it runs as DistributedDataParallel (gloo on CPU, NCCL on
GPU): ``train.batch_size`` chunks per process, a global batch of
world x batch_size. The chunks of each global batch are planned from the seed
whatever the world size and each goes to one process, so runs of the same seed
and global batch see the same data; steps per epoch (by default one pass over
the voiced frames) shrink as the global batch grows. ``train.lr_scale_ref_batch``
N > 0 scales the lr linearly: lr x global batch / N. A checkpoint resumes on
another number of processes when the global batch is unchanged; otherwise the
run stops with a message saying how to go on.

On a GPU: ``train.amp`` (auto: bf16 where the GPU has it, else fp16 with a
GradScaler), TF32, cuDNN autotuning, fused optimizer step; the step never waits
for the device: loss and accuracy are summed there and read every
``train.log_interval`` steps. Batches come from one DataLoader for the whole run
(``train.num_workers`` processes, ``train.prefetch_factor`` batches ahead each,
pinned memory). A GPU out of memory stops the run with one line naming
``train.batch_size`` (:class:`GpuMemoryError`, a ConfigError); the newest
checkpoint stays as it was.

Pre-emption: SIGTERM or SIGUSR1 (e.g. Slurm's ``--signal=B:USR1@120``, forwarded
by the batch script) makes every process stop at the next log point (they agree
there: any process signalled stops them all), after a step checkpoint (or at
an epoch's end, after its checkpoint); the process then exits with status 75
(:class:`Preempted`, ``pyxv.train.distributed.PREEMPTED_EXIT``): "checkpoint
written, run again to resume" (each process also touches the file named by
``PYXV_PREEMPTED_MARK``, for a launcher around torchrun, which reports 1 for
any failed worker). DataLoader workers ignore both signals (a batch system may
signal every process of the job). A process killed outright leaves the others
to fail in their next collective (at most ``train.dist_timeout`` s; torchrun
ends them sooner); the rerun resumes from the newest checkpoint.

The phases: :func:`_prepare_data`, :func:`_build_model` (the one place the
network is built), :func:`_build_optimizer`, :func:`_resume`, then
:class:`_Run`'s ``train_epoch`` / ``validate`` / ``end_epoch`` / ``save_final``.
"""
from __future__ import annotations

import gc
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..io import atomic_open
from ..nnet.config import build_encoder, dump_config, load_config, validate_config
from ..nnet.encoder import SpeakerEncoder
from ..parallel.preemption import STOP_SIGNALS
from . import checkpoint as ckpt
from . import distributed as dd
from ..features.network_input import FeatureSource, chunk
from .data import RunBatches, default_steps, filter_training_set, split_validation, training_loader

log = logging.getLogger("pyxv.train")


class TrainingDataError(ValueError):
    """Training data that cannot be used (e.g. fewer than 2 classes)."""


class GpuMemoryError(ConfigError):
    """The GPU ran out of memory in a training step: a batch size this GPU cannot
    hold (a ConfigError, so the CLI says it in one line)."""


class Preempted(SystemExit):
    """Training stopped for pre-emption (SIGTERM/SIGUSR1) at a step all processes
    agreed on, after writing the checkpoint (``checkpoint``: its path); the
    process exits with :data:`~pyxv.train.distributed.PREEMPTED_EXIT` (75)."""

    def __init__(self, checkpoint: str):
        super().__init__(dd.PREEMPTED_EXIT)
        self.checkpoint = checkpoint


class _StopSignals:
    """While training: SIGTERM and SIGUSR1 (Slurm's notice before a time limit or
    pre-emption, e.g. ``--signal=B:USR1@120`` forwarded by the batch script) only
    note that they came; true once one has. The processes act on it together at
    the next log point (:meth:`_Run.train_epoch`). The previous handlers come
    back after. (Only the main thread can take signals: elsewhere this does
    nothing.)"""

    SIGNALS = STOP_SIGNALS

    def __init__(self):
        self.got: list[int] = []
        self._old: dict = {}

    def __bool__(self) -> bool:
        return bool(self.got)

    def _note(self, signum, frame) -> None:  # no logging here: a handler may interrupt the logger
        self.got.append(signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._note) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}


@dataclass
class TrainResult:
    model: SpeakerEncoder
    labels: list
    history: list = field(default_factory=list)
    final_path: Path | None = None
    best_epoch: int | None = None


def setup_logging(log_file: str | os.PathLike | None = None, main: bool = True) -> None:
    """Log lines to stdout (and ``log_file``) with time stamps; quiet on DDP ranks > 0."""
    log.setLevel(logging.INFO if main else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S")
    if not any(getattr(h, "_pyxv", False) for h in log.handlers):
        h = logging.StreamHandler(sys.stdout)
        h.setFormatter(fmt)
        h._pyxv = True
        log.addHandler(h)
        log.propagate = False
    if log_file and main:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        h = logging.FileHandler(log_file)
        h.setFormatter(fmt)
        log.addHandler(h)


def lr_lambda(warmup: int, total: int, schedule: str, final_ratio: float) -> Callable[[int], float]:
    """Factor of the base lr at a step: linear warm-up, then exp/cosine decay to
    ``final_ratio`` at the last step (or constant)."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant" or total <= warmup:
            return 1.0
        p = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "exp":
            return final_ratio ** p
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    return f


def precision(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, loss scaling needed)`` of ``train.amp`` on ``device``.

    Autocast runs on a GPU only. ``auto`` and ``bf16`` take bf16 where the GPU
    computes it natively (Ampere and later), else fp16; fp16, whose small range
    lets gradients underflow, needs a GradScaler. ``none``: fp32 (TF32 matmuls).
    """
    if device.type != "cuda" or amp == "none":
        return None, False
    if amp in ("auto", "bf16") and _native_bf16():
        return torch.bfloat16, False
    return torch.float16, True


def _native_bf16() -> bool:
    try:  # without emulation: emulated bf16 (pre-Ampere) is slower than fp16
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.3
        return torch.cuda.is_bf16_supported()


class _CudaSpeed:
    """TF32 matmuls and convolutions, and cuDNN autotuning, while a run trains on a
    GPU; the previous settings come back after (extraction in the same process
    keeps its own).

    cudnn.benchmark tunes each convolution shape once and reuses the choice. The
    chunk length varies per batch, so a run meets chunk_max - chunk_min + 1 input
    shapes (201 for the paper's 200-400 frames): each is tuned the first time it
    comes, then reused for the rest of the run, which repeats every length
    thousands of times (a VoxCeleb epoch has ~10^4 steps); so the lengths are not
    bucketed, which would change the batches a seed gives. Validation (one
    utterance of any length at a time, each once per epoch) runs untuned: see
    :func:`evaluate`."""

    def __init__(self, device: torch.device):
        self.on = device.type == "cuda"
        self.saved = None

    def __enter__(self):
        if self.on:
            self.saved = (_tf32(), torch.backends.cudnn.benchmark)
            _tf32(True)
            torch.backends.cudnn.benchmark = True
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            if self.saved[0] is not None:
                _tf32(self.saved[0])
            torch.backends.cudnn.benchmark = self.saved[1]


def _tf32(on=None):
    """TF32 for fp32 matmuls and cuDNN convolutions: set when ``on`` is given
    (True/False, or a setting this returned); returns the setting before, or None
    (and sets nothing) where the caller chose through torch's newer fp32_precision
    API, which torch refuses to mix with this older one. The older one here, as
    torch answers both after it and not the other way round."""
    try:
        old = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    except RuntimeError:
        return None
    if on is not None:
        mm, conv = on if isinstance(on, tuple) else ("high", True) if on else ("highest", False)
        torch.set_float32_matmul_precision(mm)
        torch.backends.cudnn.allow_tf32 = conv
    return old


@torch.no_grad()
def evaluate(net: SpeakerEncoder, source: FeatureSource, utts: Sequence[str], targets: Sequence[int],
             max_frames: int, device: torch.device, amp=None) -> tuple[float, float]:
    """Loss and accuracy on the first ``max_frames`` frames of each utterance."""
    was = net.training
    net.eval()
    # One utterance at a time, of any length up to max_frames, each once per
    # epoch: autotuning every new shape would cost more than it saves.
    tuned = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    tot_loss, correct = 0.0, 0
    try:
        for u, y in zip(utts, targets):
            x = torch.from_numpy(np.array(source[u][:max_frames])).unsqueeze(0).to(device)
            t = torch.tensor([y], device=device)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out, plain = net(x, t, with_plain=True)
            tot_loss += F.cross_entropy(out.float(), t).item()
            correct += int(plain.argmax(1).item() == y)
    finally:
        torch.backends.cudnn.benchmark = tuned
    net.train(was)
    n = max(1, len(utts))
    return tot_loss / n, correct / n


def _as_source(features) -> FeatureSource:
    if isinstance(features, FeatureSource):
        return features
    return FeatureSource(features)


def _load_init(net: SpeakerEncoder, path, cfg: dict) -> None:
    ck = ckpt.load(path)
    ckpt.check_arch(ck, cfg, path)
    ckpt.load_weights(net, ck["model"], path, skip_head=True)
    log.info("initialised all layers but the output layer from %s", path)


# Config keys that do not change the weights: a resumed run may differ in them.
# train.amp is how the numbers are computed, like the device: a run may resume on
# another GPU (auto: bf16 on one, fp16 on another) or with amp none.
_NOT_IN_FINGERPRINT = {"train": ("checkpoint_interval", "keep_checkpoints", "log_interval", "num_workers",
                                 "prefetch_factor", "amp", "dist_timeout"),
                       "data": ("cache_utts",)}


@dataclass
class _Data:
    """What an epoch loop needs to know about the data (phase 1)."""
    source: FeatureSource
    lengths: Mapping[str, int]
    labels: list
    tr_utts: list
    tr_labels: list
    valid_source: FeatureSource
    valid: list
    valid_targets: list
    steps: int
    global_batch: int             # chunks per optimizer step over all processes
    fingerprint_lines: dict       # named lists of lines describing the data


@dataclass
class _Optim:
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Any
    params: list


@dataclass
class _Progress:
    """Where training stands; saved in every checkpoint (phase 3 restores it)."""
    epoch: int = 1                # the epoch to run (or running)
    step: int = 0                 # optimizer steps done in it
    sums: list = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss*n, correct, n of the epoch so far
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"metric": None, "epoch": None, "bad": 0})
    stop: bool = False


def train_classifier(features, utt2label: Mapping[str, str], config, out_dir: str | os.PathLike, *,
                     labels: Sequence[str] | None = None, init_from: str | os.PathLike | None = None,
                     dev=None, dev_metric: Callable[[SpeakerEncoder, int], float] | None = None,
                     valid_utts: Sequence[str] | None = None, utt2orig: Mapping[str, str] | None = None,
                     resume: bool = True,
                     extra: Mapping[str, Any] | None = None, log_file: str | os.PathLike | None = None,
                     use_gpu: bool | None = None, progress: bool | None = None,
                     on_epoch_end: Callable[[int, dict], None] | None = None,
                     on_step: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train the encoder of ``cfg`` (any ``model.type``) to predict ``utt2label`` from ``features``.

    features: a :class:`FeatureSource` (or an scp path) giving ``(T, D)`` inputs.
    utt2label: utterance -> class name (speaker, emotion ...).
    config: config dict or YAML path.
    labels: class names in output order (default: sorted classes left after filtering).
    init_from: model file whose weights (all but the output layer) start training.
    dev: ``(FeatureSource, utt2label)`` used as validation set instead of held-out
        training utterances; its accuracy is the early-stopping metric.
    dev_metric: ``f(model, epoch) -> float`` (higher is better) overriding that metric.
    valid_utts: explicit held-out utterances (default: ``data.valid_per_class`` per class).
    utt2orig: augmented utterance -> its clean source; validation is drawn from
        clean utterances only and their augmented copies are kept out of training.
    resume: continue from the newest checkpoint in ``out_dir/checkpoints`` when it
        was written under the same config, data, initial model and global batch
        (else move the old state aside and start over, saying why); False starts
        over on purpose (the old state is moved aside too).
    extra: stored in ``final.pt`` (e.g. MFCC/VAD config texts).
    on_epoch_end: ``f(epoch, record)`` called on the main process after each epoch's checkpoint.
    on_step: ``f(epoch, step)`` called after each optimizer step (and its checkpoint, if any).
    Returns a :class:`TrainResult`; on DDP ranks > 0 the model is returned too.
    """
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else validate_config(config)
    info = dd.setup(use_gpu, timeout=cfg["train"]["dist_timeout"])
    out_dir = Path(out_dir)
    setup_logging(log_file, info.main)
    with _StopSignals() as signalled:  # from here on SIGTERM/SIGUSR1 stop at an agreed step
        source = _as_source(features)
        if cfg["data"]["cache_utts"] != 64:
            source._cache_size = cfg["data"]["cache_utts"]

        data = _prepare_data(source, utt2label, cfg, labels, dev, valid_utts, utt2orig, info)
        if callable(dev) and dev_metric is None:
            dev_metric = dev
        net, frozen = _build_model(cfg, data, init_from, info)
        optim = _build_optimizer(net, cfg, data.steps, init_from, info.device, info.world)
        fp = ckpt.fingerprint(_fingerprint_config(cfg), data.fingerprint_lines, processes=info.world, extra=extra,
                              init_from=init_from, features=getattr(source, "scp", None))
        if info.main:
            _remove_temporary_files(out_dir)
        state = (_resume(out_dir, fp, net, optim, info) if resume
                 else _start_over(out_dir, "on purpose (--start-over, resume=False)", info))
        model = net
        if info.enabled:
            model = dd.wrap_ddp(net, info)
            if info.main and info.device.type != "cuda":
                log.info("DDP on CPU: one gradient-bucket layout for the whole run, so a resumed run is "
                         "bit-identical (find_unused_parameters=True; torch's warning that it found none is expected)")
        if info.main:
            dump_config(cfg, out_dir / "config.yaml")
        use_bar = info.main and (sys.stderr.isatty() if progress is None else progress)
        run = _Run(cfg, data, net, model, frozen, optim, state, fp, labels=data.labels, extra=extra,
                   out_dir=out_dir, info=info, amp=precision(cfg["train"]["amp"], info.device)[0], use_bar=use_bar,
                   dev_given=dev is not None, dev_metric=dev_metric, on_epoch_end=on_epoch_end, on_step=on_step,
                   signalled=signalled)
        try:
            with _CudaSpeed(info.device):
                while state.epoch <= cfg["train"]["epochs"] and not state.stop:
                    run.train_epoch()
                    run.end_epoch()
                    if state.epoch <= cfg["train"]["epochs"] and not state.stop and run.agree_to_stop():
                        run.stop_for_preemption(None)   # the epoch checkpoint just written is the resume point
        except Preempted:
            del model
            run.release_ddp()
            dd.cleanup(info)
            raise
        finally:
            run.close_loader()
    del model
    run.release_ddp()
    return run.save_final()


# ------------------------------------------------------------- phase 1: data
def _prepare_data(source: FeatureSource, utt2label, cfg: dict, labels, dev, valid_utts, utt2orig,
                  info: dd.DistInfo) -> _Data:
    """Filter the training set, fix the class list, choose validation utterances
    and the number of steps per epoch."""
    tc, dc = cfg["train"], cfg["data"]
    lengths = source.lengths
    train_map, stats = filter_training_set(utt2label, lengths, min_frames=dc["min_frames"],
                                           min_utts_per_class=dc["min_utts_per_class"])
    log.info("training data: %d utterances of %d classes kept; %d without features, %d shorter than %d "
             "frames, %d classes with fewer than %d utterances dropped", stats["utts"], stats["classes"],
             stats["missing_features"], stats["too_short"], dc["min_frames"], stats["classes_dropped"],
             dc["min_utts_per_class"])
    classes = sorted(set(train_map.values()))
    if len(classes) < 2:
        raise TrainingDataError(
            f"training needs at least 2 classes after filtering, found {len(classes)} "
            f"({stats['utts']} utterances kept of {len(utt2label)}; data.min_frames={dc['min_frames']}, "
            f"data.min_utts_per_class={dc['min_utts_per_class']})")
    labels = list(classes if labels is None else labels)
    unknown = set(classes) - set(labels)
    if unknown:
        raise TrainingDataError(f"labels {sorted(unknown)[:5]} are not in the given label list")
    lab_index = {l: i for i, l in enumerate(labels)}

    if dev is not None and not callable(dev):
        dev_source, dev_map = dev
        dev_source = _as_source(dev_source)
        valid = sorted(u for u in dev_map if u in dev_source and dev_map[u] in lab_index)
        valid_source = dev_source
        valid_targets = [lab_index[dev_map[u]] for u in valid]
    else:
        utt2orig = dict(utt2orig or {})
        if valid_utts is None:
            clean = {u: l for u, l in train_map.items() if u not in utt2orig}
            valid_utts = split_validation(clean, dc["valid_per_class"], dc["max_valid"], tc["seed"])
        valid = sorted(u for u in valid_utts if u in train_map)
        valid_source = source
        valid_targets = [lab_index[train_map[u]] for u in valid]
    held = set(valid) if valid_source is source else set()
    tr_utts = sorted(u for u in train_map if u not in held and (utt2orig or {}).get(u) not in held)
    tr_labels = [lab_index[train_map[u]] for u in tr_utts]
    # train.batch_size is per process; an epoch is planned in global batches, so
    # more processes take fewer steps over the same data.
    global_batch = tc["batch_size"] * info.world
    steps = tc["steps_per_epoch"] or default_steps((lengths[u] for u in tr_utts), global_batch,
                                                   dc["chunk_min"], dc["chunk_max"])
    log.info("%d training and %d validation utterances, %d classes, %d steps/epoch of %d chunks (%d process(es) "
             "x %d) of %d-%d frames", len(tr_utts), len(valid), len(labels), steps, global_batch, info.world,
             tc["batch_size"], dc["chunk_min"], dc["chunk_max"])
    # What the run depends on, for the resume fingerprint: every training and
    # validation utterance with its label, length and feature location, and the
    # size of each feature file (features recomputed in place change it); one
    # list per kind so that a refusal names the one that changed.
    table = getattr(source, "table", {})
    lists = {"class list": list(labels),
             "training list": [f"{u} {y} {lengths[u]} {table.get(u, '')}" for u, y in zip(tr_utts, tr_labels)],
             "validation list": [f"{u} {y}" for u, y in zip(valid, valid_targets)],
             "feature file sizes": _feature_file_sizes(table.get(u, "") for u in tr_utts)}
    return _Data(source, lengths, labels, tr_utts, tr_labels, valid_source, valid, valid_targets, steps,
                 global_batch, lists)


def _feature_file_sizes(specs) -> list[str]:
    out = []
    for f in sorted({s.rpartition(":")[0] if ":" in s else s for s in specs if s and not s.endswith("|")}):
        try:
            out.append(f"{f} {os.path.getsize(f)}")
        except OSError:
            out.append(f"{f} missing")
    return out


def _fingerprint_config(cfg: dict) -> dict:
    c = {k: dict(v) for k, v in cfg.items()}
    for section, keys in _NOT_IN_FINGERPRINT.items():
        for k in keys:
            c.get(section, {}).pop(k, None)
    return c


# ------------------------------------------------- phase 2: model, optimiser
def _build_model(cfg: dict, data: _Data, init_from, info: dd.DistInfo) -> tuple[SpeakerEncoder, list]:
    """The network (input size from the features), its initial weights and frozen parts."""
    dim = data.source.dim
    if cfg["model"]["input_dim"] != dim:
        if init_from is not None:
            raise ConfigError(f"features have {dim} dims but the model to fine-tune takes {cfg['model']['input_dim']}")
        log.info("model.input_dim set to %d from the features", dim)
        cfg["model"]["input_dim"] = dim
    torch.manual_seed(cfg["train"]["seed"])
    net = build_encoder(cfg, len(data.labels))  # any registered encoder type (model.type)
    if init_from is not None:
        _load_init(net, init_from, cfg)
    frozen = net.freeze_embedding() if cfg["train"]["freeze"] == "embedding" else []
    if info.main:
        log.info("model: %d parameters (%d trainable)", net.num_parameters(),
                 sum(p.numel() for p in net.parameters() if p.requires_grad))
    return net.to(info.device), frozen


def scaled_lr(tc: Mapping, world: int) -> float:
    """The base lr: ``train.lr``, or with ``train.lr_scale_ref_batch`` N > 0 the
    linear scaling rule (Goyal et al. 2017) ``lr x global batch / N``, global
    batch = ``world x train.batch_size``."""
    ref = tc["lr_scale_ref_batch"]
    return tc["lr"] * tc["batch_size"] * world / ref if ref > 0 else tc["lr"]


def _build_optimizer(net: SpeakerEncoder, cfg: dict, steps: int, init_from, device: torch.device,
                     world: int = 1) -> _Optim:
    """Optimiser (pre-trained layers at ``pretrained_lr_mult`` x lr), lr schedule, AMP scaler."""
    tc = cfg["train"]
    lr = scaled_lr(tc, world)
    if lr != tc["lr"]:
        log.info("lr %.4g: train.lr %.4g x global batch %d / train.lr_scale_ref_batch %d", lr, tc["lr"],
                 tc["batch_size"] * world, tc["lr_scale_ref_batch"])
    mult = tc["pretrained_lr_mult"] if init_from is not None else 1.0
    body = [p for p in net.body_parameters() if p.requires_grad]
    head = [p for p in net.head_parameters() if p.requires_grad]
    groups = [{"params": body, "lr": lr * mult}, {"params": head, "lr": lr}]
    # On a GPU the fused kernels: one launch per step, and with fp16 the GradScaler's
    # inf check stays on the device (the unfused step reads it on the host every step).
    fused = {"fused": True} if device.type == "cuda" else {}
    if tc["optimizer"] == "adam":
        opt = torch.optim.Adam(groups, lr=lr, weight_decay=tc["weight_decay"], **fused)
    elif tc["optimizer"] == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=tc["weight_decay"], **fused)
    else:
        opt = torch.optim.SGD(groups, lr=lr, momentum=tc["momentum"], weight_decay=tc["weight_decay"], **fused)
    total = steps * tc["epochs"]
    # Linear probing, then fine-tuning (LP-FT, Kumar et al. 2022): the pre-trained
    # layers hold still for `still` steps while the new output layer learns, so its
    # first, random gradients do not distort them; then they follow their own
    # warm-up and schedule (with still = 0, the head's).
    still = steps * tc["head_only_epochs"] if init_from is not None else 0
    body_f = lr_lambda(tc["warmup_steps"], total - still, tc["lr_schedule"], tc["final_lr_ratio"])
    head_f = lr_lambda(tc["warmup_steps"], total, tc["lr_schedule"], tc["final_lr_ratio"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, [lambda step: 0.0 if step < still else body_f(step - still), head_f])
    dtype, scaling = precision(tc["amp"], device)
    if scaling and tc["amp"] in ("auto", "bf16"):
        log.info("train.amp %s: this GPU has no native bf16; autocast in fp16 with loss scaling", tc["amp"])
    scaler = torch.amp.GradScaler("cuda") if scaling else None
    return _Optim(opt, sched, scaler, body + head)


# ------------------------------------------------------------ phase 3: resume
_ON_PURPOSE = ("--start-over (steps/train_xvector.sh --resume false; train_classifier(resume=False)) starts over "
               "on purpose, also moving the old state aside")


def _start_over(out_dir: Path, why: str, info: dd.DistInfo) -> _Progress:
    """Fresh progress. The old training state would mislead a later resume, and
    may be all a user has of a long run: it is moved into ``stale_<time>/``,
    never deleted."""
    dd.barrier(info)  # every process has read the checkpoints before the main one moves them
    if info.main:
        dest, moved = ckpt.move_aside(out_dir)
        if dest is None:
            log.info("starting over: %s (no earlier training state in %s)", why, out_dir)
        else:
            log.info("starting over: %s. The old training state (%s) was moved to %s/ (nothing was deleted; to go "
                     "on with it instead, undo the change and move it back). %s.", why, ", ".join(moved), dest,
                     _ON_PURPOSE)
    return _Progress()


def _resume(out_dir: Path, fp: dict, net: SpeakerEncoder, optim: _Optim, info: dd.DistInfo) -> _Progress:
    """Restore the newest readable checkpoint written under the same fingerprint;
    otherwise move the old state aside and start over, saying why; raise
    :class:`~pyxv.train.checkpoint.CheckpointError` when only the number of
    processes (and so the global batch) differs."""
    found = ckpt.training_checkpoints(out_dir)
    for path in found:
        try:
            ck = ckpt.load(path)
        except ckpt.UntrustedCheckpointError:  # an older pyxv's file: resumed only with PYXV_TRUST_PICKLE=1
            raise
        except ckpt.CheckpointError as e:  # written whole, so only damage from outside; try an older one
            log.warning("cannot resume from %s (%s); trying an older checkpoint", path, e)
            continue
        check = ckpt.compare_fingerprints(ck.get("fingerprint"), fp)
        if check.changed:
            return _start_over(out_dir, f"{path} was written by another run: {'; '.join(check.changed)}", info)
        if check.launch:
            # Starting over here would throw away a run that only needs its old launch.
            raise ckpt.CheckpointError(f"{path}: cannot resume on {info.world} process(es): {check.launch}")
        for note in check.notes:
            log.info("resuming although %s", note)
        net.load_state_dict(ck["model"])
        optim.opt.load_state_dict(ck["optimizer"])
        optim.sched.load_state_dict(ck["scheduler"])
        if optim.scaler is not None and ck.get("scaler"):
            optim.scaler.load_state_dict(ck["scaler"])
        _set_rng_state(ck.get("rng"), info)
        mid = ck.get("mid_epoch", False)
        state = _Progress(epoch=ck["epoch"] if mid else ck["epoch"] + 1, step=ck["step"] if mid else 0,
                          sums=list(ck["sums"]) if mid and info.main else [0.0, 0.0, 0.0],
                          history=ck["history"], best=ck["best"])
        patience = ck["config"]["train"]["patience"]
        state.stop = patience > 0 and state.best["bad"] >= patience
        log.info("resuming from %s (epoch %d, %s)", path, ck["epoch"],
                 f"{ck['step']} steps done" if mid else "complete")
        return state
    if found:
        return _start_over(out_dir, "no readable checkpoint", info)
    return _Progress()


def _remove_temporary_files(out_dir: Path) -> None:
    """What a run killed (-9) while writing a checkpoint or log left: ``.<name>.*.tmp``."""
    for d in (out_dir, out_dir / "checkpoints", out_dir / "log"):
        for p in d.glob(".*.tmp") if d.is_dir() else ():
            p.unlink(missing_ok=True)
            log.info("removed %s (left by an interrupted run)", p)


def _cuda_rng_states(info: dd.DistInfo) -> list | None:
    """The CUDA generator state of each process's own device, in rank order (a
    collective: every process calls it); None on CPU."""
    if info.device.type != "cuda":
        return None
    return dd.all_gather_object(torch.cuda.get_rng_state(info.device), info)


def _rng_state(cuda_by_rank: list | None, info: dd.DistInfo) -> dict:
    if cuda_by_rank:  # this process's own state as of now (gathered before validation)
        cuda_by_rank = list(cuda_by_rank)
        cuda_by_rank[info.rank] = torch.cuda.get_rng_state(info.device)
    return {"torch": torch.get_rng_state(), "cuda_by_rank": cuda_by_rank}


def _set_rng_state(rng: dict | None, info: dd.DistInfo) -> None:
    """Restore the CPU generator and this process's own CUDA device's state
    (saved per rank, so resuming with other visible devices is safe)."""
    if not rng:
        return
    torch.set_rng_state(rng["torch"])
    states = rng.get("cuda_by_rank")
    if info.device.type != "cuda" or not states:
        return
    if info.rank < len(states):
        torch.cuda.set_rng_state(states[info.rank], info.device)
    else:  # more processes than the run that saved it: only reached at an unchanged global batch
        log.warning("the checkpoint holds the CUDA RNG states of %d process(es); process %d keeps its seeded "
                    "state", len(states), info.rank)


# -------------------------------------------- phases 4-6: epochs, validation, save
class _Run:
    """One training run from its current progress to ``final.pt``."""

    def __init__(self, cfg, data: _Data, net, model, frozen, optim: _Optim, state: _Progress, fp: dict, *,
                 labels, extra, out_dir: Path, info: dd.DistInfo, amp, use_bar: bool, dev_given: bool,
                 dev_metric, on_epoch_end, on_step, signalled: "_StopSignals | None" = None):
        self.cfg, self.tc, self.dc = cfg, cfg["train"], cfg["data"]
        self.data, self.net, self.model, self.frozen, self.optim = data, net, model, frozen, optim
        self.state, self.fp, self.labels, self.extra = state, fp, labels, extra
        self.out_dir, self.info, self.amp, self.use_bar = out_dir, info, amp, use_bar
        self.dev_given, self.dev_metric = dev_given, dev_metric
        self.on_epoch_end, self.on_step = on_epoch_end, on_step
        self.signalled = signalled if signalled is not None else _StopSignals()
        self._loader = self._batches = None
        self._next_key: tuple[int, int] | None = None   # the (epoch, step) the loader gives next

    # ------------------------------------------------------------- phase 4
    def _batch_iter(self):
        """The run's one loader (its workers serve every epoch), positioned at the
        first batch not done; built on first use, again only if the position moved
        otherwise (it does not in a run)."""
        st = self.state
        key = self._key(st.epoch, st.step)
        if self._batches is None or key != self._next_key:
            self.close_loader()
            tc, dc, data, info = self.tc, self.dc, self.data, self.info
            # The global batch is planned, this process takes its share (rank::world);
            # batches are a pure function of (seed, epoch, index), so a resumed epoch skips the done ones.
            run_batches = RunBatches(data.source, data.tr_utts, data.tr_labels, data.lengths,
                                     batch_size=data.global_batch, steps=data.steps, chunk_min=dc["chunk_min"],
                                     chunk_max=dc["chunk_max"], sampling=dc["sampling"], seed=tc["seed"],
                                     rank=info.rank, world=info.world)
            self._loader = training_loader(run_batches, start=key, epochs=tc["epochs"],
                                           num_workers=tc["num_workers"], prefetch_factor=tc["prefetch_factor"],
                                           pin_memory=info.device.type == "cuda")
            self._batches = iter(self._loader)
            self._next_key = key
        return self._batches

    def _key(self, epoch: int, done: int) -> tuple[int, int]:
        return (epoch + 1, 0) if done >= self.data.steps else (epoch, done)

    def close_loader(self) -> None:
        """Stop the loader's workers now (at the end, on early stopping, pre-emption or
        an error), not when the iterator is collected: a traceback kept by the caller
        would keep them alive until the interpreter's exit, which then waits for them
        (and they ignore the SIGTERM it sends: :func:`~pyxv.train.data.training_loader`)."""
        shutdown = getattr(self._batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._batches = self._loader = self._next_key = None

    def release_ddp(self) -> None:
        """Free the DDP wrapper (its gradient reducer holds the process group) while
        the process group still exists, before destroy_process_group."""
        self.model = None
        gc.collect()

    def train_epoch(self) -> None:
        """The optimizer steps of ``state.epoch`` not done yet, with a checkpoint
        every ``train.checkpoint_interval`` steps (counted over the whole run).

        The step does not wait for the device: loss and accuracy sums stay there,
        and are read every ``train.log_interval`` steps (and for a checkpoint),
        when the processes also agree whether to stop for pre-emption."""
        st, tc, data, info = self.state, self.tc, self.data, self.info
        device = info.device
        steps, epoch = data.steps, st.epoch
        self.model.train()
        for m in self.frozen:
            m.eval()
        self.t0 = time.time()
        # loss*n, correct of this process (float64: the order and rounding of the host sums
        # before), and the number of chunks n, which the host knows
        sums = torch.tensor(st.sums[:2], dtype=torch.float64, device=device)
        n_sum = st.sums[2]
        win = torch.zeros(2, dtype=torch.float64, device=device)
        win_n, win_t = 0, time.time()
        bar = None
        if self.use_bar and st.step < steps:
            from tqdm import tqdm
            bar = tqdm(total=steps, initial=st.step, desc=f"epoch {epoch}", leave=False)
        interval = tc["checkpoint_interval"]
        batches = self._batch_iter() if st.step < steps else None
        for i in range(st.step + 1, steps + 1):
            x, y = next(batches)
            self._next_key = self._key(epoch, i)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            try:
                b = self._step(x, y)
            except torch.cuda.OutOfMemoryError:
                raise self._out_of_memory(epoch, i) from None
            sums += b
            win += b
            n_sum += len(y)
            win_n += len(y)
            st.step = i
            if bar is not None:
                bar.update(1)
            stop = False
            if i % tc["log_interval"] == 0 or i == steps:
                # the cadence point: one collective for the log line and the stop vote
                w = dd.all_reduce_sum(win.tolist() + [win_n, float(bool(self.signalled))], info)
                rate = w[2] / max(1e-9, time.time() - win_t)
                log.info("epoch %d step %d/%d loss %.4f acc %.3f lr %.3g %.1f chunks/s", epoch, i, steps,
                         w[0] / w[2], w[1] / w[2], self.optim.opt.param_groups[-1]["lr"], rate)
                if bar is not None:
                    bar.set_postfix(loss=f"{w[0] / w[2]:.3f}")
                win.zero_()
                win_n, win_t = 0, time.time()
                stop = w[3] > 0
            if stop or (interval > 0 and i < steps and ((epoch - 1) * steps + i) % interval == 0):
                self._save_mid_epoch(sums.tolist() + [n_sum])
            if self.on_step is not None:
                self.on_step(epoch, i)
            if stop:
                if bar is not None:
                    bar.close()
                self.stop_for_preemption(self.out_dir / "checkpoints" / ckpt.checkpoint_name(epoch, i))
        if bar is not None:
            bar.close()
        st.sums = sums.tolist() + [n_sum]

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step; returns ``[loss * n, correct]`` as a float64 device
        tensor, without waiting for the device."""
        opt, scaler = self.optim.opt, self.optim.scaler
        with torch.autocast(x.device.type, dtype=self.amp, enabled=self.amp is not None):
            out, plain = self.model(x, y, with_plain=True)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        if self.tc["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(self.optim.params, self.tc["grad_clip"])
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        self.optim.sched.step()
        with torch.no_grad():
            return torch.stack((loss.detach().double() * len(y), (plain.argmax(1) == y).sum().double()))

    def _out_of_memory(self, epoch: int, step: int) -> "GpuMemoryError":
        tc, info, b, g = self.tc, self.info, self.tc["batch_size"], self.data.global_batch
        newest = ckpt.training_checkpoints(self.out_dir)
        keep = f"{newest[0]} is the newest checkpoint, untouched" if newest else "no checkpoint was written yet"
        half = max(1, b // 2)
        more = (f", or keep the global batch {g} on twice the GPUs with train.batch_size {half}, which resumes"
                if b % 2 == 0 else "")
        return GpuMemoryError(
            f"the GPU ({info.device}) ran out of memory in epoch {epoch} step {step} at train.batch_size {b} "
            f"(chunks per process, of up to data.chunk_max {self.dc['chunk_max']} frames; global batch {g}): "
            f"lower train.batch_size, e.g. to {half} (another global batch trains from the start, the old state "
            f"moved aside){more}; {keep}")

    def agree_to_stop(self) -> bool:
        """Whether any process got SIGTERM/SIGUSR1 (a collective: all call it)."""
        return dd.all_reduce_sum([float(bool(self.signalled))], self.info)[0] > 0

    def stop_for_preemption(self, path: Path | None) -> None:
        """After the checkpoint every process has waited for: say so, and leave
        with :data:`~pyxv.train.distributed.PREEMPTED_EXIT`."""
        st = self.state
        if path is None:
            path = self.out_dir / "checkpoints" / ckpt.checkpoint_name(st.epoch - 1)
            where = f"after epoch {st.epoch - 1}"
        else:
            where = f"in epoch {st.epoch} after step {st.step} of {self.data.steps}"
        got = ", ".join(signal.Signals(s).name for s in dict.fromkeys(self.signalled.got))
        log.warning("stopping for pre-emption (%s) %s; checkpoint %s written; exit %d: run again to resume from it",
                    f"{got} here" if got else "signal to another process", where, path, dd.PREEMPTED_EXIT)
        dd.mark_preempted()
        raise Preempted(str(path))

    def _save_mid_epoch(self, sums: list) -> None:
        st = self.state
        total = dd.all_reduce_sum(sums, self.info)  # the epoch's sums over every process
        cuda_rng = _cuda_rng_states(self.info)
        if self.info.main:
            path = self.out_dir / "checkpoints" / ckpt.checkpoint_name(st.epoch, st.step)
            self._save_state(path, mid_epoch=True, sums=total, cuda_rng=cuda_rng)
            # Older step checkpoints are superseded by this one.
            for p in ckpt.training_checkpoints(self.out_dir):
                if p != path and ckpt.position(p)[1] != float("inf"):
                    p.unlink(missing_ok=True)
            log.info("checkpoint %s", path)
        dd.barrier(self.info)

    def _save_state(self, path: Path, *, mid_epoch: bool, sums=None, cuda_rng=None) -> None:
        st, o = self.state, self.optim
        state = ckpt.model_file(self.net, self.cfg, self.labels, self.extra, epoch=st.epoch, history=st.history)
        state.update(optimizer=o.opt.state_dict(), scheduler=o.sched.state_dict(),
                     scaler=o.scaler.state_dict() if o.scaler is not None else None, best=st.best,
                     step=st.step, mid_epoch=mid_epoch, sums=list(sums or [0.0, 0.0, 0.0]),
                     rng=_rng_state(cuda_rng, self.info),
                     fingerprint=self.fp)
        ckpt.save(state, path)

    # ------------------------------------------------------------- phase 5
    def validate(self, rec: dict) -> None:
        """Validation loss/accuracy and the dev metric of this epoch into ``rec``;
        best model and early stopping (main process)."""
        st, data, tc = self.state, self.data, self.tc
        vl = va = None  # null in history.json when there is no validation set
        if data.valid:
            vl, va = evaluate(self.net, data.valid_source, data.valid, data.valid_targets,
                              self.dc["valid_max_frames"], self.info.device, self.amp)
        rec.update(valid_loss=vl, valid_acc=va, n_valid=len(data.valid))
        metric = None
        if self.dev_metric is not None:
            metric = float(self.dev_metric(self.net, st.epoch))
            rec["dev_metric"] = metric
        elif (self.dev_given or tc["patience"] > 0) and va is not None:
            metric = va
        if metric is not None:
            best = st.best
            if best["metric"] is None or metric > best["metric"]:
                st.best = {"metric": metric, "epoch": st.epoch, "bad": 0}
                ckpt.save(ckpt.model_file(self.net, self.cfg, self.labels, self.extra, epoch=st.epoch,
                                          history=st.history + [rec]), self.out_dir / "best.pt")
            else:
                best["bad"] += 1
            if tc["patience"] > 0 and st.best["bad"] >= tc["patience"]:
                log.info("early stop: no better dev metric for %d epochs (best %.4f at epoch %d)",
                         st.best["bad"], st.best["metric"], st.best["epoch"])
                st.stop = True
        log.info("epoch %d done in %.1fs: train loss %.4f acc %.3f, %s%s", st.epoch, rec["seconds"],
                 rec["train_loss"], rec["train_acc"],
                 f"valid loss {vl:.4f} acc {va:.3f} ({len(data.valid)} utts)" if data.valid else "no validation set",
                 f", dev metric {metric:.4f}" if metric is not None else "")

    def end_epoch(self) -> None:
        """History record, validation and the epoch checkpoint (main process; the others wait)."""
        st, info = self.state, self.info
        s = dd.all_reduce_sum(st.sums, info)
        cuda_rng = _cuda_rng_states(info)
        rec = {"epoch": st.epoch, "train_loss": s[0] / max(1, s[2]), "train_acc": s[1] / max(1, s[2]),
               "lr": self.optim.opt.param_groups[-1]["lr"], "seconds": round(time.time() - self.t0, 2)}
        if info.main:
            self.validate(rec)
            st.history.append(rec)
            self._save_state(self.out_dir / "checkpoints" / ckpt.checkpoint_name(st.epoch), mid_epoch=False,
                             cuda_rng=cuda_rng)
            keep = self.tc["keep_checkpoints"]
            _prune(self.out_dir, st.epoch, keep and max(keep, self.tc["average_last"]))
            with atomic_open(self.out_dir / "log" / "history.json", "w") as f:
                json.dump(st.history, f, indent=1)
            if self.on_epoch_end is not None:
                self.on_epoch_end(st.epoch, rec)
        st.stop = dd.broadcast_object(st.stop, info)
        dd.barrier(info)
        st.epoch, st.step, st.sums = st.epoch + 1, 0, [0.0, 0.0, 0.0]

    # ------------------------------------------------------------- phase 6
    def save_final(self) -> TrainResult:
        """``final.pt``: the best dev epoch's weights when there is a dev metric, else the
        mean of the last ``train.average_last`` epochs' weights, else the last epoch's."""
        st, info, out_dir = self.state, self.info, self.out_dir
        best_epoch = st.best["epoch"]
        averaged = None
        if best_epoch is not None and (out_dir / "best.pt").is_file():
            self.net.load_state_dict(ckpt.load(out_dir / "best.pt")["model"])
            log.info("final model: epoch %d (best dev metric %.4f)", best_epoch, st.best["metric"])
        elif self.tc["average_last"] > 1 and len(st.history) > 1:
            averaged = self._average_last_epochs()
        final = out_dir / "final.pt"
        if info.main:
            ckpt.save(ckpt.model_file(self.net, self.cfg, self.labels, self.extra, epoch=len(st.history),
                                      history=st.history, best_epoch=best_epoch, averaged_epochs=averaged), final)
            log.info("wrote %s", final)
        dd.barrier(info)
        dd.cleanup(info)
        return TrainResult(self.net.eval(), self.labels, st.history, final, best_epoch)

    def _average_last_epochs(self) -> list[int]:
        """Load the mean of the weights saved at the end of the last ``train.average_last``
        epochs (their epoch checkpoints); integer buffers (batch counts) keep the last
        epoch's value. Returns the epochs averaged."""
        last = len(self.state.history)
        epochs = list(range(max(1, last - self.tc["average_last"] + 1), last + 1))
        paths = [self.out_dir / "checkpoints" / ckpt.checkpoint_name(e) for e in epochs]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ckpt.CheckpointError(f"train.average_last {self.tc['average_last']}: the epoch checkpoint(s) "
                                       f"{', '.join(missing)} are gone (pruned by an earlier run with "
                                       f"another keep_checkpoints?); train again with --overwrite")
        total: dict = {}
        for p in paths:
            for k, v in ckpt.load(p)["model"].items():
                if v.is_floating_point():
                    total[k] = total[k] + v.double() if k in total else v.double()
                else:
                    total[k] = v
        ref = self.net.state_dict()
        self.net.load_state_dict({k: (v / len(paths)).to(ref[k].dtype) if v.is_floating_point() else v
                                  for k, v in total.items()})
        log.info("final model: the mean weights of epochs %d-%d (train.average_last %d)", epochs[0], epochs[-1],
                 self.tc["average_last"])
        return epochs


def _prune(out_dir: Path, epoch: int, keep: int) -> None:
    """After epoch ``epoch``'s checkpoint: drop step checkpoints (superseded) and
    epoch checkpoints beyond the newest ``keep`` (0 keeps all)."""
    for p in ckpt.training_checkpoints(out_dir):
        e, step = ckpt.position(p)
        if step != float("inf") or (keep > 0 and e <= epoch - keep):
            p.unlink(missing_ok=True)
