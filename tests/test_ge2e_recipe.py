"""An imported GE2E encoder through the recipe's own steps, on real RAVDESS clips:
extraction (steps/extract_xvectors.sh), frozen + LR and fine-tuning (stage 5's
run_fold), adaptation (steps/train_xvector.sh --init-from), and inference
(``pyxv embed|emotion``) giving the recipe's vectors and posteriors."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

EMO = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}


def _clips(root: Path, actors, per_emotion=2):
    out = []
    for a in actors:
        for code, emo in EMO.items():
            for f in sorted((root / f"Actor_{a:02d}").glob(f"03-01-{code}-*-*-*-{a:02d}.*"))[:per_emotion]:
                out.append((f"a{a:02d}-{f.stem}", str(f), f"a{a:02d}", emo))
    return out


@pytest.fixture(scope="module")
def recipe(ravdess_root, tmp_path_factory, repo_root):
    pytest.importorskip("resemblyzer", reason="the GE2E weights come from the resemblyzer package here "
                                              "(tests/run.sh installs it)")
    from pyxv.datadir import write_datadir
    from pyxv.train.import_encoder import import_ge2e

    root = tmp_path_factory.mktemp("ge2e_recipe")
    exp = root / "exp"
    import_ge2e(exp / "xvector_clean", download=False)
    train, test = _clips(ravdess_root, range(1, 5)), _clips(ravdess_root, (5, 6))
    emo = root / "data" / "ravdess"
    for name, cs in (("all", train + test), ("fold1/train", train), ("fold1/test", test)):
        write_datadir(emo / name, utt2spk={u: s for u, _, s, _ in cs}, wav_scp={u: p for u, p, _, _ in cs},
                      utt2emo={u: e for u, _, _, e in cs},
                      spk2gender={s: "m" if int(s[1:]) % 2 else "f" for _, _, s, _ in cs})
    xdir = exp / "xvector_clean" / "xvectors_ravdess" / "all"
    r = subprocess.run(["steps/extract_xvectors.sh", "--nj", "2", str(exp / "xvector_clean"), str(emo / "all"),
                        str(xdir)], cwd=repo_root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return dict(root=root, exp=exp, emo=emo, xdir=xdir, train=train, test=test)


def test_extraction_step_equals_pyxv_embed(recipe, tmp_path):
    import kaldiio

    from pyxv.cli import main as cli

    rec = {k: np.asarray(v) for k, v in kaldiio.load_scp(str(recipe["xdir"] / "xvector.scp")).items()}
    assert len(rec) == len(recipe["train"]) + len(recipe["test"])
    assert all(v.shape == (256,) and abs(np.linalg.norm(v) - 1) < 1e-4 for v in rec.values())
    out = tmp_path / "emb.ark"
    assert cli(["embed", str(recipe["exp"] / "xvector_clean"), str(recipe["emo"] / "all" / "wav.scp"), str(out)]) == 0
    cli_vecs = {k: np.asarray(v) for k, v in kaldiio.load_scp(str(out.with_suffix(".scp"))).items()}
    assert set(cli_vecs) == set(rec)
    for k in rec:
        np.testing.assert_allclose(cli_vecs[k], rec[k], atol=1e-5)
    # GE2E knows these real speakers: same-speaker pairs score above different-speaker ones on average
    keys = sorted(rec)
    X = np.stack([rec[k] for k in keys])
    spk = np.array([k[:3] for k in keys])
    S = X @ X.T
    same = (spk[:, None] == spk[None, :]) & ~np.eye(len(keys), dtype=bool)
    assert S[same].mean() > S[~same & (spk[:, None] != spk[None, :])].mean() + 0.05


@pytest.mark.parametrize("system", ["frozen_lr_clean", "finetune_clean"])
def test_emotion_systems_and_cli_posteriors(recipe, system):
    from pyxv.emotion import systems
    from pyxv.emotion.config import load_emotion_config
    from pyxv.inference import load_emotion_model

    cfg = load_emotion_config(None, overrides={
        "xvector_models": {"clean": str(recipe["exp"] / "xvector_clean"), "aug": str(recipe["exp"] / "xvector_clean")},
        "lr": {"cv_folds": 2},
        "finetune_by_type": {"ge2e_lstm": {"epochs": 1, "steps_per_epoch": 3, "batch_size": 8}}})
    out = recipe["root"] / "exp" / "emotion" / "ravdess"
    m = systems.run_fold(system, "clean", recipe["emo"], 1, out, cfg)
    assert m["n_test"] == len(recipe["test"])
    fold = systems.system_dir(out, system, "clean") / "fold1"
    classes = (fold / "classes.txt").read_text().split()
    rec = {ln.split()[0]: np.array([float(x) for x in ln.split()[1:]]) for ln in (fold / "posteriors").read_text().splitlines()}
    if system.startswith("finetune"):
        import torch

        ck = torch.load(fold / "final.pt", map_location="cpu", weights_only=True)
        assert ck["config"]["model"]["type"] == "ge2e_lstm" and ck["extra"]["features"] == "ge2e_mel"
        assert not (fold / "feats").exists()  # the fold's mel archives are removed after use
    model = load_emotion_model(fold)
    assert model.classes == classes
    names, P = model.posteriors([p for _, p, _, _ in recipe["test"]], [u for u, _, _, _ in recipe["test"]])
    for n, row in zip(names, P):
        np.testing.assert_allclose(row, rec[n], atol=2e-5)


def test_adaptation_step_from_the_imported_encoder(recipe, repo_root, tmp_path):
    """steps/train_xvector.sh --init-from: GE2E adapted on a few speakers with the
    speaker loss; its final.pt says where the weights came from."""
    import torch
    import yaml

    cfg = yaml.safe_load((repo_root / "conf" / "xvector_ge2e_adapt.yaml").read_text())
    cfg["train"].update(epochs=1, steps_per_epoch=2, batch_size=8)
    cfg["data"].update(min_utts_per_class=2, valid_per_class=0)
    conf = tmp_path / "adapt.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "xvector_aug"
    r = subprocess.run(["steps/train_xvector.sh", "--config", str(conf), "--init-from",
                        str(recipe["exp"] / "xvector_clean" / "final.pt"), str(recipe["emo"] / "fold1" / "train"),
                        str(out)], cwd=repo_root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    ck = torch.load(out / "final.pt", map_location="cpu", weights_only=True)
    assert ck["config"]["model"]["type"] == "ge2e_lstm" and len(ck["labels"]) == 4
    assert "resemblyzer" in ck["extra"]["adapted_from_imported"]
    # the feature preparation went through the GE2E front-end: 40 mel bands
    import kaldiio

    first = next(iter(kaldiio.load_scp(str(out / "feats" / "feats.scp")).values()))
    assert first.shape[1] == 40
    from pyxv.report.collect import Notes, xvector_model_info

    assert "adapted" in xvector_model_info(out, Notes())
    assert "imported, not adapted" in xvector_model_info(recipe["exp"] / "xvector_clean", Notes())
