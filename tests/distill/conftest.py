"""Fixtures for the distillation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdsam.data import open_dataset
from kdsam.data.synthetic import write_synthetic
from kdsam.models.sam import KDSam
from tests.distill.tiny import make_tiny_teacher


@pytest.fixture
def tiny_teacher() -> KDSam:
    return make_tiny_teacher()


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("synthetic"), n=12)


@pytest.fixture
def splits(synthetic_root: Path):
    location = f"folder:{synthetic_root}"
    return {s: open_dataset(location, s, max_side=128) for s in ("train", "val", "test")}
