"""Generic trainer of the x-vector network on any utterance -> label map.

The same code trains the speaker x-vector (labels from ``utt2spk``) and the
emotion systems (labels from ``utt2emo``: random init on MFCC or GeMAPS LLDs,
or fine-tuning of a pre-trained x-vector)::

    from pyxv.train.data import FeatureSource
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
``checkpoints/epoch_N.pt`` (resume state), ``final.pt`` (model, config,
labels, ``extra``). With ``resume=True`` training restarts after the last
epoch checkpoint and ends with the same weights as an uninterrupted run
(batches depend only on seed and epoch). Under ``torchrun`` it runs as
DistributedDataParallel (gloo on CPU, NCCL on GPU), each process taking its
share of every global batch; on GPU with ``train.amp`` autocast in bf16/fp16.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..io import atomic_open
from ..nnet.config import ConfigError, dump_config, load_config, validate_config
from ..nnet.registry import build_encoder
from ..nnet.xvector import XVectorNet
from . import checkpoint as ckpt
from . import distributed as dd
from .data import ChunkBatches, FeatureSource, chunk, default_steps, filter_training_set, split_validation

log = logging.getLogger("pyxv.train")


class TrainingDataError(ValueError):
    """Training data that cannot be used (e.g. fewer than 2 classes)."""


@dataclass
class TrainResult:
    model: XVectorNet
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


def _amp_dtype(cfg: dict, device: torch.device):
    if device.type != "cuda" or cfg["train"]["amp"] == "none":
        return None
    return torch.bfloat16 if cfg["train"]["amp"] == "bf16" else torch.float16


@torch.no_grad()
def evaluate(net: XVectorNet, source: FeatureSource, utts: Sequence[str], targets: Sequence[int],
             max_frames: int, device: torch.device, amp=None) -> tuple[float, float]:
    """Loss and accuracy on the first ``max_frames`` frames of each utterance."""
    was = net.training
    net.eval()
    tot_loss, correct = 0.0, 0
    for u, y in zip(utts, targets):
        x = torch.from_numpy(np.array(source[u][:max_frames])).unsqueeze(0).to(device)
        t = torch.tensor([y], device=device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out, plain = net(x, t, with_plain=True)
        tot_loss += F.cross_entropy(out.float(), t).item()
        correct += int(plain.argmax(1).item() == y)
    net.train(was)
    n = max(1, len(utts))
    return tot_loss / n, correct / n


def _as_source(features) -> FeatureSource:
    if isinstance(features, FeatureSource):
        return features
    return FeatureSource(features)


def _load_init(net: XVectorNet, path, cfg: dict) -> None:
    ck = ckpt.load(path)
    ckpt.check_arch(ck, cfg, path)
    ckpt.load_weights(net, ck["model"], path, skip_head=True)
    log.info("initialised all layers but the output layer from %s", path)


def train_classifier(features, utt2label: Mapping[str, str], config, out_dir: str | os.PathLike, *,
                     labels: Sequence[str] | None = None, init_from: str | os.PathLike | None = None,
                     dev=None, dev_metric: Callable[[XVectorNet, int], float] | None = None,
                     valid_utts: Sequence[str] | None = None, utt2orig: Mapping[str, str] | None = None,
                     resume: bool = False,
                     extra: Mapping[str, Any] | None = None, log_file: str | os.PathLike | None = None,
                     use_gpu: bool | None = None, progress: bool | None = None,
                     on_epoch_end: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train ``XVectorNet`` to predict ``utt2label`` from ``features``.

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
    resume: continue after the last ``checkpoints/epoch_N.pt`` in ``out_dir``.
    extra: stored in ``final.pt`` (e.g. MFCC/VAD config texts).
    on_epoch_end: ``f(epoch, record)`` called on the main process after each epoch's checkpoint.
    Returns a :class:`TrainResult`; on DDP ranks > 0 the model is returned too.
    """
    info = dd.setup(use_gpu)
    out_dir = Path(out_dir)
    setup_logging(log_file, info.main)
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else validate_config(config)
    tc, dc = cfg["train"], cfg["data"]
    device = info.device
    amp = _amp_dtype(cfg, device)
    source = _as_source(features)
    if dc["cache_utts"] != 64:
        source._cache_size = dc["cache_utts"]

    # ------------------------------------------------------------ data
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
    if labels is None:
        labels = classes
    labels = list(labels)
    unknown = set(classes) - set(labels)
    if unknown:
        raise TrainingDataError(f"labels {sorted(unknown)[:5]} are not in the given label list")
    lab_index = {l: i for i, l in enumerate(labels)}

    if dev is not None and not callable(dev):
        dev_source, dev_map = dev
        dev_source = _as_source(dev_source)
        dev_utts = sorted(u for u in dev_map if u in dev_source and dev_map[u] in lab_index)
        valid_source, valid = dev_source, dev_utts
        valid_targets = [lab_index[dev_map[u]] for u in valid]
    else:
        if callable(dev) and dev_metric is None:
            dev_metric = dev
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
    steps = tc["steps_per_epoch"] or default_steps((lengths[u] for u in tr_utts), tc["batch_size"],
                                                   dc["chunk_min"], dc["chunk_max"])
    if tc["batch_size"] % info.world:
        raise ConfigError(f"train.batch_size {tc['batch_size']} is not divisible by the {info.world} processes")
    log.info("%d training and %d validation utterances, %d classes, %d steps/epoch of %d chunks of %d-%d frames",
             len(tr_utts), len(valid), len(labels), steps, tc["batch_size"], dc["chunk_min"], dc["chunk_max"])

    # ----------------------------------------------------------- model
    dim = source.dim
    if cfg["model"]["input_dim"] != dim:
        if init_from is not None:
            raise ConfigError(f"features have {dim} dims but the model to fine-tune takes {cfg['model']['input_dim']}")
        log.info("model.input_dim set to %d from the features", dim)
        cfg["model"]["input_dim"] = dim
    torch.manual_seed(tc["seed"])
    net = build_encoder(cfg, len(labels))  # any registered encoder type (model.type)
    if init_from is not None:
        _load_init(net, init_from, cfg)
    frozen: list[torch.nn.Module] = []
    if tc["freeze"] == "embedding":
        frozen = net.embedding_layers()
        for m in frozen:
            for p in m.parameters():
                p.requires_grad_(False)
    if info.main:
        log.info("model: %d parameters (%d trainable)", net.num_parameters(),
                 sum(p.numel() for p in net.parameters() if p.requires_grad))
    net.to(device)
    mult = tc["pretrained_lr_mult"] if init_from is not None else 1.0
    body = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith("head.")]
    head = [p for n, p in net.named_parameters() if p.requires_grad and n.startswith("head.")]
    groups = [{"params": body, "lr": tc["lr"] * mult}, {"params": head, "lr": tc["lr"]}]
    if tc["optimizer"] == "adam":
        opt = torch.optim.Adam(groups, lr=tc["lr"], weight_decay=tc["weight_decay"])
    elif tc["optimizer"] == "adamw":
        opt = torch.optim.AdamW(groups, lr=tc["lr"], weight_decay=tc["weight_decay"])
    else:
        opt = torch.optim.SGD(groups, lr=tc["lr"], momentum=tc["momentum"], weight_decay=tc["weight_decay"])
    total = steps * tc["epochs"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(tc["warmup_steps"], total, tc["lr_schedule"], tc["final_lr_ratio"]))
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None

    history: list[dict] = []
    stop = False
    start_epoch = 1
    best = {"metric": None, "epoch": None, "bad": 0}
    if resume:
        last = ckpt.last_epoch_checkpoint(out_dir)
        if last is not None:
            ck = ckpt.load(last)
            ckpt.check_arch(ck, cfg, last)
            if list(ck["labels"]) != labels:
                raise ckpt.CheckpointError(f"{last}: its class list differs from the training data's")
            net.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            history, start_epoch, best = ck["history"], ck["epoch"] + 1, ck["best"]
            stop = tc["patience"] > 0 and best["bad"] >= tc["patience"]
            log.info("resuming from %s (epoch %d done)", last, ck["epoch"])
        else:
            log.info("--resume: no checkpoint in %s, starting from scratch", out_dir / "checkpoints")
    model = net
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    if info.main:
        dump_config(cfg, out_dir / "config.yaml")
    use_bar = info.main and (sys.stderr.isatty() if progress is None else progress)

    # ------------------------------------------------------------ loop
    for epoch in range(start_epoch, tc["epochs"] + 1):
        if stop:
            break
        ds = ChunkBatches(source, tr_utts, tr_labels, lengths, batch_size=tc["batch_size"], steps=steps,
                          chunk_min=dc["chunk_min"], chunk_max=dc["chunk_max"], sampling=dc["sampling"],
                          seed=tc["seed"], epoch=epoch, rank=info.rank, world=info.world)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=tc["num_workers"])
        model.train()
        for m in frozen:
            m.eval()
        t0 = time.time()
        sums = np.zeros(3)  # loss*n, correct, n (this process)
        win = np.zeros(3)
        win_t = time.time()
        bar = None
        if use_bar:
            from tqdm import tqdm
            bar = tqdm(total=steps, desc=f"epoch {epoch}", leave=False)
        for i, (x, y) in enumerate(loader, 1):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out, plain = model(x, y, with_plain=True)
            loss = F.cross_entropy(out.float(), y)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if tc["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], tc["grad_clip"])
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            n = len(y)
            b = np.array([loss.item() * n, (plain.argmax(1) == y).sum().item(), n])
            sums += b
            win += b
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if i % tc["log_interval"] == 0 or i == steps:
                w = dd.all_reduce_sum(win.tolist(), info)
                rate = w[2] / max(1e-9, time.time() - win_t)
                log.info("epoch %d step %d/%d loss %.4f acc %.3f lr %.3g %.1f chunks/s", epoch, i, steps,
                         w[0] / w[2], w[1] / w[2], opt.param_groups[-1]["lr"], rate)
                win[:] = 0
                win_t = time.time()
        if bar is not None:
            bar.close()
        s = dd.all_reduce_sum(sums.tolist(), info)
        rec = {"epoch": epoch, "train_loss": s[0] / max(1, s[2]), "train_acc": s[1] / max(1, s[2]),
               "lr": opt.param_groups[-1]["lr"], "seconds": round(time.time() - t0, 2)}
        # Validation and checkpoints on the main process; the others wait.
        if info.main:
            vl = va = None  # null in history.json when there is no validation set
            if valid:
                vl, va = evaluate(net, valid_source, valid, valid_targets, dc["valid_max_frames"], device, amp)
            rec.update(valid_loss=vl, valid_acc=va, n_valid=len(valid))
            metric = None
            if dev_metric is not None:
                metric = float(dev_metric(net, epoch))
                rec["dev_metric"] = metric
            elif (dev is not None or tc["patience"] > 0) and va is not None:
                metric = va
            if metric is not None:
                if best["metric"] is None or metric > best["metric"]:
                    best = {"metric": metric, "epoch": epoch, "bad": 0}
                    ckpt.save(ckpt.model_file(net, cfg, labels, extra, epoch=epoch, history=history + [rec]),
                              out_dir / "best.pt")
                else:
                    best["bad"] += 1
                if tc["patience"] > 0 and best["bad"] >= tc["patience"]:
                    log.info("early stop: no better dev metric for %d epochs (best %.4f at epoch %d)",
                             best["bad"], best["metric"], best["epoch"])
                    stop = True
            history.append(rec)
            log.info("epoch %d done in %.1fs: train loss %.4f acc %.3f, %s%s", epoch, rec["seconds"],
                     rec["train_loss"], rec["train_acc"],
                     f"valid loss {vl:.4f} acc {va:.3f} ({len(valid)} utts)" if valid else "no validation set",
                     f", dev metric {metric:.4f}" if metric is not None else "")
            state = ckpt.model_file(net, cfg, labels, extra, epoch=epoch, history=history)
            state.update(optimizer=opt.state_dict(), scheduler=sched.state_dict(), best=best)
            ckpt.save(state, out_dir / "checkpoints" / f"epoch_{epoch}.pt")
            _prune(out_dir, epoch, tc["keep_checkpoints"])
            with atomic_open(out_dir / "log" / "history.json", "w") as f:
                json.dump(history, f, indent=1)
            if on_epoch_end is not None:
                on_epoch_end(epoch, rec)
        stop = dd.broadcast_object(stop, info)
        dd.barrier(info)

    # ------------------------------------------------------------ final
    best_epoch = best["epoch"]
    if best_epoch is not None and (out_dir / "best.pt").is_file():
        net.load_state_dict(ckpt.load(out_dir / "best.pt")["model"])
        log.info("final model: epoch %d (best dev metric %.4f)", best_epoch, best["metric"])
    final = out_dir / "final.pt"
    if info.main:
        ckpt.save(ckpt.model_file(net, cfg, labels, extra, epoch=len(history), history=history,
                                  best_epoch=best_epoch), final)
        log.info("wrote %s", final)
    dd.barrier(info)
    dd.cleanup(info)
    return TrainResult(net.eval(), labels, history, final, best_epoch)


def _prune(out_dir: Path, epoch: int, keep: int) -> None:
    if keep <= 0:
        return
    for p in (out_dir / "checkpoints").glob("epoch_*.pt"):
        try:
            n = int(p.stem.split("_")[1])
        except ValueError:
            continue
        if n <= epoch - keep:
            p.unlink(missing_ok=True)
