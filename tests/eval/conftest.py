"""A tiny synthetic folder dataset (written once per session) and saved-prediction folders for it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from kdsam.data import open_dataset
from kdsam.data.imageio import read_mask, write_png
from kdsam.data.synthetic import write_synthetic


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """write_synthetic(n=4): polyp_0000, skin_0001, fetal_head_0002, breast_lesion_0003."""
    return write_synthetic(tmp_path_factory.mktemp("eval") / "syn", 4)


@pytest.fixture
def messy_root(synthetic_root: Path, tmp_path: Path) -> Path:
    """The synthetic folder plus an empty-mask image (BUSI 'normal'-like) and a truncated image."""
    root = tmp_path / "messy"
    shutil.copytree(synthetic_root, root)
    image = (root / "images" / "skin_0001.png").read_bytes()
    (root / "images" / "normal (1).png").write_bytes(image)
    write_png(root / "masks" / "normal (1).png", np.zeros(read_mask(root / "masks" / "skin_0001.png").shape, bool))
    (root / "images" / "broken.png").write_bytes(image[: len(image) // 3])
    shutil.copy(root / "masks" / "skin_0001.png", root / "masks" / "broken.png")
    return root


def truth_predictions(root: Path, folder: Path) -> Path:
    """Ground truth saved as predictions (a perfect model), one PNG per labelled sample."""
    for sample in open_dataset(f"folder:{root}").samples():
        write_png(folder / f"{sample.name}.png", sample.mask)
    return folder
