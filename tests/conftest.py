"""Shared fixtures: where the read-only shared corpora are, and skips when absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PYXV_SHARED", REPO.parent / "shared"))
RAVDESS = SHARED / "corpora" / "ravdess"
CREMA_META = SHARED / "corpora" / "crema_d_meta"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ravdess_root() -> Path:
    if not (RAVDESS / "Actor_01").is_dir():
        pytest.skip(f"real RAVDESS clips not found at {RAVDESS} (../shared/corpora is absent)")
    return RAVDESS


@pytest.fixture(scope="session")
def crema_meta() -> Path:
    if not (CREMA_META / "VideoDemographics.csv").is_file():
        pytest.skip(f"CREMA-D metadata not found at {CREMA_META} (../shared/corpora is absent)")
    return CREMA_META
