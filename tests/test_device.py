"""Device handling (issue 24): every tensor that meets a model goes to the model's
own device; an explicit device that is not the model's is a ValueError naming
both; a GPU asked for where torch sees none is one line from every entry point;
steps/train_emotion.sh asks its runner for a GPU only with --use-gpu true.

No GPU is needed: a model moved to the ``meta`` device (shapes, no data) stands in
for a model on a GPU. A forward pre-hook on every module records the devices of
the tensors that reach it; copying a meta result back to numpy then fails
(NotImplementedError: no data), after the devices were recorded. The old code
sent inputs to "cpu" whatever the model's device, which these records catch.
"""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from pyxv.device import input_device, model_device, no_gpu_reason
from pyxv.extract import embed_matrices, extract_embeddings, utterance_posteriors
from pyxv.nnet.config import validate_config
from pyxv.nnet.cpu_embedder import CpuEmbedder, for_cpu_extraction
from pyxv.nnet.ge2e import GE2EEncoder
from pyxv.nnet.xvector import XVectorNet
from pyxv.train import checkpoint as ckpt

from xvector_synth import TINY

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def resnet():
    torch.manual_seed(0)
    return XVectorNet.from_config(validate_config(copy.deepcopy(TINY)), 3).eval()


def ge2e():
    torch.manual_seed(0)
    return GE2EEncoder(input_dim=40, hidden=8, layers=1, embed_dim=8, num_classes=3, partial_frames=20).eval()


def on_meta(net):
    """A copy of ``net`` on the meta device, and the set of device types of the
    tensors that reach any of its modules."""
    net = copy.deepcopy(net).to("meta")
    seen: set[str] = set()

    def hook(_module, args):
        seen.update(a.device.type for a in args if torch.is_tensor(a))

    for m in net.modules():
        m.register_forward_pre_hook(hook)
    return net, seen


def mats_for(net, lengths=(70, 130, 250)):
    rng = np.random.default_rng(0)
    return {f"u{i}": rng.normal(size=(n, net.input_dim)).astype(np.float32) for i, n in enumerate(lengths)}


CALLS = {
    "embed_matrices": lambda net, src: embed_matrices(net, list(src.values()), chunk_frames=100),
    "extract_embeddings": lambda net, src: list(extract_embeddings(net, src, list(src), chunk_frames=100)),
    "utterance_posteriors": lambda net, src: utterance_posteriors(net, src, list(src), chunk_frames=100),
    "embed_utterances": lambda net, src: net.embed_utterances(list(src.values()), chunk_frames=100),
}


@pytest.mark.parametrize("make", [resnet, ge2e], ids=["resnet", "ge2e"])
@pytest.mark.parametrize("call", list(CALLS))
def test_inputs_reach_the_model_on_its_own_device(make, call):
    net, seen = on_meta(make())
    src = mats_for(net)
    with pytest.raises(NotImplementedError, match="meta"):   # the copy back of a meta result
        CALLS[call](net, src)
    assert seen == {"meta"}


@pytest.mark.parametrize("make", [resnet, ge2e], ids=["resnet", "ge2e"])
def test_posteriors_output_layer_gets_embeddings_on_the_model_device(make):
    """The stage-5 crash: embeddings of a CUDA model went through its output layer from "cpu"."""
    net, seen = on_meta(make())
    src = mats_for(net)
    # Embeddings as numpy (as a real device gives them back), so the output layer is reached.
    net.embed_utterances = lambda mats, **_: np.zeros((len(mats), net.embed_dim), np.float32)
    with pytest.raises(NotImplementedError, match="meta"):
        utterance_posteriors(net, src, list(src))
    assert seen == {"meta"}


def test_emotion_network_dev_and_test_posteriors_follow_the_trained_network():
    """pyxv.emotion.nnet.utterance_posteriors: the trainer's dev metric and the test
    posteriors, with the network where training left it (a GPU when it trained on one)."""
    from pyxv.emotion.nnet import utterance_posteriors as emotion_posteriors

    net, seen = on_meta(resnet())
    src = mats_for(net)
    with pytest.raises(NotImplementedError, match="meta"):
        emotion_posteriors(net, src, list(src), max_frames=90)   # the dev metric's cut
    assert seen == {"meta"}
    net.embed_utterances = lambda mats, **_: np.zeros((len(mats), net.embed_dim), np.float32)
    seen.clear()
    with pytest.raises(NotImplementedError, match="meta"):
        emotion_posteriors(net, src, list(src))
    assert seen == {"meta"}


def test_explicit_device_that_is_not_the_models_is_a_value_error_naming_both():
    net = resnet()
    src = mats_for(net)
    for call in (lambda: embed_matrices(net, list(src.values()), device="meta"),
                 lambda: next(extract_embeddings(net, src, list(src), device="meta")),
                 lambda: utterance_posteriors(net, src, list(src), device="meta"),
                 lambda: net.embed_utterances(list(src.values()), device="meta"),
                 lambda: ge2e().embed_utterances(list(mats_for(ge2e()).values()), device="meta"),
                 lambda: for_cpu_extraction(net, "meta"),
                 lambda: CpuEmbedder(net).embed_utterances(list(src.values()), device="meta")):
        with pytest.raises(ValueError, match=r"asked to go to meta but the \w+ model is on cpu"):
            call()
    with pytest.raises(ValueError, match="cuda but the XVectorNet model is on cpu"):
        input_device(net, "cuda")   # no GPU needed to refuse one
    meta, _ = on_meta(net)
    with pytest.raises(ValueError, match="cpu but the XVectorNet model is on meta"):
        embed_matrices(meta, list(src.values()), device="cpu")


def test_model_device_and_cpu_results():
    net = resnet()
    assert model_device(net) == torch.device("cpu") and model_device(on_meta(net)[0]).type == "meta"
    compiled = for_cpu_extraction(net)
    assert isinstance(compiled, CpuEmbedder) and model_device(compiled) == torch.device("cpu")
    assert input_device(net, "cpu") == torch.device("cpu")
    # The model's own device, named or not, gives the same numbers on the CPU.
    mats = list(mats_for(net).values())
    np.testing.assert_array_equal(embed_matrices(net, mats, chunk_frames=100),
                                  embed_matrices(net, mats, chunk_frames=100, device="cpu"))
    np.testing.assert_allclose(embed_matrices(compiled, mats, chunk_frames=100),
                               embed_matrices(net, mats, chunk_frames=100), rtol=1e-4, atol=1e-5)


def _xvector_exp(root: Path) -> Path:
    net = resnet()
    cfg = validate_config(copy.deepcopy(TINY))
    exp = root / "xvector"
    ckpt.save(ckpt.model_file(net, cfg, ["s0", "s1", "s2"]), exp / "final.pt")
    shutil.copy(REPO / "conf" / "mfcc_8k.conf", exp / "mfcc.conf")
    shutil.copy(REPO / "conf" / "vad.conf", exp / "vad.conf")
    return exp


def test_inference_api_follows_the_model(tmp_path):
    from pyxv.inference import NnetEmotion, XVectorModel

    xv = XVectorModel(_xvector_exp(tmp_path))
    assert torch.device(xv.device).type == "cpu"
    xv.net, seen = on_meta(xv.net)
    with pytest.raises(NotImplementedError, match="meta"):
        xv.embed_matrices([np.zeros((120, 23), np.float32)])
    assert seen == {"meta"}
    assert torch.device(xv.device).type == "meta"   # says where the network is, not where it was loaded
    # A network emotion system (GeMAPS inputs: no front-end to set up).
    fold = tmp_path / "fold1"
    cfg = validate_config(copy.deepcopy(TINY))
    ckpt.save(ckpt.model_file(resnet(), cfg, ["angry", "happy", "sad"],
                              extra={"features": "gemaps", "classes": ["angry", "happy", "sad"]}), fold / "final.pt")
    emo = NnetEmotion(fold)
    emo._gemaps = lambda spec, name: np.zeros((120, 23), np.float32)
    emo.net, seen = on_meta(emo.net)
    with pytest.raises(NotImplementedError, match="meta"):
        emo.posteriors(["a.wav"])
    assert seen == {"meta"}
    emo.net.embed_utterances = lambda mats, **_: np.zeros((len(mats), 16), np.float32)
    seen.clear()
    with pytest.raises(NotImplementedError, match="meta"):
        emo.posteriors(["a.wav"])
    assert seen == {"meta"}   # the output layer too


def test_no_gpu_reason_says_why(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CPU-only build" in no_gpu_reason()
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "CUDA_VISIBLE_DEVICES='' hides every GPU" in no_gpu_reason()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert "torch sees no CUDA device" in no_gpu_reason()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert no_gpu_reason() is None


@pytest.mark.parametrize("argv,prog", [
    (["pyxv.bin.extract_xvectors", "extract", "--use-gpu", "yes", "{t}/final.pt", "{t}/data", "{t}/out/x.ark"],
     "extract_xvectors"),
    (["pyxv.bin.train_emotion", "--use-gpu", "yes", "--config", "conf/emotion.yaml", "--system",
      "randinit_mfcc", "--fold", "1", "{t}/data", "{t}/out"], "train_emotion"),
    (["pyxv.bin.train_xvector", "--use-gpu", "yes", "--config", "conf/xvector_demo.yaml", "{t}/data", "{t}/out"],
     "train_xvector"),
    (["pyxv.cli", "embed", "--device", "cuda", "{t}/xvector", "{t}/a.wav", "{t}/out/x.ark"], "pyxv embed"),
])
def test_gpu_asked_where_torch_sees_none_is_one_line(argv, prog, tmp_path):
    # In the recipe's own environment, as a job runs; CUDA_VISIBLE_DEVICES="" is what a
    # runner's --gpu 0 gives: no GPU on any machine.
    p = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", *(a.format(t=tmp_path) for a in argv)],
                       cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES=""),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: --") and " but " in lines[0], p.stderr
    assert "GPU" in lines[0] or "CPU-only" in lines[0]
    assert "Traceback" not in p.stdout + p.stderr
    assert not (tmp_path / "out").exists()   # no work started


def _train_emotion_sh(tmp_path, system, *opts):
    """steps/train_emotion.sh with a fake $cmd that records its arguments (and
    fails, so nothing runs after it): the runner options and the python command."""
    emo = tmp_path / "data" / "emo"
    (emo / "fold1").mkdir(parents=True, exist_ok=True)
    (emo / "all").mkdir(exist_ok=True)
    for f in ("utt2emo", "gemaps_lld.scp", "gemaps.scp"):
        (emo / "all" / f).touch()
    fake = tmp_path / "fake_cmd.sh"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$(dirname "$0")/cmd_args"\nexit 1\n')
    fake.chmod(0o755)
    p = subprocess.run(["steps/train_emotion.sh", "--cmd", str(fake), *opts, "--architecture",
                        "conf/xvector_demo.yaml", "--system", system, str(emo), str(tmp_path / "exp")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert (tmp_path / "cmd_args").is_file(), p.stdout + p.stderr
    args = (tmp_path / "cmd_args").read_text().splitlines()
    py = args.index("python")
    return args[:py], args[py:]


@pytest.mark.parametrize("system,opts,gpu,dev", [
    ("randinit_gemaps", [], "0", "no"),                       # default: CPU, GPUs hidden
    ("randinit_gemaps", ["--use-gpu", "false"], "0", "no"),
    ("randinit_gemaps", ["--use-gpu", "true"], "1", "yes"),   # a GPU of its own per job
    ("ref_egemaps_lr", ["--use-gpu", "true"], "0", "no"),     # LR has nothing for a GPU
])
def test_train_emotion_sh_asks_the_runner_for_a_gpu_only_when_told(tmp_path, system, opts, gpu, dev):
    runner, command = _train_emotion_sh(tmp_path, system, *opts)
    assert runner[runner.index("--gpu") + 1] == gpu
    assert command[command.index("--use-gpu") + 1] == dev


@pytest.mark.parametrize("flag,want", [([], False), (["--use-gpu", "no"], False), (["--use-gpu", "yes"], True)])
def test_train_emotion_passes_use_gpu_to_each_fold(monkeypatch, tmp_path, flag, want):
    import pyxv.device
    import pyxv.features.archive
    from pyxv.bin import train_emotion
    from pyxv.emotion import systems

    got = []
    monkeypatch.setattr(pyxv.device, "no_gpu_reason", lambda: None)           # as if a GPU were there
    monkeypatch.setattr(pyxv.features.archive, "exit_cleanly_on_signals", lambda: None)   # pytest's signals
    monkeypatch.setattr(systems, "run_fold", lambda *a, **k: got.append(k.get("use_gpu")))
    threads = torch.get_num_threads()
    try:
        rc = train_emotion.main([*flag, "--config", str(REPO / "conf" / "emotion.yaml"), "--system", "finetune_clean",
                                 "--fold", "2", str(tmp_path / "emo"), str(tmp_path / "out")])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0 and got == [want]
