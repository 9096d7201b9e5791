"""pyxv.config: the one schema mechanism of the YAML configs."""
import pytest

from pyxv.config import ConfigError, Schema, check_value, read_yaml

SCHEMA = Schema(
    {"seed": 7, "name": None,
     "train": {"lr": 0.1, "epochs": 3, "amp": "auto", "on": True, "blocks": [1, 2], "grid": [0.5, 1.0],
               "schedule": None},
     "models": {"clean": "exp/clean"}},
    choices={"train.amp": ("auto", "none"), "train.schedule": ("exp", "constant")},
    nullable={"train.schedule": "exp"}, free={"models": "path"})


def test_merge_converts_and_keeps_defaults():
    cfg = SCHEMA.complete({"train": {"lr": 1, "schedule": "constant"}, "models": {"other": "exp/o"}})
    assert cfg["train"]["lr"] == 1.0 and isinstance(cfg["train"]["lr"], float)
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["schedule"] == "constant"
    assert cfg["models"] == {"clean": "exp/clean", "other": "exp/o"}
    assert SCHEMA.complete({"train": None})["train"] == SCHEMA.defaults["train"]   # an empty YAML section
    assert SCHEMA.complete({"name": ["anything"]})["name"] == ["anything"]          # None, no type declared
    assert SCHEMA.defaults["models"] == {"clean": "exp/clean"}                      # defaults untouched


@pytest.mark.parametrize("over,msg", [
    ({"train": {"lr": "fast"}}, "conf/x.yaml: train.lr: expected float, got 'fast'"),
    ({"train": {"epochs": 2.5}}, "train.epochs: expected int, got 2.5"),
    ({"train": {"epochs": True}}, "train.epochs: expected int, got True"),
    ({"train": {"on": 1}}, "train.on: expected bool, got 1"),
    ({"train": {"amp": "bf17"}}, "train.amp: 'bf17' is not one of auto, none"),
    ({"train": {"schedule": "cos"}}, "train.schedule: 'cos' is not one of exp, constant"),
    ({"train": {"schedule": 3}}, "train.schedule: expected str, got 3"),
    ({"train": {"blocks": [1, 2.0]}}, "train.blocks: expected a list of integers"),
    ({"train": {"grid": [1, "x"]}}, "train.grid: expected a list of numbers"),
    ({"train": {"lrr": 1}}, r"train.lrr: unknown key \(known: lr, epochs, amp, on, blocks, grid, schedule\)"),
    ({"optim": {}}, r"optim: unknown key \(known: seed, name, train, models\)"),
    ({"train": 3}, "train: expected a mapping of options, got 3"),
    ({"models": ["a"]}, "models: expected a mapping"),
    ({"models": {"aug": 1}}, "models.aug: expected str, got 1"),
])
def test_errors_name_the_key_and_the_file(over, msg):
    with pytest.raises(ConfigError, match=msg):
        SCHEMA.complete(over, where="conf/x.yaml: ")


def test_sections_only_and_notes():
    s = Schema({"model": {"heads": 2}, "data": {}}, unknown_note={"model": " of model type resnet"})
    with pytest.raises(ConfigError, match=r"^optim: unknown section \(known: model, data\)"):
        s.complete({"optim": {}})
    with pytest.raises(ConfigError, match=r"model\.head: unknown key of model type resnet \(known: heads\)"):
        s.complete({"model": {"head": 1}})


def test_partial_override_of_a_section():
    assert SCHEMA.partial("train", {"lr": 2, "amp": "none"}) == {"lr": 2.0, "amp": "none"}
    with pytest.raises(ConfigError, match=r"f\.g\.amp: 'x' is not one of"):
        SCHEMA.partial("train", {"amp": "x"}, shown="f.g")


def test_check_value_and_yaml(tmp_path):
    assert check_value("k", 3, 0.5) == 3.0 and check_value("k", None, None) is None
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ConfigError, match="nope.yaml: config file does not exist"):
        read_yaml(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        read_yaml(tmp_path / "bad.yaml")
    (tmp_path / "ok.yaml").write_text("a: 1\n")
    assert read_yaml(tmp_path / "ok.yaml") == {"a": 1}
