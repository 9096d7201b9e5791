"""conf/emotion.yaml: the emotion options through pyxv.config, and the nnet section as
an override of the trainer's config (pyxv.emotion.config.trainer_config)."""
import copy

import pytest
import yaml

from pyxv.config import ConfigError
from pyxv.emotion.config import NNET_OPTIONS, load_emotion_config, nnet_options, trainer_config
from pyxv.nnet.config import load_config


def copied_by_hand(base: dict, cfg: dict, n: dict | None = None) -> dict:
    """trainer_config as it was written before the nnet options named their trainer
    keys: each key copied by hand. The reference the declared mapping must match."""
    out = copy.deepcopy(base)
    n = n or cfg["nnet"]
    out["model"]["loss"] = n["loss"]
    if n["loss"] == "asoftmax":
        out["model"]["margin"] = 2.0
    elif n["loss"] in ("amsoftmax", "aamsoftmax"):
        out["model"]["margin"] = 0.2
    out["data"].update(chunk_min=n["chunk_min"], chunk_max=n["chunk_max"], min_frames=n["min_frames"],
                       min_utts_per_class=1, valid_max_frames=n["valid_max_frames"], sampling="balanced")
    tr = out["train"]
    tr.update(seed=int(cfg["seed"]), epochs=int(n["epochs"]), steps_per_epoch=int(n["steps_per_epoch"]),
              batch_size=int(n["batch_size"]), lr=float(n["lr"]), weight_decay=float(n["weight_decay"]),
              warmup_steps=int(n["warmup_steps"]), pretrained_lr_mult=float(n["pretrained_lr_mult"]),
              freeze=n["freeze"], patience=int(n["patience"]), average_last=int(n["average_last"]),
              head_only_epochs=int(n["head_only_epochs"]), log_interval=10)
    if n.get("lr_schedule"):
        tr["lr_schedule"] = n["lr_schedule"]
    for k in ("keep_checkpoints",):
        if k in tr:
            tr[k] = 1
    return out


def test_trainer_config_is_the_hand_copied_one(repo_root):
    """Every emotion config of the recipe, every profile, random-init and fine-tuned
    (ResNet and GE2E) bases: the same trainer config, types and key order included."""
    from pyxv.emotion.systems import _final_nnet_config

    bases = [load_config(repo_root / "conf" / f"{name}.yaml")
             for name in ("xvector_demo", "xvector_resnet34", "xvector_ge2e_adapt")]
    n_checked = 0
    for conf in ("emotion.yaml", "emotion_long.yaml"):
        path = repo_root / "conf" / conf
        for profile in [None, *(yaml.safe_load(path.read_text()).get("profiles") or {})]:
            cfg = load_emotion_config(path, profile=profile)
            for c in (cfg, _final_nnet_config(cfg, 3)):
                for base in bases:
                    for etype in (None, base["model"]["type"]):
                        n = nnet_options(c, etype)
                        new, old = trainer_config(base, c, n), copied_by_hand(base, c, n)
                        assert yaml.safe_dump(new, sort_keys=False) == yaml.safe_dump(old, sort_keys=False)
                        n_checked += 1
    assert n_checked == 4 * 2 * 3 * 2     # (conf, profile) x folds/final x bases x encoder types
    for loss in ("asoftmax", "amsoftmax", "aamsoftmax"):
        c = load_emotion_config(None, overrides={"nnet": {"loss": loss, "lr_schedule": "cosine"}})
        assert trainer_config(bases[0], c) == copied_by_hand(bases[0], c)


def test_nnet_options_take_the_trainers_types_and_choices():
    assert NNET_OPTIONS["head_only_epochs"] == (0, "train.head_only_epochs")
    with pytest.raises(ConfigError, match=r"override: nnet\.freeze: 'all' is not one of none, embedding"):
        load_emotion_config(None, overrides={"nnet": {"freeze": "all"}})
    with pytest.raises(ConfigError, match=r"nnet\.lr_schedule: 'linear' is not one of exp, cosine, constant"):
        load_emotion_config(None, overrides={"nnet": {"lr_schedule": "linear"}})
    with pytest.raises(ConfigError, match=r"finetune_by_type\.ge2e_lstm\.epochs: expected int, got 'many'"):
        load_emotion_config(None, overrides={"finetune_by_type": {"ge2e_lstm": {"epochs": "many"}}})
    with pytest.raises(ConfigError, match=r"nnet\.epoch: unknown key \(known: architecture, epochs"):
        load_emotion_config(None, overrides={"nnet": {"epoch": 3}})
    cfg = load_emotion_config(None, overrides={"nnet": {"lr": 1}, "finetune_by_type": {"ge2e_lstm": {"lr": 2}}})
    assert cfg["nnet"]["lr"] == 1.0 and isinstance(cfg["nnet"]["lr"], float)
    assert cfg["finetune_by_type"]["ge2e_lstm"]["lr"] == 2.0 and cfg["finetune_by_type"]["ge2e_lstm"]["epochs"] == 12


def test_file_errors_name_the_file(tmp_path):
    p = tmp_path / "emo.yaml"
    p.write_text("lr:\n  transform: pca\n")
    with pytest.raises(ConfigError, match=r"emo\.yaml: lr\.transform: 'pca' is not one of none, whiten, lda"):
        load_emotion_config(p)
    p.write_text("nnet:\n  epochs: 3\nprofiles:\n  small:\n    nnet:\n      batch_size: big\n")
    assert load_emotion_config(p)["nnet"]["epochs"] == 3
    with pytest.raises(ConfigError, match=r"emo\.yaml: profiles\.small: nnet\.batch_size: expected int, got 'big'"):
        load_emotion_config(p, profile="small")
    with pytest.raises(ConfigError, match="config file does not exist"):
        load_emotion_config(tmp_path / "none.yaml")
