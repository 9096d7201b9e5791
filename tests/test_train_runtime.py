"""The trainer at run time, on CPU, guarding the plumbing of its GPU paths:
precision choice (bf16/fp16 + GradScaler), no host-device sync between log
points, the run-long loader, pre-emption (SIGTERM/SIGUSR1 -> checkpoint, exit
75, exact resume) and a GPU out of memory. DDP pre-emption: tests/test_ddp.py."""
from __future__ import annotations

import copy
import os
import signal
import subprocess
import traceback
import warnings

import pytest
import torch
import torch.utils._python_dispatch

from pyxv.config import ConfigError
from pyxv.nnet.config import build_encoder, validate_config
from pyxv.train import checkpoint as ckpt
from pyxv.train import distributed as dd
from pyxv.train import trainer
from pyxv.train.data import ChunkBatches, RunBatches, RunKeys
from pyxv.train.trainer import GpuMemoryError, train_classifier

from xvector_synth import TINY, make_datadir
from xvector_synth import feature_source as source

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("xvrt") / "data"
    u2s = make_datadir(d, n_spk=4, n_utt=8)
    return d, u2s


def cfg(model=None, **train):
    c = copy.deepcopy(TINY)
    c["model"].update(model or {})
    c["train"].update(train)
    return c


# 8 steps/epoch, log points at steps 3, 6 and 8 of each epoch
LOG3 = dict(log_interval=3)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    d, u2s = data
    return train_classifier(source(d), u2s, cfg(**LOG3), tmp_path_factory.mktemp("full") / "a", progress=False)


def same_weights(a, b):
    a, b = a.state_dict(), b.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------ precision
def test_precision_bf16_where_native_else_fp16_with_a_grad_scaler(monkeypatch, data):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation
                        and native[0])
    native = [True]                                    # Ampere and later
    assert trainer.precision("auto", cuda) == (torch.bfloat16, False)
    assert trainer.precision("bf16", cuda) == (torch.bfloat16, False)
    assert trainer.precision("fp16", cuda) == (torch.float16, True)
    assert trainer.precision("none", cuda) == (None, False)
    native[0] = False                                  # e.g. a V100: bf16 only emulated
    assert trainer.precision("auto", cuda) == (torch.float16, True)
    assert trainer.precision("bf16", cuda) == (torch.float16, True)
    for amp in ("auto", "bf16", "fp16", "none"):       # autocast is for GPUs only
        assert trainer.precision(amp, torch.device("cpu")) == (None, False)
    # and the optimiser set-up builds the GradScaler exactly then (on a faked GPU)
    c = validate_config(cfg(amp="auto"))
    net = build_encoder(c, 2)                          # the optimiser takes its body and head parameters
    with warnings.catch_warnings():                    # GradScaler: "CUDA is not available" without a GPU
        warnings.simplefilter("ignore")
        o = trainer._build_optimizer(net, c, 10, None, cuda)
    assert isinstance(o.scaler, torch.amp.GradScaler)
    assert o.opt.defaults["fused"]                     # the GradScaler's inf check stays on the device
    native[0] = True
    o = trainer._build_optimizer(net, c, 10, None, cuda)
    assert o.scaler is None and o.opt.defaults["fused"]
    o = trainer._build_optimizer(net, c, 10, None, torch.device("cpu"))
    assert o.scaler is None and not o.opt.defaults.get("fused")


def _speed_settings():
    return (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)


def test_tf32_and_cudnn_autotuning_only_while_training_on_a_gpu_and_not_in_validation(data, uninterrupted):
    before = _speed_settings()
    with trainer._CudaSpeed(torch.device("cpu")):
        assert _speed_settings() == before
    with trainer._CudaSpeed(torch.device("cuda", 0)):
        assert _speed_settings() == ("high", True, True)
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"   # torch answers through either API
        d, u2s = data
        net = uninterrupted.model
        seen = []
        hook = net.register_forward_pre_hook(lambda m, i: seen.append(torch.backends.cudnn.benchmark))
        try:
            trainer.evaluate(net, source(d), ["spk0-utt00", "spk1-utt01"], [0, 1], 100, torch.device("cpu"))
        finally:
            hook.remove()
        assert seen == [False, False] and torch.backends.cudnn.benchmark   # one shape per utterance: untuned
    assert _speed_settings() == before


def test_amp_and_loader_keys_validated():
    assert validate_config({"train": {"amp": "auto"}})["train"]["amp"] == "auto"
    assert validate_config({})["train"]["prefetch_factor"] == 4
    for v in ("bf16", "fp16", "none"):                 # the values of earlier configs stay valid
        validate_config({"train": {"amp": v}})
    with pytest.raises(ConfigError, match="train.amp: 'bf17' is not one of auto, bf16, fp16, none"):
        validate_config({"train": {"amp": "bf17"}})
    with pytest.raises(ConfigError, match="train.prefetch_factor: must be at least 1, got 0"):
        validate_config({"train": {"prefetch_factor": 0}})
    with pytest.raises(ConfigError, match="train.num_workers: must be at least 0"):
        validate_config({"train": {"num_workers": -1}})
    with pytest.raises(ConfigError, match="train.log_interval: must be at least 1"):
        validate_config({"train": {"log_interval": 0}})


def test_an_older_checkpoint_resumes_though_amp_left_the_fingerprint(data, tmp_path, caplog):
    """Checkpoints of earlier trainers carry train.amp (then bf16 by default) in their
    fingerprint; it is now how the run computes, not what: they resume, and so
    does a run whose amp changed."""
    d, u2s = data

    def stop(epoch, rec):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_classifier(source(d), u2s, cfg(amp="none"), tmp_path / "w", progress=False, on_epoch_end=stop)
    path = tmp_path / "w" / "checkpoints" / "epoch_1.pt"
    ck = ckpt.load(path)
    assert "amp" not in ck["fingerprint"]["config"]["train"]
    ck["fingerprint"]["config"]["train"]["amp"] = "bf16"   # as the trainer before wrote it
    ckpt.save(ck, path)
    with _log(caplog):
        train_classifier(source(d), u2s, cfg(amp="fp16"), tmp_path / "w", progress=False)
    assert f"resuming from {path}" in caplog.text and "starting over" not in caplog.text


class _log:
    def __init__(self, caplog):
        self.caplog = caplog

    def __enter__(self):
        self.caplog.set_level("INFO", logger="pyxv.train")
        trainer.log.propagate = True

    def __exit__(self, *exc):
        trainer.log.propagate = False


# ------------------------------------------------------------ host syncs
class _HostReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Every read of a tensor value by the host (``.item()``, ``float(t)``, ``bool(t)``,
    from Python or C++: ``aten._local_scalar_dense``), with the Python stack. On a
    GPU each is a sync that stalls the step."""

    def __init__(self):
        super().__init__()
        self.at = None
        self.reads = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads.append((self.at, traceback.extract_stack()))
        return func(*args, **(kwargs or {}))


# Host-only tensors read by torch itself on every device: the optimizers' step
# counters (CPU tensors unless fused/capturable; on a GPU the trainer's optimizer
# is fused and keeps them there) and the DataLoader's seed draw.
_HOST_ONLY = ("torch/optim/", "torch/utils/data/")


@pytest.mark.parametrize("loss", ["amsoftmax", "softmax", "asoftmax"])
def test_no_host_read_of_device_values_between_log_points(data, tmp_path, monkeypatch, loss):
    """Between log points (every train.log_interval steps) the loop reads no tensor
    value on the host (no .item(), float(), .tolist(), .cpu(), .numpy()): on a GPU
    each would wait for the queued kernels. At the log points it does (the log
    line and the stop vote), as the end of an epoch (validation, checkpoint)."""
    d, u2s = data
    model = {"loss": loss, "margin": 2.0} if loss == "asoftmax" else {"loss": loss}
    mode = _HostReads()
    for name in ("tolist", "cpu", "numpy"):            # invisible to the dispatcher on CPU tensors
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, _orig=orig, **k):
            mode.reads.append((mode.at, traceback.extract_stack()))
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, wrapped)
    end = trainer._Run.end_epoch

    def end_epoch(self):
        mode.at = "end of epoch"
        end(self)
        mode.at = (self.state.epoch, 0)                 # before step 1 of the next epoch

    monkeypatch.setattr(trainer._Run, "end_epoch", end_epoch)

    def on_step(epoch, step):
        mode.at = (epoch, step)                          # what follows belongs to the next step

    with mode:
        train_classifier(source(d), u2s, cfg(model=model, epochs=2, **LOG3), tmp_path / "x", progress=False,
                         on_step=on_step)
    steps, epochs = 8, 2
    # (epoch, step) of each read in the loop; after step 8 comes the end of the epoch, after epoch 2 final.pt
    in_loop = [((at[0], at[1] + 1), stack) for at, stack in mode.reads
               if isinstance(at, tuple) and at[1] < steps and at[0] <= epochs
               and not any(h in f.filename for f in stack for h in _HOST_ONLY)]
    cadence = {(e, s) for e in (1, 2) for s in (3, 6, 8)}
    off = [(at, stack[-2].filename.split("/")[-1], stack[-2].lineno, stack[-2].line)
           for at, stack in in_loop if at not in cadence]
    assert not off, f"host reads at ((epoch, step), file, line): {off[:5]}"
    assert {at for at, _ in in_loop} == cadence   # the log points do read (the counter works)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the CPU test above guards the plumbing)")
@pytest.mark.parametrize("amp", ["auto", "fp16"])
def test_on_a_gpu_the_steps_between_log_points_never_sync(data, tmp_path, amp):
    """CUDA's own sync check raises in every step but those with a log point (bf16
    or fp16 with its GradScaler; pinned batches from a loader worker)."""
    d, u2s = data
    cadence = {3, 6, 8}

    def on_step(epoch, step):
        nxt = step + 1
        torch.cuda.set_sync_debug_mode("error" if nxt <= 8 and nxt not in cadence else "default")

    try:
        res = train_classifier(source(d), u2s, cfg(amp=amp, num_workers=1, **LOG3), tmp_path / "g", progress=False,
                               use_gpu=True, on_step=on_step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


# ---------------------------------------------------------------- the loader
def test_run_batches_are_the_epoch_plans_keyed_by_epoch_and_step(data):
    d, u2s = data
    src = source(d)
    utts = sorted(u2s)
    labels = [int(u2s[u][3:]) for u in utts]
    plan = dict(batch_size=8, steps=5, chunk_min=40, chunk_max=60, sampling="balanced", seed=3, rank=1, world=2)
    rb = RunBatches(src, utts, labels, src.lengths, **plan)
    keys = list(RunKeys((2, 3), epochs=4, steps=5))
    assert keys[:3] == [(2, 3), (2, 4), (3, 0)] and keys[-1] == (4, 4) and len(keys) == len(RunKeys((2, 3), 4, 5))
    for e, s in keys:
        x, y = rb[(e, s)]
        rx, ry = ChunkBatches(src, utts, labels, src.lengths, epoch=e, **plan)[s]
        assert torch.equal(x, rx) and torch.equal(y, ry)


def test_one_loader_with_persistent_workers_serves_the_whole_run(data, tmp_path, monkeypatch, uninterrupted):
    """Three epochs through one DataLoader (built once, its worker alive
    throughout, reading train.prefetch_factor batches ahead): the same weights as
    in-process reading."""
    d, u2s = data
    made = []
    real = trainer.training_loader

    def counting(*a, **k):
        made.append(real(*a, **k))
        return made[-1]

    monkeypatch.setattr(trainer, "training_loader", counting)
    res = train_classifier(source(d), u2s, cfg(num_workers=1, prefetch_factor=3, **LOG3), tmp_path / "w",
                           progress=False)
    assert len(made) == 1
    dl = made[0]
    assert dl.num_workers == 1 and dl.persistent_workers and dl.prefetch_factor == 3 and not dl.pin_memory
    same_weights(res.model, uninterrupted.model)


# -------------------------------------------------------------- pre-emption
def children(pid: int) -> list[int]:
    ps = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in ps.split()]


def _signal_self_and_workers(sig):
    """What a batch system does: the signal to the training process and to each of
    its processes (the loader workers)."""
    for pid in [os.getpid()] + children(os.getpid()):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:  # ps itself
            pass


@pytest.mark.parametrize("sig,when,workers,stop_at", [
    (signal.SIGUSR1, ("step", 2, 1), 0, "epoch_2_step_3.pt"),    # the next log point: step 3
    (signal.SIGTERM, ("step", 1, 4), 1, "epoch_1_step_6.pt"),    # to the loader worker too: it lives on
    (signal.SIGUSR1, ("epoch", 1), 0, "epoch_1.pt"),             # during validation: after the epoch checkpoint
])
def test_a_stop_signal_checkpoints_at_the_next_log_point_exits_75_and_resumes_exactly(
        data, tmp_path, uninterrupted, monkeypatch, sig, when, workers, stop_at):
    d, u2s = data
    c = cfg(num_workers=workers, **LOG3)
    mark = tmp_path / "preempted"                                 # what a launcher around torchrun looks for
    monkeypatch.setenv(dd.PREEMPTED_MARK_ENV, str(mark))
    before = signal.getsignal(sig)

    def on_step(epoch, step):
        if when == ("step", epoch, step):
            _signal_self_and_workers(sig)

    def on_epoch_end(epoch, rec):
        if when == ("epoch", epoch):
            _signal_self_and_workers(sig)

    with pytest.raises(SystemExit) as e:
        train_classifier(source(d), u2s, c, tmp_path / "b", progress=False, on_step=on_step,
                         on_epoch_end=on_epoch_end)
    assert e.value.code == dd.PREEMPTED_EXIT == 75
    assert isinstance(e.value, trainer.Preempted)
    newest = ckpt.training_checkpoints(tmp_path / "b")[0]
    assert newest.name == stop_at and e.value.checkpoint == str(newest)
    assert not (tmp_path / "b" / "final.pt").exists() and mark.is_file()
    assert signal.getsignal(sig) == before                        # the handlers the caller had are back
    mark.unlink()
    resumed = train_classifier(source(d), u2s, c, tmp_path / "b", progress=False)
    same_weights(resumed.model, uninterrupted.model)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in uninterrupted.history]


def test_stop_signals_only_noted_while_training():
    before = signal.getsignal(signal.SIGUSR1)
    with trainer._StopSignals() as got:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert bool(got) and got.got == [signal.SIGUSR1, signal.SIGTERM]   # still here: only noted
    assert signal.getsignal(signal.SIGUSR1) == before


# --------------------------------------------------------- GPU out of memory
def test_gpu_out_of_memory_names_the_batch_size_and_keeps_the_checkpoint(data, tmp_path, monkeypatch,
                                                                         uninterrupted):
    d, u2s = data
    c = cfg(checkpoint_interval=3, **LOG3)
    real = trainer._Run._step
    calls = []

    def step(self, x, y):
        calls.append(1)
        if len(calls) == 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, x, y)

    monkeypatch.setattr(trainer._Run, "_step", step)
    with pytest.raises(GpuMemoryError) as e:
        train_classifier(source(d), u2s, c, tmp_path / "o", progress=False)
    msg = str(e.value)
    path = tmp_path / "o" / "checkpoints" / "epoch_1_step_3.pt"
    print(msg)
    assert isinstance(e.value, ConfigError) and "\n" not in msg       # the CLI prints it as one line
    assert "ran out of memory in epoch 1 step 5 at train.batch_size 8 (chunks per process" in msg
    assert "lower train.batch_size, e.g. to 4" in msg and f"{path} is the newest checkpoint, untouched" in msg
    assert [p.name for p in ckpt.training_checkpoints(tmp_path / "o")] == ["epoch_1_step_3.pt"]
    assert not list((tmp_path / "o" / "checkpoints").glob(".*"))
    ck = ckpt.load(path)
    assert ck["step"] == 3 and ck["mid_epoch"]
    monkeypatch.undo()
    resumed = train_classifier(source(d), u2s, c, tmp_path / "o", progress=False)
    same_weights(resumed.model, uninterrupted.model)     # checkpoint_interval does not change the weights
