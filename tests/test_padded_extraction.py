"""GPU extraction's batching, run on the CPU: chunks of different lengths in
padded, masked batches give the x-vectors each chunk gets alone; batches follow
the frames budget; results come back in input order; the GPU's full-float32
switch; an out-of-memory error names the batch size, and leaves nothing written."""
from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch

from pyxv.extract import ExtractionMemoryError, embed_matrices, extract_embeddings, write_embeddings
from pyxv.nnet import utterance
from pyxv.nnet.config import validate_config
from pyxv.nnet.cpu_embedder import CpuEmbedder
from pyxv.nnet.ge2e import GE2EEncoder
from pyxv.nnet.xvector import XVectorNet
from pyxv.train import checkpoint as ckpt

from xvector_synth import TINY, make_datadir

torch.set_num_threads(1)
CHUNK = 300
# very short, not a multiple of the trunk's 8-frame downsampling, one chunk, two and three chunks
LENGTHS = (1, 5, 8, 9, 37, 100, 163, 299, 301, 777, 1500)


def four_level_net():
    """TINY with four time resolutions (masks at 1, 1/2, 1/4, 1/8) and non-trivial batch norms."""
    cfg = copy.deepcopy(TINY)
    cfg["model"].update(channels=[4, 4, 8, 8], blocks=[1, 1, 1, 1])
    torch.manual_seed(0)
    net = XVectorNet.from_config(validate_config(cfg), 3)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    return net.eval()


def mats_of(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 23)).astype(np.float32) * 3 for n in lengths]


def one_at_a_time(net, m, chunk_frames=CHUNK):
    """Reference: each chunk alone through net.embed, averaged."""
    with torch.no_grad():
        return np.mean([net.embed(torch.from_numpy(m[a:b])[None])[0].numpy()
                        for a, b in utterance.chunk_bounds(len(m), chunk_frames)], 0)


def trunk_calls(net):
    """Input shapes and masks of every call of ``net.trunk``."""
    calls = []
    net.trunk.register_forward_pre_hook(lambda m, args: calls.append((tuple(args[0].shape), args[1])))
    return calls


def max_rel(a, b):
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


def test_padded_batches_equal_one_at_a_time_in_input_order():
    net = four_level_net()
    mats = mats_of(LENGTHS)
    calls = trunk_calls(net)
    got = net.embed_utterances(mats, chunk_frames=CHUNK, batch_frames=10 ** 6, batching="padded")
    # every chunk of every utterance in one forward call, padded to the longest (300 -> 304 frames)
    n_chunks = sum(len(utterance.chunk_bounds(n, CHUNK)) for n in LENGTHS)
    assert [c[0] for c in calls] == [(n_chunks, 304, 23)]
    want = np.stack([one_at_a_time(net, m) for m in mats])
    assert max_rel(got, want) < 1e-4
    # another input order gives the same x-vectors in that order
    perm = np.random.default_rng(1).permutation(len(mats))
    again = net.embed_utterances([mats[i] for i in perm], chunk_frames=CHUNK, batch_frames=10 ** 6,
                                 batching="padded")
    np.testing.assert_allclose(again, got[perm], rtol=1e-5, atol=1e-6)


def test_batches_keep_to_the_frames_budget_and_mix_lengths():
    net = four_level_net()
    mats = mats_of(LENGTHS + (50, 60, 70, 80))
    calls = trunk_calls(net)
    got = net.embed_utterances(mats, chunk_frames=CHUNK, batch_frames=400, batching="padded")
    calls = list(calls)
    assert max_rel(got, np.stack([one_at_a_time(net, m) for m in mats])) < 1e-4
    shapes = [c[0] for c in calls]
    n_chunks = sum(len(utterance.chunk_bounds(len(m), CHUNK)) for m in mats)
    assert sum(b for b, _, _ in shapes) == n_chunks and len(shapes) < n_chunks
    assert all(b * t <= 400 or b == 1 for b, t, _ in shapes)
    widths = [t for _, t, _ in shapes]
    assert widths == sorted(widths, reverse=True)                # longest chunks first
    # a batch holding rows of different lengths: their last-resolution masks differ
    mixed = [m[-1].reshape(len(m[-1]), -1).sum(1) for _, m in calls if len(m[-1]) > 1]
    assert any(len(set(v.tolist())) > 1 for v in mixed)


def test_auto_batching_pads_off_the_cpu_only_and_bad_modes_are_refused():
    net = four_level_net()
    mats = mats_of((40, 90, 90))
    calls = trunk_calls(net)
    embed_matrices(net, mats, chunk_frames=CHUNK)                # CPU: equal-length batches, no masks
    assert [(c[0][0], c[1]) for c in calls] == [(1, None), (2, None)]
    meta = copy.deepcopy(net).to("meta")
    calls = trunk_calls(meta)
    with pytest.raises(NotImplementedError, match="meta"):       # the one copy back of a meta result
        embed_matrices(meta, mats, chunk_frames=CHUNK)
    assert len(calls) == 1 and calls[0][0] == (3, 96, 23) and len(calls[0][1]) == 4
    with pytest.raises(ValueError, match="batching 'pad' is not one of auto, padded, equal"):
        net.embed_utterances(mats, batching="pad")
    with pytest.raises(ValueError, match="utterance 1 of 2 has no frames"):
        net.embed_utterances([mats[0], mats[0][:0]], batching="padded")


def test_pooling_ignores_padded_frames():
    net = four_level_net()
    frames = torch.randn(2, 7, net.trunk.out_channels)
    frames[1, 4:] = 0.0                                          # the trunk's masks leave padding at zero
    valid = torch.tensor([[1.0] * 7, [1.0] * 4 + [0.0] * 3])
    both = net.pool(frames, valid)
    torch.testing.assert_close(both[1], net.pool(frames[1:, :4])[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(both[0], net.pool(frames[:1])[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(net.pool(frames)[1], both[1])     # unmasked, the zeros would take weight


def test_ge2e_windows_of_different_utterances_share_batches():
    torch.manual_seed(0)
    net = GE2EEncoder(input_dim=40, hidden=8, layers=1, embed_dim=8, partial_frames=20).eval()
    rng = np.random.default_rng(0)
    mats = [np.abs(rng.normal(size=(n, 40))).astype(np.float32) for n in (16, 45, 130)]
    calls = []
    net.lstm.register_forward_pre_hook(lambda m, args: calls.append(tuple(args[0].shape)))
    got = net.embed_utterances(mats, batch_frames=10 ** 6)
    windows = sum(len(net.partial_windows(len(m))) for m in mats)
    assert calls == [(windows, 20, 40)]
    calls.clear()
    for m, v in zip(mats, got):                                  # alone, in input order
        np.testing.assert_allclose(v, net.embed_utterances([m])[0], rtol=1e-5, atol=1e-6)
    assert len(calls) == len(mats)


def test_full_fp32_switches_tf32_off_on_a_gpu_and_back():
    b = torch.backends
    new_api = hasattr(getattr(b.cudnn, "conv", None), "fp32_precision")
    read = (lambda: (b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision, b.cuda.matmul.fp32_precision)) \
        if new_api else (lambda: (b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32))
    before = read()
    with utterance.full_fp32(torch.device("cpu")):
        assert read() == before
    with utterance.full_fp32(torch.device("cuda")):             # flags only: no GPU needed
        assert read() == (("ieee",) * 3 if new_api else (False, False))
    assert read() == before


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("oom")
    make_datadir(root / "data", n_spk=2, n_utt=140, frames=(40, 90), seed=3)   # 280 utterances: 2 blocks
    cfg = validate_config(copy.deepcopy(TINY))
    torch.manual_seed(0)
    ckpt.save(ckpt.model_file(XVectorNet.from_config(cfg, 2), cfg, ["spk0", "spk1"]), root / "exp" / "final.pt")
    return root


def test_out_of_memory_names_the_batch_size_and_leaves_nothing(model_dir, monkeypatch, capsys):
    from pyxv.bin import extract_xvectors

    out = model_dir / "out"
    out.mkdir(exist_ok=True)
    real = CpuEmbedder.embed_utterances
    seen = []

    def second_block_runs_out(self, mats, **kw):
        seen.append(sorted(p.name for p in out.iterdir()))
        if len(seen) == 2:   # the first block is in the temporary ark by now
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, mats, **kw)

    monkeypatch.setattr(CpuEmbedder, "embed_utterances", second_block_runs_out)
    rc = extract_xvectors.main(["extract", "--batch-frames", "5000", str(model_dir / "exp" / "final.pt"),
                                str(model_dir / "data"), str(out / "xvector.1.ark")])
    err = capsys.readouterr().err
    assert rc == 1 and len(seen) == 2 and any(n.startswith(".xvector.1.ark.tmp") for n in seen[1])
    assert err.count("\n") == 1 and err.startswith("extract_xvectors: FATAL: out of memory on cpu")
    assert "batches of up to 5000 frames" in err and "--batch-frames" in err and "extract.batch_frames" in err
    assert "e.g. to 2500" in err and "nothing of this job kept" in err
    assert list(out.iterdir()) == []


def test_out_of_memory_error_of_the_api(model_dir):
    class Full:
        embed_dim, device = 16, torch.device("cpu")

        def eval(self):
            return self

        def embed_utterances(self, mats, **kw):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    src = {"a": np.zeros((20, 23), np.float32)}
    with pytest.raises(ExtractionMemoryError, match=r"batches of up to 8000 frames: lower --batch-frames .* 4000"):
        write_embeddings(extract_embeddings(Full(), src, ["a"], batch_frames=8000), model_dir / "api.ark")
    assert not list(model_dir.glob("*api*")) and not list(model_dir.glob(".api*"))


def test_cli_refuses_a_negative_budget(model_dir, capsys):
    from pyxv.bin import extract_xvectors

    rc = extract_xvectors.main(["extract", "--batch-frames", "-1", str(model_dir / "exp" / "final.pt"),
                                str(model_dir / "data"), str(model_dir / "x.ark")])
    assert rc == 1 and capsys.readouterr().err == (
        "extract_xvectors: --batch-frames -1: must be positive (0: the model config's)\n")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
