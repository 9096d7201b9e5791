"""Where a model's inputs go, and whether a GPU that was asked for is there.

Every tensor that meets a model goes to the model's own device: a network trained
on a GPU (the trainer moves it there) is applied on that GPU, one loaded on the CPU
on the CPU, with no device argument to keep in step::

    dev = input_device(net)            # the model's device
    dev = input_device(net, "cuda")    # the same, or a ValueError naming both

    reason = no_gpu_reason()           # None, or why torch cannot use a GPU here
    device = device_for("auto")        # a job's --use-gpu auto|yes|no -> "cuda" or "cpu"
"""
from __future__ import annotations

import itertools
import os

import torch


def model_device(net) -> torch.device:
    """The device of ``net``'s weights (its first parameter or buffer; the CPU
    for a module without any). An object that is not a module says with a
    ``device`` attribute (:class:`pyxv.nnet.cpu_embedder.CpuEmbedder`: the CPU)."""
    if isinstance(net, torch.nn.Module):
        for t in itertools.chain(net.parameters(), net.buffers()):
            return t.device
        return torch.device("cpu")
    return torch.device(getattr(net, "device", "cpu"))


def input_device(net, device: str | torch.device | None = None) -> torch.device:
    """Where the inputs of ``net`` go: its own device. ``device``, when given,
    must name that device ("cuda" without an index fits any GPU the model is
    on); another one is a ValueError naming both, since tensors on two devices
    would fail later in the forward pass with a less helpful message."""
    own = model_device(net)
    if device is None:
        return own
    asked = torch.device(device)
    if asked.type != own.type or (asked.index is not None and own.index is not None and asked.index != own.index):
        raise ValueError(f"inputs were asked to go to {asked} but the {type(net).__name__} model is on {own}: "
                         f"move the model there first (net.to('{asked}')), or leave the device out to use "
                         f"the model's")
    return own


def no_gpu_reason() -> str | None:
    """None when torch can use a GPU here, else why not (for a one-line error
    where a GPU was asked for, instead of a CUDA traceback later)."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None and (not cvd.strip() or cvd.strip().startswith("-")):
        return f"CUDA_VISIBLE_DEVICES='{cvd}' hides every GPU (a job runner's --gpu 0 sets it so)"
    return "torch sees no CUDA device (no GPU here, or its driver is not loaded)"


class NoGpuError(RuntimeError):
    """A GPU was asked for (--use-gpu yes) where torch cannot use one."""


def device_for(use_gpu: str) -> str:
    """The device of a job's ``--use-gpu auto|yes|no``: "cuda" where a GPU is
    there and not refused ("no"), else "cpu"; "yes" without one is a NoGpuError
    saying why (one line before any work). The job runner gives each GPU job its
    own device as CUDA_VISIBLE_DEVICES, so "cuda" is that one."""
    if use_gpu == "no":
        return "cpu"
    reason = no_gpu_reason()
    if reason is None:
        return "cuda"
    if use_gpu == "yes":
        raise NoGpuError(f"--use-gpu yes but {reason}")
    return "cpu"
