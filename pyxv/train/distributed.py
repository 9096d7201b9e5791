"""DistributedDataParallel set-up from the environment that ``torchrun`` gives.

``torchrun --nproc_per_node N`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``
and the rendezvous address; NCCL is used on GPUs, gloo on CPU. Without those
variables everything runs in one process.

A training process that stops for pre-emption (SIGTERM or SIGUSR1: the trainer
checkpoints at a step all processes agreed on) exits with :data:`PREEMPTED_EXIT`
(75, EX_TEMPFAIL: "checkpoint written, run again to resume"). torchrun turns any
worker's non-zero status into its own 1, so a launcher around it (``pyxv.launch``)
sets ``PYXV_PREEMPTED_MARK`` to a file name that does not exist; every process
touches it after the checkpoint (:func:`mark_preempted`), and the launcher exits
75 when it is there, even if a process's own status was lost (killed by the
agent in its teardown, say).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from ..parallel.preemption import PREEMPTED as PREEMPTED_EXIT, PREEMPTED_MARK_ENV  # noqa: F401 (the trainer's names)


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup(use_gpu: bool | None = None, timeout: float | None = None) -> DistInfo:
    """Initialise the process group when launched by torchrun; pick the device.
    ``timeout`` (seconds): how long a collective waits for the other processes
    before it fails (a peer that died must not hang the others for ever)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_gpu is None:
        use_gpu = torch.cuda.is_available()
    if use_gpu and not torch.cuda.is_available():
        raise RuntimeError("a GPU was asked for but torch sees none (CPU build of torch, or no CUDA device)")
    device = torch.device(f"cuda:{local}") if use_gpu else torch.device("cpu")
    if use_gpu:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_gpu else "gloo",
                                timeout=datetime.timedelta(seconds=timeout) if timeout else None)
    return DistInfo(rank, world, local, device)


def wrap_ddp(net: torch.nn.Module, info: DistInfo) -> torch.nn.parallel.DistributedDataParallel:
    """``net`` as DistributedDataParallel, on CPU (gloo) with its gradient buckets
    in one order for the whole run, so that a resumed run is bit-identical.

    Gloo's ring all-reduce sums each element in an order set by the element's
    place in the flattened bucket; with 3 or more processes float sums then
    depend on that place. By default DDP reduces the first iteration after every
    start in its initial bucket layout and rebuilds the buckets (in the order the
    gradients became ready) after it, so the first step after a resume rounded
    differently from the same step of an uninterrupted run. With
    ``find_unused_parameters=True`` (and no static graph) torch's reducer never
    rebuilds: every step of every run uses the initial layout. Its price is one
    walk over the autograd graph per step (``bench/ddp.py`` measures it: within
    the noise of a CPU step), and torch says once per process that no unused
    parameters were found. On GPUs (NCCL) DDP keeps its rebuilt buckets, which
    overlap communication with the backward pass best; bit-identical results are
    not promised there (cuDNN picks its kernels per run).
    """
    on_gpu = info.device.type == "cuda"
    return torch.nn.parallel.DistributedDataParallel(
        net, device_ids=[info.device.index] if on_gpu else None, find_unused_parameters=not on_gpu)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    if not info.enabled:
        return values
    # NCCL reduces only GPU tensors; gloo CPU ones.
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.cpu().tolist()


def all_gather_object(obj, info: DistInfo) -> list:
    """``obj`` of every process in rank order, on every process."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def mark_preempted() -> None:
    """Tell the launcher (when one set ``PYXV_PREEMPTED_MARK``) that training
    stopped for pre-emption with its checkpoint written."""
    mark = os.environ.get(PREEMPTED_MARK_ENV)
    if mark:
        Path(mark).touch()
