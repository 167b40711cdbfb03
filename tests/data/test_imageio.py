"""Every kind of image and mask file met in practice decodes to uint8 RGB / bool, or fails by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdsam.data.imageio import read_image, read_labels, read_mask
from kdsam.errors import BadFileError

from .conftest import grey, pair, save, truncate


@pytest.fixture
def img() -> np.ndarray:
    return pair("skin", 7)[0]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "1"])
def test_modes_read_as_rgb_uint8(tmp_path: Path, img: np.ndarray, mode: str) -> None:
    out = read_image(save(tmp_path / "x.png", img, mode))
    assert out.shape == (64, 80, 3) and out.dtype == np.uint8


def test_rgba_drops_alpha(tmp_path: Path, img: np.ndarray) -> None:
    rgba = np.dstack([img, np.zeros(img.shape[:2], np.uint8)])  # fully transparent
    assert np.array_equal(read_image(save(tmp_path / "x.png", rgba)), img)


def test_greyscale_repeated_to_three_channels(tmp_path: Path, img: np.ndarray) -> None:
    out = read_image(save(tmp_path / "x.png", grey(img)))
    assert np.array_equal(out[..., 0], grey(img)) and np.array_equal(out[..., 0], out[..., 2])


def test_16bit_min_max_scaled(tmp_path: Path) -> None:
    ramp = np.linspace(1000, 3000, 64 * 80).reshape(64, 80).astype(np.uint16)
    path = save(tmp_path / "deep.png", ramp)
    with Image.open(path) as opened:
        assert opened.mode.startswith("I;16")
    out = read_image(path)[..., 0]
    assert out.min() == 0 and out.max() == 255
    assert (np.diff(out.ravel().astype(int)) >= 0).all()  # order of intensities kept


def test_max_side_applies_to_every_kind(tmp_path: Path, img: np.ndarray) -> None:
    deep = save(tmp_path / "deep.png", grey(img).astype(np.uint16) * 100)
    jpeg = save(tmp_path / "big.jpg", np.asarray(Image.fromarray(img).resize((800, 640))))
    rgba = save(tmp_path / "x.png", img, "RGBA")
    for path in (deep, jpeg, rgba):
        assert read_image(path, max_side=40).shape == (32, 40, 3), path.name


def test_jpeg_mask_binarised_at_128(tmp_path: Path) -> None:
    arr = np.array([[0, 100, 127, 128, 200, 255]], np.uint8)
    assert read_mask(save(tmp_path / "m.png", arr)).tolist() == [[False, False, False, True, True, True]]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "1", "P"])
def test_mask_modes_reduced_to_one_channel(tmp_path: Path, mode: str) -> None:
    mask = pair("skin", 7)[1]
    assert np.array_equal(read_mask(save(tmp_path / "m.png", mask, mode)), mask)


def test_label_maps(tmp_path: Path) -> None:
    mask = pair("skin", 7)[1]
    assert np.array_equal(read_mask(save(tmp_path / "01.png", mask.astype(np.uint8))), mask)
    assert np.array_equal(read_mask(save(tmp_path / "16.png", mask.astype(np.uint16) * 1000)), mask)
    palette = Image.fromarray(mask.astype(np.uint8), "L").convert("P")
    palette.putpalette([0, 0, 0, 128, 0, 0])  # a dark label colour: still foreground
    palette.save(tmp_path / "p.png")
    assert np.array_equal(read_mask(tmp_path / "p.png"), mask)
    labels = mask.astype(np.uint8) * 2  # labels 1..K (here 2 and 3) all read as foreground, not as empty
    labels[: mask.shape[0] // 2] *= 3 // 2 + 1
    labels[labels == 4] = 3
    assert set(np.unique(labels)) == {0, 2, 3}
    assert np.array_equal(read_mask(save(tmp_path / "labels.png", labels)), mask)


def test_truncated_and_missing_files_named(tmp_path: Path, img: np.ndarray) -> None:
    for suffix in ("png", "jpg"):
        path = truncate(save(tmp_path / f"cut.{suffix}", img))
        with pytest.raises(BadFileError, match=rf"cut\.{suffix}: unreadable or truncated"):
            read_image(path)
    with pytest.raises(BadFileError, match=r"gone\.png: file not found"):
        read_mask(tmp_path / "gone.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(BadFileError, match=r"text\.png"):
        read_image(tmp_path / "text.png")


def test_read_labels_keeps_label_values(tmp_path: Path) -> None:
    labels = np.zeros((6, 8), np.uint8)
    labels[1:3, 1:4], labels[3:5, 4:7] = 1, 3
    assert np.array_equal(read_labels(save(tmp_path / "k.png", labels)), labels)
    assert np.array_equal(read_labels(save(tmp_path / "b.png", (labels > 0).astype(np.uint8) * 255)), labels > 0)
    wide = labels.astype(np.uint16)
    assert np.array_equal(read_labels(save(tmp_path / "w.png", wide)), labels)
    palette = Image.fromarray(labels, "P")
    palette.putpalette([0, 0, 0, 128, 0, 0, 0, 0, 0, 0, 128, 0])  # index 2 is black too: background
    palette.save(tmp_path / "p.png")
    assert np.array_equal(read_labels(tmp_path / "p.png"), labels)


def test_a_grey_palette_mask_reads_as_the_grey_mask_it_shows(tmp_path: Path) -> None:
    """PIL's L -> P keeps grey levels as indices: white 255 on black is label 1, not label 255, and
    small grey levels stay labels; a coloured palette keeps its indices (test above)."""
    labels = np.zeros((6, 8), np.uint8)
    labels[1:3, 1:4], labels[3:5, 4:7] = 1, 3
    Image.fromarray((labels > 0).astype(np.uint8) * 255, "L").convert("P").save(tmp_path / "white.png")
    assert np.array_equal(read_labels(tmp_path / "white.png"), (labels > 0).astype(np.uint8))
    Image.fromarray(labels, "L").convert("P").save(tmp_path / "levels.png")
    assert np.array_equal(read_labels(tmp_path / "levels.png"), labels)
