"""The emotion systems, written once: per system its name, method, input features,
the x-vector model it starts from, its row label in the paper's Table 2 wording,
whether it is a paper row or a reference row, and the paper's figures for it.

Stage 5 (:mod:`pyxv.emotion.systems`, ``pyxv.bin.train_emotion``), cross-corpus
evaluation (:mod:`pyxv.emotion.crosscorpus`), the report (:mod:`pyxv.report`) and
run.sh (through ``python -m pyxv.bin.train_emotion --list-systems``) read this
table; nothing else takes a system's name apart. Standard library only, so the
shell can list the systems without loading numpy or torch.

    randinit_gemaps   x-vector architecture, random init, frame-level GeMAPS LLDs (25/frame)
    randinit_mfcc     the same on MFCC (sliding CMN + VAD, as the x-vector's input)
    frozen_lr_clean   x-vectors of ResNet-clean + logistic regression
    frozen_lr_aug     x-vectors of ResNet-aug + logistic regression
    finetune_clean    ResNet-clean, speaker layer replaced by an emotion layer, fine-tuned
    finetune_aug      the same from ResNet-aug
    ref_egemaps_lr    the 88 eGeMAPS functionals of each utterance + logistic regression
    ref_mfccstats_lr  mean and std of the voiced frames' plain MFCC + logistic regression

A system trained on training data ``clean`` or ``clean+aug`` lives in
``<out>/<system>_<tag>/`` (:func:`system_dir_name`; tag ``clean`` or ``clean_aug``).
"""
from __future__ import annotations

from dataclasses import dataclass

# Methods
FROZEN_LR = "frozen_lr"    # x-vectors of a pre-trained model, left as they are, + logistic regression
FINETUNE = "finetune"      # the pre-trained network, speaker layer replaced by an emotion layer, trained on
RANDINIT = "randinit"      # the x-vector architecture trained on emotion from random weights
REFERENCE = "reference"    # hand-crafted utterance vectors + logistic regression (a baseline, not in the paper)
METHODS = (FROZEN_LR, FINETUNE, RANDINIT, REFERENCE)

# Input features (what the system reads from stage 2 or 4)
MFCC = "mfcc"              # frame-level MFCC + VAD (a fine-tuned network: its encoder's own front-end)
GEMAPS = "gemaps"          # frame-level GeMAPS low-level descriptors
XVECTOR = "xvector"        # stage 4's x-vectors
EGEMAPS = "egemaps"        # eGeMAPSv02 functionals, one vector per utterance
MFCC_STATS = "mfcc_stats"  # mean and std of the voiced frames' plain MFCC


@dataclass(frozen=True)
class SystemSpec:
    """One emotion system. ``xvector_model`` is the key of the emotion config's
    ``xvector_models`` the system starts from (``clean`` | ``aug``), None for a system
    that uses no pre-trained x-vector model."""

    name: str
    method: str
    features: str
    xvector_model: str | None
    label: str       # its row label: the paper's Table 2 wording, or what a reference is
    paper: bool      # a row of the paper's Table 2 (else a reference row)

    @property
    def logistic_regression(self) -> bool:
        """A back-end LR on one vector per utterance (frozen x-vectors, references)."""
        return self.method in (FROZEN_LR, REFERENCE)

    @property
    def report_label(self) -> str:
        """The row label in the report's tables (references marked as such)."""
        return self.label if self.paper else f"*Reference:* {self.label}"


# The paper's rows in its Table 2 order, then the reference rows.
SYSTEMS: tuple[SystemSpec, ...] = (
    SystemSpec("randinit_gemaps", RANDINIT, GEMAPS, None, "Random init ResNet, GeMAPS", True),
    SystemSpec("randinit_mfcc", RANDINIT, MFCC, None, "Random init ResNet, MFCC", True),
    SystemSpec("frozen_lr_clean", FROZEN_LR, XVECTOR, "clean", "ResNet-clean, frozen + LR", True),
    SystemSpec("frozen_lr_aug", FROZEN_LR, XVECTOR, "aug", "ResNet-aug, frozen + LR", True),
    SystemSpec("finetune_clean", FINETUNE, MFCC, "clean", "ResNet-clean, fine-tuned", True),
    SystemSpec("finetune_aug", FINETUNE, MFCC, "aug", "ResNet-aug, fine-tuned", True),
    SystemSpec("ref_egemaps_lr", REFERENCE, EGEMAPS, None, "eGeMAPS functionals + LR", False),
    SystemSpec("ref_mfccstats_lr", REFERENCE, MFCC_STATS, None, "MFCC mean/std + LR", False),
)
SYSTEM_NAMES: tuple[str, ...] = tuple(s.name for s in SYSTEMS)
PAPER_SYSTEMS: tuple[str, ...] = tuple(s.name for s in SYSTEMS if s.paper)
REFERENCE_SYSTEMS: tuple[str, ...] = tuple(s.name for s in SYSTEMS if not s.paper)
_BY_NAME = {s.name: s for s in SYSTEMS}


def system_spec(name: str) -> SystemSpec:
    """The spec of system ``name``; ValueError naming the systems for any other name."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown system '{name}' (one of {', '.join(SYSTEM_NAMES)})") from None


def is_system(name: str) -> bool:
    return name in _BY_NAME


# Pappagari, Wang, Villalba, Chen, Dehak, "X-vectors meet emotions: a study on
# dependencies between emotion and speaker recognition", ICASSP 2020, Table 2:
# weighted F1 (%) per paper system and corpus, (clean, clean+aug).
PAPER_TABLE2 = {
    "randinit_gemaps": {"iemocap": (45.14, 49.42), "msp_podcast": (51.36, 51.42), "crema_d": (74.44, 74.39)},
    "randinit_mfcc": {"iemocap": (39.58, 48.23), "msp_podcast": (50.47, 48.87), "crema_d": (72.93, 75.20)},
    "frozen_lr_clean": {"iemocap": (59.05, 54.56), "msp_podcast": (56.75, 57.10), "crema_d": (79.03, 78.86)},
    "frozen_lr_aug": {"iemocap": (56.11, 56.44), "msp_podcast": (52.58, 54.59), "crema_d": (75.65, 77.49)},
    "finetune_clean": {"iemocap": (65.95, 59.15), "msp_podcast": (57.42, 57.07), "crema_d": (76.00, 80.00)},
    "finetune_aug": {"iemocap": (60.25, 70.30), "msp_podcast": (58.46, 56.70), "crema_d": (80.55, 81.54)},
}
PAPER_CORPORA = (("iemocap", "IEMOCAP"), ("msp_podcast", "MSP-Podcast"), ("crema_d", "CREMA-D"))
PAPER_CITATION = ("R. Pappagari, T. Wang, J. Villalba, N. Chen, N. Dehak, \"X-vectors meet emotions: "
                  "a study on dependencies between emotion and speaker recognition\", ICASSP 2020, Table 2")


# ------------------------------------------------------------- training data
TRAIN_DATA = ("clean", "clean+aug")   # the fold's training utterances, or those plus their augmented copies


def data_tag(train_data: str) -> str:
    """Directory tag of a training-data option: 'clean' -> 'clean', 'clean+aug' -> 'clean_aug'."""
    if train_data not in TRAIN_DATA:
        raise ValueError(f"train data must be one of {TRAIN_DATA}, not '{train_data}'")
    return train_data.replace("+", "_")


TRAIN_DATA_TAGS = tuple((data_tag(d), d) for d in TRAIN_DATA)   # (directory tag, option)


def system_dir_name(system: str, train_data: str) -> str:
    """``<system>_<tag>``: the directory of a system trained on ``train_data``."""
    return f"{system}_{data_tag(train_data)}"


def split_system_dir_name(name: str) -> tuple[str, str] | None:
    """(system, directory tag) of a ``<system>_<tag>`` directory name (any system
    name, listed here or not), or None when the name ends in no training-data tag."""
    for tag, _ in sorted(TRAIN_DATA_TAGS, key=lambda t: -len(t[0])):   # clean_aug before clean
        if name.endswith("_" + tag):
            return name[: -len(tag) - 1], tag
    return None


def list_systems(paper_only: bool = False, methods=None) -> list[str]:
    """``<name>\\t<label>`` lines, paper systems in Table 2 order, then the references;
    only the paper's with ``paper_only``, only those of ``methods`` when given."""
    return [f"{s.name}\t{s.label}" for s in SYSTEMS
            if (s.paper or not paper_only) and (methods is None or s.method in methods)]
