"""x-vector network: Table 1 shapes, eq. (1)-(2) pooling, margin losses, config validation."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from pyxv.config import ConfigError
from pyxv.nnet.config import load_config, validate_config
from pyxv.nnet.losses import MarginHead
from pyxv.nnet.pooling import MultiHeadAttentionPooling
from pyxv.nnet.xvector import XVectorNet

torch.set_num_threads(1)


def test_paper_config_shapes(repo_root):
    cfg = load_config(repo_root / "conf" / "xvector_resnet34.yaml")
    m = cfg["model"]
    assert (m["channels"], m["blocks"], m["first_kernel"], m["heads"], m["embed_dim"], m["loss"]) == \
        ([16, 32, 64, 128], [3, 4, 6, 3], 7, 32, 400, "asoftmax")
    torch.manual_seed(0)
    net = XVectorNet.from_config(cfg, num_classes=1000).eval()
    convs = [mod for mod in net.trunk.modules() if isinstance(mod, torch.nn.Conv2d) and mod.kernel_size != (1, 1)]
    assert len(convs) == 1 + 2 * (3 + 4 + 6 + 3)  # 33 convs + the FC layers make ResNet-34
    assert convs[0].kernel_size == (7, 7) and convs[0].out_channels == 16 and convs[0].stride == (1, 1)
    x = torch.randn(2, 300, 23)
    with torch.no_grad():
        fmap = net.trunk(x)
        assert fmap.shape == (2, 128, 3, 38)          # T/8 x 3 maps, 128 channels (Table 1)
        frames = net.frame_features(x)
        assert frames.shape == (2, 38, 128)
        torch.testing.assert_close(frames, fmap.mean(2).transpose(1, 2))
        assert net.pool(frames).shape == (2, 32 * 128)
        assert net.embed(x).shape == (2, 400)
        assert net(x).shape == (2, 1000)
    total, body = net.num_parameters(), net.num_parameters(head=False)
    print(f"\nparameters of the paper x-vector: {total} with a 1000-speaker head, {body} without")
    assert 2.5e6 < body < 3.5e6


def test_pooling_eq1_eq2_against_direct_computation():
    torch.manual_seed(1)
    pool = MultiHeadAttentionPooling(dim=5, heads=3)
    with torch.no_grad():
        pool.scale.copy_(torch.tensor([0.5, 1.0, 2.0]))
    x = torch.randn(2, 7, 5)
    w = pool.weights(x).detach().numpy()
    e = pool(x).detach().numpy().reshape(2, 3, 5)
    mu, s, xs = pool.mu.detach().numpy().astype(np.float64), pool.scale.detach().numpy(), x.numpy().astype(np.float64)
    for b in range(2):
        for h in range(3):
            a = np.array([math.exp(-s[h] * np.linalg.norm(xs[b, t] - mu[h])) for t in range(7)])
            wd = a / a.sum()                                        # eq. (1)
            np.testing.assert_allclose(w[b, h], wd, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(e[b, h], (wd[:, None] * xs[b]).sum(0), rtol=1e-4, atol=1e-5)  # eq. (2)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)           # normalised over time, per head
    assert (w > 0).all()


def _direct_pooling(x, mu, s, eps):
    """Eq. (1)-(2) frame by frame in float64 (with the module's eps under the root)."""
    B, T, D = x.shape
    H = len(mu)
    w = np.zeros((B, H, T))
    for b in range(B):
        for h in range(H):
            a = -s[h] * np.sqrt(((x[b] - mu[h]) ** 2).sum(1) + eps)
            a = np.exp(a - a.max())
            w[b, h] = a / a.sum()
    return w, np.einsum("bht,btd->bhd", w, x)


def test_pooling_in_float64_and_with_frames_at_the_centres():
    # Large-magnitude frames, some exactly on a centre and some within 1e-3 of
    # one: where ||x||^2 - 2 x.mu + ||mu||^2 cancels most.
    torch.manual_seed(4)
    pool = MultiHeadAttentionPooling(dim=16, heads=4)
    with torch.no_grad():
        pool.mu.mul_(60.0)
        pool.scale.copy_(torch.tensor([0.1, 0.5, 1.0, 3.0]))
    x = torch.randn(3, 40, 16) * 30
    x[0, 3] = pool.mu[1].detach()
    x[1, 7] = pool.mu[2].detach() + 1e-3
    x[2, 0] = pool.mu[3].detach()
    mu, s = pool.mu.detach().double().numpy(), pool.scale.detach().double().numpy()
    # float32: the distances to float32 precision; weights to what a float32
    # softmax of logits in the hundreds allows.
    for dtype, rtol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        p = pool.to(dtype)
        xx = x.to(dtype)
        w_ref, e_ref = _direct_pooling(xx.double().numpy(), mu if dtype == torch.float64 else
                                       p.mu.detach().double().numpy(), s, p.eps)
        w = p.weights(xx).detach().double().numpy()
        e = p(xx).detach().double().numpy().reshape(3, 4, 16)
        np.testing.assert_allclose(w, w_ref, rtol=rtol, atol=1e-12)
        np.testing.assert_allclose(e, e_ref, rtol=rtol, atol=rtol * np.abs(e_ref).max())
        d = p.distances(xx).detach().double().numpy()
        d_ref = np.sqrt(((xx.double().numpy()[:, None] - p.mu.detach().double().numpy()[None, :, None]) ** 2)
                        .sum(-1) + p.eps)
        np.testing.assert_allclose(d, d_ref, rtol=1e-7)   # float32: its rounding; float64: the expansion
        assert abs(d[0, 1, 3] - math.sqrt(p.eps)) < 1e-7     # a frame on a centre: distance sqrt(eps)
    # gradients reach the centres and scales, finite also for frames on a centre
    pool = pool.float()
    xg = x.clone().requires_grad_(True)
    pool(xg).sum().backward()
    assert torch.isfinite(pool.mu.grad).all() and torch.isfinite(pool.scale.grad).all()
    assert torch.isfinite(xg.grad).all()


def test_pooling_is_permutation_invariant_and_length_free():
    torch.manual_seed(2)
    pool = MultiHeadAttentionPooling(8, 4)
    x = torch.randn(1, 20, 8)
    torch.testing.assert_close(pool(x), pool(x[:, torch.randperm(20)]), rtol=1e-5, atol=1e-5)
    # a repeated utterance gives the same weighted average
    torch.testing.assert_close(pool(x), pool(torch.cat([x, x], 1)), rtol=1e-5, atol=1e-5)


def test_asoftmax_target_logit_and_annealing():
    torch.manual_seed(3)
    head = MarginHead(4, 3, "asoftmax", margin=2, anneal_base=0.0, anneal_min=0.0)
    x = torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        plain = head(x)
        out = head(x, y)
    norm = x.norm(dim=1)
    cos = plain / norm[:, None]
    for i in range(5):
        theta = math.acos(float(cos[i, y[i]]))
        k = math.floor(2 * theta / math.pi)
        psi = (-1) ** k * math.cos(2 * theta) - 2 * k           # SphereFace psi, m=2
        assert float(out[i, y[i]]) == pytest.approx(float(norm[i]) * psi, rel=1e-4, abs=1e-5)
        for j in range(3):
            if j != y[i]:
                assert float(out[i, j]) == pytest.approx(float(plain[i, j]), rel=1e-6)
        assert float(out[i, y[i]]) <= float(plain[i, y[i]]) + 1e-6
    # annealing: lambda decays with the iterations, target logit moves from plain to margin
    h2 = MarginHead(4, 3, "asoftmax", margin=2)
    assert float(h2.lambda_()) == pytest.approx(1000.0)
    h2.train()
    for _ in range(100):
        h2(x, y)
    assert float(h2.lambda_()) == pytest.approx(max(5.0, 1000.0 / (1 + 0.12 * 100)))


@pytest.mark.parametrize("loss,expect", [("amsoftmax", lambda c, s, m: s * (c - m)),
                                         ("aamsoftmax", lambda c, s, m: s * math.cos(math.acos(c) + m))])
def test_additive_margins(loss, expect):
    torch.manual_seed(4)
    head = MarginHead(6, 4, loss, margin=0.2, scale=30.0)
    x = torch.randn(3, 6)
    y = torch.tensor([1, 3, 0])
    with torch.no_grad():
        plain, out = head(x), head(x, y)
    for i in range(3):
        c = float(plain[i, y[i]]) / 30.0
        assert float(out[i, y[i]]) == pytest.approx(expect(c, 30.0, 0.2), rel=1e-4, abs=1e-4)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.chanels: unknown key"):
        validate_config({"model": {"chanels": [1]}})
    with pytest.raises(ConfigError, match=r"train\.lr: expected float"):
        validate_config({"train": {"lr": "fast"}})
    with pytest.raises(ConfigError, match=r"model\.heads: expected int"):
        validate_config({"model": {"heads": 2.5}})
    with pytest.raises(ConfigError, match=r"model\.loss: 'foo' is not one of"):
        validate_config({"model": {"loss": "foo"}})
    with pytest.raises(ConfigError, match=r"optim: unknown section"):
        validate_config({"optim": {}})
    p = tmp_path / "bad.yaml"
    p.write_text("data:\n  chunk_min: 300\n  chunk_max: 200\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: data\.chunk_min"):
        load_config(p)
    assert validate_config({"train": {"lr": 1}})["train"]["lr"] == 1.0


def test_demo_config_is_small(repo_root):
    cfg = load_config(repo_root / "conf" / "xvector_demo.yaml")
    net = XVectorNet.from_config(cfg, 10)
    assert net.num_parameters() < 1.0e6
    with torch.no_grad():
        assert net.eval().embed(torch.randn(1, 150, cfg["model"]["input_dim"])).shape == (1, cfg["model"]["embed_dim"])


def test_other_input_dim_and_replace_head():
    net = XVectorNet.from_config({"model": {"input_dim": 25, "channels": [4, 8], "blocks": [1, 1],
                                            "heads": 2, "embed_dim": 8}}, 5)
    with torch.no_grad():
        assert net.eval()(torch.randn(2, 40, 25)).shape == (2, 5)
        net.replace_head(4, loss="softmax")
        p = net.posteriors(torch.randn(2, 40, 25))
    assert p.shape == (2, 4)
    torch.testing.assert_close(p.sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="expects"):
        net(torch.randn(2, 40, 23))


def test_a_new_encoder_is_one_class():
    """The base class gives a subclass with layers, embed and defaults the whole
    interface: output layer, forward, posteriors, head/body split, freezing,
    whole-utterance embedding, config and registry."""
    from pyxv.nnet import registry
    from pyxv.nnet.config import build_encoder
    from pyxv.nnet.encoder import SpeakerEncoder, state_mismatch

    @registry.register
    class MeanLinear(SpeakerEncoder):
        type_name = "test_mean_linear"
        MODEL_DEFAULTS = {"type": "test_mean_linear", "input_dim": 6, "embed_dim": 4, "loss": "softmax",
                          "margin": 0.0, "scale": 1.0}
        ARCH_KEYS = ("input_dim", "embed_dim")

        def __init__(self, input_dim=6, embed_dim=4, num_classes=0, **head_options):
            super().__init__(input_dim, embed_dim)
            self.proj = torch.nn.Linear(input_dim, embed_dim)
            self._add_output_layer(num_classes, **head_options)

        def embed(self, x):
            self.check_input(x)
            return self.proj(x.mean(1))

        def embedding_layers(self):
            return [self.proj]

    try:
        with pytest.raises(KeyError, match=r"unknown encoder type 'nope' \(known: .*test_mean_linear"):
            registry.encoder_class("nope")
        net = build_encoder({"model": {"type": "test_mean_linear", "embed_dim": 5}}, 3)
        assert list(net.state_dict()) == ["proj.weight", "proj.bias", "head.weight", "head.bias", "head.iteration"]
        x = torch.randn(2, 10, 6)
        out, plain = net(x, torch.tensor([0, 2]), with_plain=True)
        assert out.shape == plain.shape == (2, 3)
        torch.testing.assert_close(net.posteriors(x).sum(1), torch.ones(2))
        assert net.num_parameters(head=False) == 6 * 5 + 5 and net.num_parameters() == 6 * 5 + 5 + 3 * 5 + 3
        assert net.body_parameters() == [net.proj.weight, net.proj.bias]
        assert net.head_parameters() == [net.head.weight, net.head.bias]
        mats = [np.ones((25, 6), np.float32)]             # three equal chunks, averaged
        with torch.no_grad():
            np.testing.assert_allclose(net.embed_utterances(mats, chunk_frames=10),
                                       net.embed(torch.ones(1, 25, 6)).numpy(), rtol=1e-6)
        assert net.freeze_embedding() == [net.proj] and not net.proj.weight.requires_grad
        net.replace_head(4)
        assert net.num_classes == 4 and net.head.loss == "softmax"
        with pytest.raises(ValueError, match=r"MeanLinear expects \(batch, frames, 6\)"):
            net(torch.randn(2, 10, 7))
        headless = build_encoder({"model": {"type": "test_mean_linear", "embed_dim": 5}}, 0)
        assert headless.num_classes == 0 and headless.num_parameters() == 6 * 5 + 5
        with pytest.raises(RuntimeError, match="no output layer"):
            headless(x)
        assert state_mismatch(headless.state_dict(), net.state_dict()).startswith("unexpected keys ['head.")
        assert state_mismatch(net.state_dict(), headless.state_dict(), skip_head=True) == ""
    finally:
        registry._TYPES.pop("test_mean_linear", None)


def test_cpu_embedder_equals_the_network():
    # Batch norm with real statistics (folded into the convs by torch.jit.freeze), several
    # lengths and batch sizes, chunk averaging through embed_utterances.
    from pyxv.nnet.cpu_embedder import CpuEmbedder, for_cpu_extraction

    torch.manual_seed(5)
    net = XVectorNet(input_dim=23, channels=(8, 16, 32, 64), blocks=(1, 2, 1, 1), heads=4, embed_dim=32,
                     num_classes=10)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    net.eval()
    cpu = for_cpu_extraction(net, "cpu")
    assert isinstance(cpu, CpuEmbedder)
    for B, T in ((1, 400), (3, 37), (2, 1234)):
        x = torch.randn(B, T, 23)
        with torch.no_grad():
            a, b = net.embed(x), cpu.embed(x)
        assert b.shape == (B, 32)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * a.abs().max().item())
    rng = np.random.default_rng(0)
    mats = [rng.normal(size=(n, 23)).astype(np.float32) for n in (90, 300, 300, 7000)]
    np.testing.assert_allclose(cpu.embed_utterances(mats, chunk_frames=3000),
                               net.embed_utterances(mats, chunk_frames=3000), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        cpu.embed(torch.randn(1, 50, 20))
    # A model elsewhere than the CPU is used as it is; a device that is not the model's is refused.
    elsewhere = copy.deepcopy(net).to("meta")
    assert for_cpu_extraction(elsewhere) is elsewhere
    with pytest.raises(ValueError, match="cuda but the XVectorNet model is on cpu"):
        for_cpu_extraction(net, "cuda")


def test_pack_rows_places_every_piece_aligned_and_apart():
    from pyxv.nnet.utterance import pack_rows

    rng = np.random.default_rng(3)
    lengths = list(rng.integers(1, 900, size=200)) + [1016, 1017, 5000]
    rows = pack_rows(lengths, 1024, 8)
    placed = sorted(p for row in rows for p, _ in row)
    assert placed == list(range(len(lengths)))
    for row in rows:
        spans = sorted((off, off + lengths[p]) for p, off in row)
        assert all(off % 8 == 0 for off, _ in spans)
        # at least one zero frame at the deepest resolution (1/8) between pieces
        assert all(-(-end // 8) < nxt // 8 for (_, end), (nxt, _) in zip(spans, spans[1:]))
        assert len(row) == 1 or spans[-1][1] + 8 <= 1024
    assert [len(r) for r in rows if any(lengths[p] > 1016 for p, _ in r)] == [1, 1]   # oversize: a row alone
    # first fit, longest first: the rows are nearly full
    assert len(rows) <= 1.1 * sum(-(-n // 8) * 8 + 8 for n in lengths) / 1024 + 3


def test_packed_rows_give_each_utterance_its_own_embedding():
    # Many lengths (odd ones included, where the strided grids must still line
    # up): the CPU embedder packs them into shared rows; each embedding must
    # equal the eager network's on that utterance alone.
    from pyxv.nnet.cpu_embedder import for_cpu_extraction

    torch.manual_seed(7)
    net = XVectorNet(input_dim=23, channels=(8, 16, 32, 64), blocks=(1, 1, 1, 1), heads=4, embed_dim=24,
                     num_classes=5)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):     # a non-zero shift: the gaps would leak without the masks
            with torch.no_grad():
                m.running_mean.uniform_(-1, 1)
                m.bias.uniform_(0.2, 0.5)
    net.eval()
    rng = np.random.default_rng(1)
    mats = [rng.normal(size=(n, 23)).astype(np.float32) for n in rng.integers(10, 700, size=25)]
    packed = for_cpu_extraction(net).embed_utterances(mats)
    with torch.no_grad():
        alone = np.stack([net.embed(torch.from_numpy(m)[None])[0].numpy() for m in mats])
    np.testing.assert_allclose(packed, alone, rtol=1e-5, atol=1e-5 * np.abs(alone).max())
