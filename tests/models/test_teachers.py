"""The teacher registry, the bundled LiteMedSAM weights, and one-line errors for bad checkpoints."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from kdsam.cli import main
from kdsam.data.imageio import write_png
from kdsam.data.prompts import box_around
from kdsam.errors import KdsamError
from kdsam.eval.metrics import dice
from kdsam.models.sam import KDSam
from kdsam.models.teachers import TEACHERS, build_architecture, load_teacher
from kdsam.predictor import KDSamPredictor

from .conftest import tiny_sam

SLOW = os.environ.get("KDSAM_SLOW_TESTS") == "1"
SMALL = {"litemedsam", "mobilesam"}  # ViT-B/L/H take seconds to minutes just to initialise


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_every_registry_entry_is_complete_and_builds(name: str) -> None:
    spec = TEACHERS[name]
    assert spec.checkpoint_file.endswith((".pth", ".pt")) and spec.source
    assert spec.normalization in ("imagenet", "minmax") and spec.resize_mode in ("longest", "squash")
    if name not in SMALL and not SLOW:
        pytest.skip("large architecture: set KDSAM_SLOW_TESTS=1 to build it")
    model = build_architecture(name)
    assert isinstance(model, KDSam) and model.name == name and model.spec["weights"] == "random"
    assert (model.normalization, model.resize_mode) == (spec.normalization, spec.resize_mode)
    assert model.prompt_encoder.input_image_size == (model.img_size, model.img_size)
    if SLOW and name in SMALL:  # ViT-H alone takes a minute at 1024 px on 2 cores
        with torch.no_grad():
            out = model.eval().image_encoder(torch.zeros(1, 3, model.img_size, model.img_size))
        assert out.shape == (1, 256, 64, 64)


def test_litemedsam_segments_a_synthetic_polyp(litemedsam: KDSam, polyp) -> None:
    image, truth = polyp
    assert litemedsam.spec["sha256"] and not any(p.requires_grad for p in litemedsam.parameters())
    predictor = KDSamPredictor(litemedsam)
    predictor.set_image(image)
    assert predictor.features.shape == (1, 256, 64, 64)
    assert dice(predictor.segment(box_around(truth)[None]), truth) > 0.9


def truncated(path: Path) -> Path:
    """A real checkpoint cut to its first 1000 bytes, as an interrupted download leaves it."""
    torch.save(tiny_sam().state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    return path


def text_file(path: Path) -> Path:
    path.write_text("<html>404 Not Found</html>\n")
    return path


def assert_one_line_naming(err: KdsamError, *parts: str) -> None:
    text = str(err)
    assert "\n" not in text
    for part in parts:
        assert part in text


@pytest.mark.parametrize(("name", "official"), [("sam_vit_b", "sam_vit_b_01ec64.pth"), ("mobilesam", "mobile_sam.pt")])
def test_missing_checkpoint_names_the_official_file(tmp_path: Path, name: str, official: str) -> None:
    with pytest.raises(KdsamError) as err:
        load_teacher(name)
    assert_one_line_naming(err.value, official, "download")
    with pytest.raises(KdsamError) as err:
        load_teacher(name, tmp_path / "nope.pth")
    assert_one_line_naming(err.value, official, "nope.pth")


@pytest.mark.parametrize("make", [truncated, text_file], ids=["truncated", "text"])
def test_unreadable_checkpoint_is_one_line(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    path = make(tmp_path / "weights.pth")
    with pytest.raises(KdsamError) as err:
        load_teacher("litemedsam", path)
    assert_one_line_naming(err.value, str(path), "not a readable")


@pytest.fixture(scope="module")
def foreign_checkpoint(litemedsam: KDSam, tmp_path_factory) -> Path:
    """LiteMedSAM's weights under a name a user might pass to another teacher."""
    path = tmp_path_factory.mktemp("ckpt") / "mobile_sam.pt"
    torch.save(litemedsam.state_dict(), path)
    return path


def test_checkpoint_of_another_model_is_refused(foreign_checkpoint: Path) -> None:
    with pytest.raises(KdsamError) as err:
        load_teacher("mobilesam", foreign_checkpoint)
    assert_one_line_naming(err.value, str(foreign_checkpoint), "not a mobilesam")
    assert "missing" in str(err.value) or "wrong shape" in str(err.value)


def write_image(path: Path) -> Path:
    write_png(path, np.full((48, 64, 3), 128, np.uint8))
    return path


def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path: Path, foreign_checkpoint: Path, capsys) -> None:
    image = write_image(tmp_path / "image.png")
    out = tmp_path / "mask.png"
    argv = ["predict", "--image", str(image), "--box", "4,4,40,40", "--out", str(out)]
    assert main([*argv, "--model", f"teacher:mobilesam={foreign_checkpoint}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(foreign_checkpoint) in err and "Traceback" not in err
    assert not out.exists()
