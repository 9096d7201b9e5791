"""conf/sv.yaml through the project's one schema (pyxv.sv.config): defaults in one place, bad keys and types named."""
from __future__ import annotations

import subprocess
import sys

import pytest

from pyxv.backend.pipeline import DEFAULT_CONFIG
from pyxv.config import ConfigError
from pyxv.sv.config import load_sv_config, validate_sv_config
from pyxv.sv.scoring import BLOCK_SIZE, HIST_BINS, MAX_EXACT_TRIALS


def test_conf_sv_yaml_spells_out_the_defaults(repo_root):
    """The shipped file lists every setting at its default: the file and the code cannot drift apart."""
    defaults = validate_sv_config(None)
    assert defaults == {**DEFAULT_CONFIG, "block_size": BLOCK_SIZE, "max_exact_trials": MAX_EXACT_TRIALS,
                        "hist_bins": HIST_BINS}
    assert load_sv_config(repo_root / "conf/sv.yaml") == defaults
    emo = load_sv_config(repo_root / "conf/sv_emotion.yaml")
    assert emo["nap"]["enabled"] and emo["nap"]["dim"] == 8 and emo["asnorm"]["emotion_aware"]


def test_partial_file_takes_the_defaults_for_the_rest(tmp_path):
    f = tmp_path / "sv.yaml"
    f.write_text("plda:\n  lda_dim: 8\ncalibration:\n  prior: 1\nblock_size: 512\n")
    cfg = load_sv_config(f)
    assert cfg["plda"] == {**DEFAULT_CONFIG["plda"], "lda_dim": 8}
    assert cfg["calibration"]["prior"] == 1.0 and isinstance(cfg["calibration"]["prior"], float)
    assert cfg["block_size"] == 512 and cfg["hist_bins"] == HIST_BINS and cfg["seed"] == DEFAULT_CONFIG["seed"]


@pytest.mark.parametrize("text, message", [
    ("plda:\n  lda_dim: fast\n", "plda.lda_dim: expected int, got 'fast'"),
    ("block_size: big\n", "block_size: expected int, got 'big'"),
    ("asnorm:\n  enabled: 1\n", "asnorm.enabled: expected bool, got 1"),
    ("nap:\n  dim: -2\n", "nap.dim: expected 'auto' or a number of dimensions, got -2"),
    ("nap:\n  dim_criterion: best\n", "nap.dim_criterion: 'best' is not one of cross, all, mean"),
    ("nap:\n  dim_candidates: [0, two]\n", "nap.dim_candidates: expected a list of integers"),
    ("plda:\n  n_itr: 3\n", "plda.n_itr: unknown key (known: center, lda_dim, whiten, length_norm, n_iter)"),
    ("seeds: 1\n", "seeds: unknown key (known: cosine, plda, nap, asnorm, calibration, threshold, seed, "),
    ("threshold: 3000\n", "threshold: expected a mapping of options, got 3000"),
])
def test_bad_settings_name_the_file_and_the_dotted_key(tmp_path, text, message):
    f = tmp_path / "sv.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_sv_config(f)
    assert str(e.value).startswith(f"{f}: {message}")


def test_nap_dim_takes_auto_or_a_number(tmp_path):
    f = tmp_path / "sv.yaml"
    for value, want in (("auto", "auto"), ("0", 0), ("12", 12)):
        f.write_text(f"nap:\n  dim: {value}\n")
        assert load_sv_config(f)["nap"]["dim"] == want


def test_score_sv_reports_a_bad_config_in_one_line(tmp_path):
    f = tmp_path / "sv.yaml"
    f.write_text("cosine:\n  whiten: maybe\n")
    r = subprocess.run([sys.executable, "-m", "pyxv.bin.score_sv", "--config", str(f), str(tmp_path / "x"),
                        str(tmp_path / "d"), str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip() == f"score_sv.py: error: {f}: cosine.whiten: expected bool, got 'maybe'"
    missing = subprocess.run([sys.executable, "-m", "pyxv.bin.score_sv", "--config", str(tmp_path / "none.yaml"),
                              "x", "d", str(tmp_path / "out")], capture_output=True, text=True)
    assert missing.returncode == 1 and "config " + str(tmp_path / "none.yaml") + " does not exist" in missing.stderr
