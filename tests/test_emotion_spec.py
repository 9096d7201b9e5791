"""The table of emotion systems (pyxv.emotion.spec) and the command that prints it for run.sh."""
import subprocess
import sys

import pytest

from pyxv.emotion.spec import (FINETUNE, FROZEN_LR, PAPER_SYSTEMS, PAPER_TABLE2, REFERENCE, REFERENCE_SYSTEMS,
                               SYSTEMS, list_systems, split_system_dir_name, system_dir_name, system_spec)

PAPER_ORDER = ["randinit_gemaps", "randinit_mfcc", "frozen_lr_clean", "frozen_lr_aug", "finetune_clean",
               "finetune_aug"]


def test_table_order_and_kinds():
    assert list(PAPER_SYSTEMS) == PAPER_ORDER and set(PAPER_TABLE2) == set(PAPER_SYSTEMS)
    assert list(REFERENCE_SYSTEMS) == ["ref_egemaps_lr", "ref_mfccstats_lr"]
    assert [s.name for s in SYSTEMS] == PAPER_ORDER + list(REFERENCE_SYSTEMS)
    for s in SYSTEMS:
        # a system starts from an x-vector model exactly when it reuses one
        assert (s.xvector_model is not None) == (s.method in (FROZEN_LR, FINETUNE)), s
        assert s.logistic_regression == (s.method in (FROZEN_LR, REFERENCE)), s
        assert s.paper == (s.method != REFERENCE), s
    assert system_spec("finetune_aug").xvector_model == "aug"
    with pytest.raises(ValueError, match="unknown system 'nope' \\(one of randinit_gemaps, "):
        system_spec("nope")


def test_system_dir_names_round_trip():
    for s in SYSTEMS:
        for data, tag in (("clean", "clean"), ("clean+aug", "clean_aug")):
            assert split_system_dir_name(system_dir_name(s.name, data)) == (s.name, tag)
    assert split_system_dir_name("frozen_lr_tiny_clean_aug") == ("frozen_lr_tiny", "clean_aug")
    assert split_system_dir_name("cross") is None


def test_list_systems_command():
    """run.sh reads '<name>\\t<label>' lines: the paper's six in Table 2 order, then the references."""
    def run(*args):
        p = subprocess.run([sys.executable, "-m", "pyxv.bin.train_emotion", "--list-systems", *args],
                           capture_output=True, text=True, check=True)
        return [line.split("\t") for line in p.stdout.splitlines()]

    every = run()
    assert every == [[s.name, s.label] for s in SYSTEMS]
    assert every[2] == ["frozen_lr_clean", "ResNet-clean, frozen + LR"]
    assert run("--paper-only") == every[:6] and [n for n, _ in every[:6]] == PAPER_ORDER
    assert list_systems(paper_only=True) == ["\t".join(x) for x in every[:6]]
    # the networks (the systems with work for a GPU)
    assert [n for n, _ in run("--method", "randinit,finetune")] == [
        "randinit_gemaps", "randinit_mfcc", "finetune_clean", "finetune_aug"]
