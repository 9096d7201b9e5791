"""x-vector training: loss goes down, exact resume, fine-tuning options, bad input."""
from __future__ import annotations

import copy
import json
import logging
import re

import numpy as np
import pytest
import torch

from pyxv.io import read_table
from pyxv.config import ConfigError
from pyxv.nnet.config import validate_config
from pyxv.train import checkpoint as ckpt
from pyxv.features.network_input import chunk
from pyxv.train.data import ChunkBatches
from pyxv.train.trainer import TrainingDataError, train_classifier

from xvector_synth import TINY, make_datadir
from xvector_synth import feature_source as source

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("xv") / "data"
    u2s = make_datadir(d, n_spk=4, n_utt=8)
    return d, u2s


def cfg(**train):
    c = copy.deepcopy(TINY)
    c["train"].update(train)
    return c


def test_tiny_training_loss_goes_down(data, tmp_path):
    d, u2s = data
    res = train_classifier(source(d), u2s, cfg(epochs=4), tmp_path / "exp", progress=False)
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < 0.6 * losses[0], losses
    assert res.history[-1]["train_acc"] > 0.5                  # 4 classes: chance 0.25
    hist = json.loads((tmp_path / "exp" / "log" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert set(hist[0]) >= {"epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr"}
    ck = ckpt.load(tmp_path / "exp" / "final.pt")
    assert ck["labels"] == ["spk0", "spk1", "spk2", "spk3"] and ck["config"]["model"]["heads"] == 2
    assert sorted(p.name for p in (tmp_path / "exp" / "checkpoints").iterdir()) == \
        ["epoch_1.pt", "epoch_2.pt", "epoch_3.pt", "epoch_4.pt"]


def test_resume_after_interruption_gives_identical_weights(data, tmp_path):
    d, u2s = data
    full = train_classifier(source(d), u2s, cfg(), tmp_path / "a", progress=False)

    class Interrupted(Exception):
        pass

    def stop_after_2(epoch, rec):
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_classifier(source(d), u2s, cfg(), tmp_path / "b", progress=False, on_epoch_end=stop_after_2)
    assert not (tmp_path / "b" / "final.pt").exists()
    resumed = train_classifier(source(d), u2s, cfg(), tmp_path / "b", resume=True, progress=False)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]


def test_resume_from_mid_epoch_checkpoint_gives_identical_weights(data, tmp_path):
    d, u2s = data
    c = cfg(checkpoint_interval=3)                 # 8 steps/epoch: step checkpoints at global 3, 6, 9, 12 ...
    full = train_classifier(source(d), u2s, c, tmp_path / "a", progress=False)

    class Interrupted(Exception):
        pass

    def stop_in_epoch_2(epoch, step):
        if (epoch, step) == (2, 6):                  # last checkpoint: epoch 2 after 4 steps (global 12)
            raise Interrupted

    with pytest.raises(Interrupted):
        train_classifier(source(d), u2s, c, tmp_path / "b", progress=False, on_step=stop_in_epoch_2)
    names = sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir())
    assert names == ["epoch_1.pt", "epoch_2_step_4.pt"]           # older step checkpoints superseded
    assert not list((tmp_path / "b" / "checkpoints").glob(".*"))  # no temporary file left
    # what kill -9 during a checkpoint write leaves: removed by the next run
    (tmp_path / "b" / "checkpoints" / ".epoch_2_step_6.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    resumed = train_classifier(source(d), u2s, c, tmp_path / "b", progress=False)
    assert not list((tmp_path / "b" / "checkpoints").glob(".*"))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == \
        ["epoch_1.pt", "epoch_2.pt", "epoch_3.pt"]


class _Log:
    """The trainer's log lines (it does not propagate to the root logger)."""

    def __init__(self, caplog):
        self.caplog = caplog

    def __enter__(self):
        self.caplog.set_level(logging.INFO, logger="pyxv.train")
        logging.getLogger("pyxv.train").propagate = True
        return self.caplog

    def __exit__(self, *exc):
        logging.getLogger("pyxv.train").propagate = False


def _stop_after(n):
    def stop(epoch, rec):
        if epoch == n:
            raise KeyboardInterrupt
    return stop


def _digests(root):
    """Relative path -> bytes of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


STALE = re.compile(r"stale_\d{8}-\d{6}(-\d+)?")


def test_resume_only_under_the_same_fingerprint(data, tmp_path, caplog):
    d, u2s = data
    with pytest.raises(KeyboardInterrupt):
        train_classifier(source(d), u2s, cfg(), tmp_path / "b", progress=False, on_epoch_end=_stop_after(1))
    ck = ckpt.load(tmp_path / "b" / "checkpoints" / "epoch_1.pt")
    assert set(ck["fingerprint"]) == {"config", "batch", "data", "features", "extra", "init_from", "code"}
    assert ck["fingerprint"]["batch"] == {"processes": 1, "per_process": 8, "global": 8}
    with _Log(caplog):
        # another learning rate: start over, saying why; same weights as a fresh run
        res = train_classifier(source(d), u2s, cfg(lr=0.02), tmp_path / "b", progress=False)
        assert "starting over" in caplog.text and "train.lr 0.01 -> 0.02" in caplog.text
        fresh = train_classifier(source(d), u2s, cfg(lr=0.02), tmp_path / "c", progress=False)
        for k, v in fresh.model.state_dict().items():
            assert torch.equal(v, res.model.state_dict()[k]), k
        # other training data (one utterance fewer): start over, naming the list that changed
        caplog.clear()
        fewer = dict(list(u2s.items())[1:])
        train_classifier(source(d), fewer, cfg(lr=0.02), tmp_path / "c", progress=False)
        assert f"the training data changed: training list 28 -> 27 entries, validation list other entries " \
               f"(features: {d / 'feats.scp'})" in caplog.text         # the first utterance was a held-out one
        assert "class list" not in caplog.text and "feature file sizes" not in caplog.text
        # a setting that does not change the weights (log interval) still resumes
        caplog.clear()
        with pytest.raises(KeyboardInterrupt):
            train_classifier(source(d), u2s, cfg(), tmp_path / "e", progress=False, on_epoch_end=_stop_after(1))
        train_classifier(source(d), u2s, cfg(log_interval=1), tmp_path / "e", progress=False)
        assert "resuming from" in caplog.text and "starting over" not in caplog.text
        # resume=False (--start-over): start over on purpose, the old state moved aside
        caplog.clear()
        before = _digests(tmp_path / "e")
        train_classifier(source(d), u2s, cfg(), tmp_path / "e", progress=False, resume=False)
        assert "starting over: on purpose (--start-over" in caplog.text
        stale = [p for p in (tmp_path / "e").iterdir() if STALE.fullmatch(p.name)]
        assert len(stale) == 1 and f"moved to {stale[0]}/" in caplog.text
        assert _digests(stale[0]) == {k: v for k, v in before.items() if not k.startswith("log/train")}


def test_changed_config_moves_the_old_state_aside_intact(data, tmp_path, caplog):
    """A refused resume deletes nothing: checkpoints, best/final model, config and
    history go whole into exp/stale_<YYYYmmdd-HHMMSS>/, and the log line names
    that folder, the changed key and the option to start over on purpose."""
    d, u2s = data
    exp = tmp_path / "exp"
    train_classifier(source(d), u2s, cfg(epochs=2), exp, progress=False)
    before = _digests(exp)
    assert {"checkpoints/epoch_1.pt", "checkpoints/epoch_2.pt", "final.pt", "config.yaml",
            "log/history.json"} <= set(before)
    with _Log(caplog):
        res = train_classifier(source(d), u2s, cfg(epochs=2, warmup_steps=2), exp, progress=False)
    stale = [p for p in exp.iterdir() if p.name.startswith("stale_")]
    assert len(stale) == 1 and STALE.fullmatch(stale[0].name), stale
    assert _digests(stale[0]) == before                    # every file, byte for byte
    line = next(r.getMessage() for r in caplog.records if "starting over" in r.getMessage())
    assert "the config changed: train.warmup_steps 4 -> 2" in line
    assert f"moved to {stale[0]}/" in line and "nothing was deleted" in line and "--start-over" in line
    # the new run trained under the new config, from scratch, in place of the old files
    assert ckpt.load(exp / "final.pt")["config"]["train"]["warmup_steps"] == 2
    assert [h["epoch"] for h in res.history] == [1, 2]
    assert ckpt.load(exp / "checkpoints" / "epoch_1.pt")["fingerprint"]["config"]["train"]["warmup_steps"] == 2


def test_a_code_edit_resumes_and_logs_both_revisions(data, tmp_path, caplog, monkeypatch):
    d, u2s = data
    full = train_classifier(source(d), u2s, cfg(), tmp_path / "a", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(source(d), u2s, cfg(), tmp_path / "b", progress=False, on_epoch_end=_stop_after(2))
    old = ckpt.code_revision()
    monkeypatch.setattr(ckpt, "code_revision", lambda: "c0de" * 10)   # as after editing a pyxv source
    with _Log(caplog):
        resumed = train_classifier(source(d), u2s, cfg(), tmp_path / "b", progress=False)
    assert "resuming from" in caplog.text and "starting over" not in caplog.text
    assert f"the code revision changed ({old[:12]} -> c0dec0dec0de" in caplog.text
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith("stale_")]
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_another_number_of_processes_at_another_global_batch_is_refused(data, tmp_path, monkeypatch):
    """A checkpoint of 1 process x 8 met by 2 processes x 8 (global batch 16): the
    run stops naming both launches and how to go on; nothing is moved or deleted.
    (The same global batch on 2 processes resumes: tests/test_ddp.py.)"""
    from pyxv.train import distributed as dd

    d, u2s = data
    with pytest.raises(KeyboardInterrupt):
        train_classifier(source(d), u2s, cfg(), tmp_path / "w", progress=False, on_epoch_end=_stop_after(1))
    before = _digests(tmp_path / "w")
    # The refusal comes before any collective, so a faked world of 2 reaches it in one process.
    monkeypatch.setattr(dd, "setup", lambda use_gpu=None, **kw: dd.DistInfo(rank=0, world=2))
    with pytest.raises(ckpt.CheckpointError) as e:
        train_classifier(source(d), u2s, cfg(), tmp_path / "w", progress=False)
    msg = str(e.value)
    assert str(tmp_path / "w" / "checkpoints" / "epoch_1.pt") in msg and "cannot resume on 2 process(es)" in msg
    assert "written by 1 process(es) of train.batch_size 8 (global batch 8)" in msg
    assert "this run has 2 (global batch 16)" in msg and "set train.batch_size 4" in msg and "--start-over" in msg
    assert _digests(tmp_path / "w") == before


def test_checkpoint_compare_of_batches():
    """compare_fingerprints on the global batch: the same one on other processes
    resumes (noted); another per-process batch is a config change; only another
    number of processes is a launch mismatch."""
    def fp(per, procs, **train):
        c = cfg(batch_size=per, **train)
        return ckpt.fingerprint(c, {"training list": ["u1 0"]}, processes=procs)

    same = ckpt.compare_fingerprints(fp(16, 1), fp(8, 2))
    assert not same.changed and same.launch is None and "now 2 process(es) x 8 (was 1 x 16)" in same.notes[0]
    per = ckpt.compare_fingerprints(fp(16, 1), fp(8, 1))
    assert per.changed == ["the global batch changed: train.batch_size 16 -> 8 per process x 1 -> 1 "
                           "process(es) = 16 -> 8"]
    procs = ckpt.compare_fingerprints(fp(8, 1), fp(8, 4))
    assert not procs.changed and "run it again on 1 process(es), set train.batch_size 2 to keep the global " \
        "batch 8, or start over on purpose with --start-over" in procs.launch
    odd = ckpt.compare_fingerprints(fp(8, 1), fp(8, 3)).launch
    assert "run it again on 1 process(es), or start" in odd        # 8 over 3 processes: no whole batch size
    both = ckpt.compare_fingerprints(fp(8, 1), fp(8, 2, lr=0.5))
    assert both.launch is None and len(both.changed) == 2 and "train.lr 0.01 -> 0.5" in both.changed[0]
    old = fp(8, 1)
    del old["batch"]                                                # written before per-process batches
    assert "older pyxv" in ckpt.compare_fingerprints(old, fp(8, 1)).changed[0]


def test_lr_scales_with_the_global_batch_only_when_asked(data, tmp_path):
    from pyxv.train.trainer import scaled_lr

    tc = validate_config(cfg())["train"]
    assert scaled_lr(tc, 1) == scaled_lr(tc, 8) == 0.01                    # off by default
    tc["lr_scale_ref_batch"] = 32
    assert scaled_lr(tc, 1) == pytest.approx(0.01 * 8 / 32) and scaled_lr(tc, 8) == pytest.approx(0.01 * 64 / 32)
    d, u2s = data
    train_classifier(source(d), u2s, cfg(epochs=1, lr_scale_ref_batch=4), tmp_path / "s", progress=False)
    groups = ckpt.load(tmp_path / "s" / "checkpoints" / "epoch_1.pt")["optimizer"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == [pytest.approx(0.02)] * 2   # 0.01 x 8 / 4
    with pytest.raises(ConfigError, match="lr_scale_ref_batch"):
        train_classifier(source(d), u2s, cfg(lr_scale_ref_batch=-1), tmp_path / "x", progress=False)


def test_an_epoch_is_planned_in_global_batches(data):
    """train.batch_size per process: N processes plan global batches of N x batch_size,
    so by default an epoch (one pass over the voiced frames) takes ~1/N of the steps,
    and rank r trains on its share (r::N) of each planned global batch."""
    from pyxv.train import distributed as dd
    from pyxv.train.trainer import _prepare_data

    d, u2s = data
    c = validate_config(cfg(steps_per_epoch=0, batch_size=2))
    one = _prepare_data(source(d), u2s, c, None, None, None, None, dd.DistInfo(world=1))
    four = _prepare_data(source(d), u2s, c, None, None, None, None, dd.DistInfo(rank=3, world=4))
    assert (one.global_batch, four.global_batch) == (2, 8)
    frames = sum(one.lengths[u] for u in one.tr_utts)
    assert one.steps == round(frames / 50 / 2) and four.steps == round(frames / 50 / 8)
    assert four.steps < one.steps / 3
    # a fixed steps_per_epoch stays the number of optimizer steps
    fixed = validate_config(cfg(steps_per_epoch=5, batch_size=2))
    assert _prepare_data(source(d), u2s, fixed, None, None, None, None, dd.DistInfo(world=4)).steps == 5


def test_cuda_rng_states_restore_per_process_with_fewer_visible_devices(monkeypatch, caplog):
    """A checkpoint holding more CUDA RNG states than this process sees devices
    (written by 4 processes, resumed where one device is visible): each process
    restores its own rank's state onto its own device, never indexing devices
    it does not have (restoring every saved device's state raised IndexError)."""
    from pyxv.train import distributed as dd
    from pyxv.train.trainer import _set_rng_state

    class Generator:                       # one visible CUDA device, faked on CPU
        def __init__(self):
            self.states = []

        def set_state(self, s):
            self.states.append(s)

    dev0 = Generator()
    monkeypatch.setattr(torch.cuda, "default_generators", (dev0,))
    monkeypatch.setattr(torch.cuda.random, "_lazy_call", lambda cb, **kw: cb())
    saved = [torch.full((16,), r, dtype=torch.uint8) for r in range(4)]
    cpu = torch.get_rng_state()
    with pytest.raises(IndexError):        # what restoring all devices' states did
        torch.cuda.set_rng_state_all(saved)
    dev0.states.clear()
    _set_rng_state({"torch": cpu, "cuda_by_rank": saved}, dd.DistInfo(rank=1, world=2, device=torch.device("cuda", 0)))
    assert len(dev0.states) == 1 and torch.equal(dev0.states[0], saved[1])
    assert torch.equal(torch.get_rng_state(), cpu)
    # more processes than states saved (an unchanged global batch over more processes)
    with _Log(caplog):
        _set_rng_state({"torch": cpu, "cuda_by_rank": saved[:1]},
                       dd.DistInfo(rank=1, world=2, device=torch.device("cuda", 0)))
    assert len(dev0.states) == 1 and "process 1 keeps its seeded state" in caplog.text
    # on CPU nothing touches CUDA
    _set_rng_state({"torch": cpu, "cuda_by_rank": saved}, dd.DistInfo())
    assert len(dev0.states) == 1


def test_chunk_plan_depends_on_seed_and_epoch_only(data):
    d, u2s = data
    src = source(d)
    utts = sorted(u2s)
    labels = [int(u2s[u][3:]) for u in utts]
    kw = dict(batch_size=6, steps=5, chunk_min=30, chunk_max=50, seed=3)
    a = ChunkBatches(src, utts, labels, src.lengths, epoch=1, **kw)
    b = ChunkBatches(src, utts, labels, src.lengths, epoch=1, **kw)
    c = ChunkBatches(src, utts, labels, src.lengths, epoch=2, **kw)
    assert a.plan == b.plan and a.plan != c.plan
    x, y = a[0]
    assert x.shape == (6, a.plan[0][0], 23) and y.dtype == torch.int64
    # DDP shares: two ranks together hold the global batch
    r0 = ChunkBatches(src, utts, labels, src.lengths, epoch=1, rank=0, world=2, **kw)[0]
    r1 = ChunkBatches(src, utts, labels, src.lengths, epoch=1, rank=1, world=2, **kw)[0]
    torch.testing.assert_close(torch.cat([r0[0], r1[0]]).sort(0)[0], x.sort(0)[0])
    # short utterances are repeated to the chunk length
    np.testing.assert_array_equal(chunk(np.arange(3)[:, None], 1, 5)[:, 0], [1, 2, 0, 1, 2])


def test_chunk_plan_is_one_draw_per_chunk():
    """The plan equals the draws made one chunk at a time (class, then one of
    its utterances in index order), so vectorising it changed no model."""
    rng = np.random.default_rng(1)
    utts = [f"u{i:03d}" for i in range(120)]
    labels = (rng.integers(0, 9, size=120) * 7 + 2).tolist()   # class values not 0..C-1
    lengths = {u: int(rng.integers(10, 90)) for u in utts}
    for sampling in ("balanced", "utterance"):
        plan = ChunkBatches(None, utts, labels, lengths, batch_size=5, steps=7, chunk_min=20, chunk_max=60,
                            sampling=sampling, seed=4, epoch=2).plan
        r = np.random.default_rng([4, 2])
        classes = sorted(set(labels))
        members = [[i for i, l in enumerate(labels) if l == c] for c in classes]
        expect = []
        for _ in range(7):
            L = int(r.integers(20, 61))
            if sampling == "balanced":
                idx = [members[c][int(r.integers(0, len(members[c])))] for c in r.integers(0, len(classes), size=5)]
            else:
                idx = r.integers(0, 120, size=5).tolist()
            starts = r.random(5) * np.maximum(np.array([lengths[utts[i]] for i in idx]) - L + 1, 1)
            expect.append((L, [(utts[i], int(s), labels[i]) for i, s in zip(idx, starts)]))
        assert plan == expect, sampling


def test_fine_tune_new_head_frozen_embedding_and_arch_check(data, tmp_path):
    d, u2s = data
    pre = train_classifier(source(d), u2s, cfg(epochs=1), tmp_path / "pre", progress=False)
    # A 2-class task (e.g. emotions) from the speaker model, frozen up to the embedding.
    u2e = {u: ("a" if int(u[-2:]) % 2 else "b") for u in u2s}
    c = cfg(epochs=1, freeze="embedding")
    c["model"]["loss"] = "softmax"
    ft = train_classifier(source(d), u2e, c, tmp_path / "ft", init_from=tmp_path / "pre" / "final.pt",
                          progress=False)
    assert ft.model.head.weight.shape[0] == 2 and ft.labels == ["a", "b"]
    p0, p1 = pre.model.state_dict(), ft.model.state_dict()
    for k in p0:
        if k.startswith(("trunk.", "pool.", "embedding.")):
            assert torch.equal(p0[k], p1[k]), k              # frozen, BN statistics included
    assert not torch.equal(p0["embed_bn.weight"], p1["embed_bn.weight"])
    # Another architecture: error naming both
    other = copy.deepcopy(c)
    other["model"]["heads"] = 3
    with pytest.raises(ckpt.CheckpointError, match=r"heads=2.*heads=3"):
        train_classifier(source(d), u2e, other, tmp_path / "x", init_from=tmp_path / "pre" / "final.pt",
                         progress=False)


def test_head_only_epochs_hold_the_pretrained_layers_still_then_fine_tune_them(data, tmp_path):
    """LP-FT: during train.head_only_epochs only the new output layer learns; the
    pre-trained parameters move from the next epoch on."""
    d, u2s = data
    pre = train_classifier(source(d), u2s, cfg(epochs=1), tmp_path / "pre", progress=False)
    u2e = {u: ("a" if int(u[-2:]) % 2 else "b") for u in u2s}
    c = cfg(epochs=3, head_only_epochs=2, keep_checkpoints=0, warmup_steps=1)
    c["model"]["loss"] = "softmax"
    train_classifier(source(d), u2e, c, tmp_path / "ft", init_from=tmp_path / "pre" / "final.pt",
                     valid_utts=[], progress=False)
    params = [n for n, _ in pre.model.named_parameters() if not n.startswith("head.")]
    p0 = pre.model.state_dict()
    ep = [ckpt.load(tmp_path / "ft" / "checkpoints" / f"epoch_{e}.pt")["model"] for e in (1, 2, 3)]
    assert params and all(torch.equal(p0[n], ep[1][n]) for n in params)
    assert not torch.equal(ep[0]["head.weight"], ep[1]["head.weight"])
    assert sum(not torch.equal(p0[n], ep[2][n]) for n in params) > len(params) // 2
    with pytest.raises(ConfigError, match="head_only_epochs"):
        train_classifier(source(d), u2e, cfg(epochs=2, head_only_epochs=2), tmp_path / "x", progress=False)


def test_dev_set_early_stopping_and_best_model(data, tmp_path):
    d, u2s = data
    dev = {u: s for u, s in u2s.items() if u.endswith(("00", "01"))}
    train = {u: s for u, s in u2s.items() if u not in dev}
    calls = []

    def metric(model, epoch):
        calls.append(epoch)
        return [0.5, 0.9, 0.4, 0.3, 0.2][epoch - 1]           # best at epoch 2

    res = train_classifier(source(d), train, cfg(epochs=5, patience=2), tmp_path / "e",
                           dev=(source(d), dev), dev_metric=metric, progress=False)
    assert calls == [1, 2, 3, 4] and res.best_epoch == 2          # stopped after 2 epochs without gain
    assert res.history[0]["n_valid"] == len(dev)
    best = ckpt.load(tmp_path / "e" / "best.pt")
    for k, v in best["model"].items():
        assert torch.equal(v, res.model.state_dict()[k]), k


def test_bad_input(data, tmp_path, caplog):
    d, u2s = data
    one = {u: "spk0" for u in u2s}
    with pytest.raises(TrainingDataError, match="at least 2 classes"):
        train_classifier(source(d), one, cfg(), tmp_path / "x", progress=False)
    c = cfg()
    c["data"]["min_utts_per_class"] = 100
    with pytest.raises(TrainingDataError, match="min_utts_per_class=100"):
        train_classifier(source(d), u2s, c, tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match=r"train\.bogus: unknown key"):
        train_classifier(source(d), u2s, cfg(bogus=1), tmp_path / "x", progress=False)
    # utterances without features are reported and skipped
    more = dict(u2s, **{"spk9-nofeats": "spk1", "spk9-nofeats2": "spk2"})
    caplog.set_level(logging.WARNING, logger="pyxv.train")
    logging.getLogger("pyxv.train").propagate = True
    try:
        res = train_classifier(source(d), more, cfg(epochs=1), tmp_path / "m", progress=False)
    finally:
        logging.getLogger("pyxv.train").propagate = False
    assert "2 utterances have no features" in caplog.text and "spk9-nofeats" in caplog.text
    assert len(res.labels) == 4


def test_feature_source_applies_cmn_and_vad(data):
    d, _ = data
    from pyxv.features import prepare_xvector_input
    import kaldiio
    src = source(d)
    feats, vad = read_table(d / "feats.scp"), read_table(d / "vad.scp")
    u = "spk1-utt03"
    ref = prepare_xvector_input(kaldiio.load_mat(feats[u]), kaldiio.load_mat(vad[u]))
    np.testing.assert_allclose(src[u], ref, rtol=1e-6, atol=1e-5)
    assert src.lengths[u] == len(ref) == int(kaldiio.load_mat(vad[u]).sum())


def test_step_script_outputs_and_augmented_copies(tmp_path, repo_root):
    import os
    import subprocess

    import yaml

    d = tmp_path / "data"
    u2s = make_datadir(d, n_spk=3, n_utt=6, seed=7)
    # augmented copies <utt>-noise: same features, Kaldi's naming
    for name in ("feats.scp", "vad.scp"):
        t = read_table(d / name)
        t.update({f"{u}-noise": v for u, v in list(t.items())})
        (d / name).write_text("".join(f"{k} {t[k]}\n" for k in sorted(t)))
    (d / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in sorted(
        list(u2s.items()) + [(f"{u}-noise", s) for u, s in u2s.items()])))
    conf = tmp_path / "x.yaml"
    c = cfg(epochs=1, steps_per_epoch=4)
    conf.write_text(yaml.safe_dump(c))
    (tmp_path / "mfcc.conf").write_text("--num-ceps=23\n")
    (tmp_path / "vad.conf").write_text("--vad-energy-threshold=5.5\n")
    exp = tmp_path / "exp"
    args = ["steps/train_xvector.sh", "--cmd", "utils/parallel/run.py", "--num-threads", "1", "--config", str(conf),
            "--mfcc-config", str(tmp_path / "mfcc.conf"), "--vad-config", str(tmp_path / "vad.conf"), str(d), str(exp)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(args, cwd=repo_root, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    for f in ("final.pt", "config.yaml", "mfcc.conf", "vad.conf", "log/train.log", "log/history.json",
              "checkpoints/epoch_1.pt", "feats/feats.scp", "feats/utt2num_frames"):
        assert (exp / f).is_file(), f
    log = (exp / "log" / "train.log").read_text()
    # 3 clean utterances held out, their 3 noisy copies kept out of training too
    assert "30 training and 3 validation utterances, 3 classes" in log
    ck = ckpt.load(exp / "final.pt")
    assert ck["extra"]["mfcc.conf"] == "--num-ceps=23\n" and ck["labels"] == ["spk0", "spk1", "spk2"]
    p = subprocess.run(args, cwd=repo_root, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "nothing to do" in p.stdout
    # --overwrite true retrains; the trained state is moved aside, not deleted
    old_final = (exp / "final.pt").read_bytes()
    p = subprocess.run(args[:-2] + ["--overwrite", "true"] + args[-2:], cwd=repo_root, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    stale = list(exp.glob("stale_*"))
    assert len(stale) == 1 and (stale[0] / "final.pt").read_bytes() == old_final
    assert (stale[0] / "checkpoints" / "epoch_1.pt").is_file() and (exp / "final.pt").is_file()
    assert "starting over: on purpose (--start-over, resume=False). The old training state" in p.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    p = subprocess.run(args[:6] + [str(bad)] + args[7:], cwd=repo_root, env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode != 0 and "train.epochz: unknown key" in p.stderr


def test_callable_dev_metric_without_validation_set(data, tmp_path):
    """As the emotion systems call it: no held-out set, a callable dev metric picks the model."""
    d, u2s = data
    res = train_classifier(source(d), u2s, cfg(epochs=2), tmp_path / "n", dev=lambda net, ep: -ep,
                           valid_utts=[], progress=False)
    assert res.best_epoch == 1
    assert [h["valid_acc"] for h in res.history] == [None, None] and res.history[0]["n_valid"] == 0
    assert [h["dev_metric"] for h in res.history] == [-1.0, -2.0]


def test_average_last_keeps_the_mean_weights_of_the_last_epochs(data, tmp_path):
    """train.average_last N (no dev choice): final.pt holds the element-wise mean of the
    last N epoch checkpoints' weights (which pruning keeps); without it, the last epoch's."""
    d, u2s = data
    res = train_classifier(source(d), u2s, cfg(epochs=4, keep_checkpoints=1, average_last=3), tmp_path / "avg",
                           valid_utts=[], progress=False)
    kept = sorted(p.name for p in (tmp_path / "avg" / "checkpoints").iterdir())
    assert kept == ["epoch_2.pt", "epoch_3.pt", "epoch_4.pt"]
    eps = [ckpt.load(tmp_path / "avg" / "checkpoints" / n)["model"] for n in kept]
    final = ckpt.load(tmp_path / "avg" / "final.pt")
    assert final["averaged_epochs"] == [2, 3, 4]
    floats = [k for k, v in final["model"].items() if v.is_floating_point()]
    assert floats and any(not torch.equal(eps[0][k], eps[2][k]) for k in floats)
    for k, v in final["model"].items():
        want = (sum(e[k].double() for e in eps) / 3).to(v.dtype) if v.is_floating_point() else eps[2][k]
        assert torch.allclose(v, want, rtol=1e-6, atol=1e-7), k
    # the model returned is the averaged one
    assert all(torch.equal(res.model.state_dict()[k], final["model"][k]) for k in floats)
    # off: the last epoch's weights, and pruning keeps only keep_checkpoints
    train_classifier(source(d), u2s, cfg(epochs=4, keep_checkpoints=1), tmp_path / "last", valid_utts=[],
                     progress=False)
    last = ckpt.load(tmp_path / "last" / "final.pt")
    assert last["averaged_epochs"] is None
    assert sorted(p.name for p in (tmp_path / "last" / "checkpoints").iterdir()) == ["epoch_4.pt"]
    assert all(torch.equal(last["model"][k], eps[2][k]) for k in floats)   # same seed: same last epoch
