"""Tiny datasets (64x80 px, a handful of images) written in each published layout, traps included.

Images come from kdsam.data.synthetic, downsized; each fixture returns the folder a user would
point kdsam at. Shapes and positions the tests check against are stored beside (see HC18_HEADS).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdsam.data.prompts import box_around
from kdsam.data.synthetic import synthesize

H, W = 64, 80

# HC18 heads: name -> (centre x, centre y, semi-axis a, semi-axis b, angle); "open" has a gap.
HC18_HEADS = {
    "000_HC": (40.0, 32.0, 28.0, 20.0, 0.3),
    "001_HC": (38.0, 30.0, 24.0, 16.0, 0.0),
    "001_2HC": (42.0, 33.0, 26.0, 22.0, 1.2),
    "010_HC": (40.0, 32.0, 30.0, 21.0, -0.5),  # its outline is left open
}
HC18_OPEN = "010_HC"


@cache
def _pair(modality: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    img, mask = synthesize(modality, seed)
    small = np.asarray(Image.fromarray(img).resize((W, H), Image.Resampling.BILINEAR))
    small_mask = np.asarray(Image.fromarray(mask).resize((W, H), Image.Resampling.NEAREST))
    return small, small_mask.astype(bool)


def pair(modality: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A downsized synthetic (image, mask); copies, so a test may modify them."""
    img, mask = _pair(modality, seed)
    return img.copy(), mask.copy()


def save(path: Path, array: np.ndarray, mode: str | None = None, **kwargs) -> Path:
    """Write an array (bool -> 0/255) as the image its suffix says, in `mode` if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = array.astype(np.uint8) * 255 if array.dtype == bool else array
    img = Image.fromarray(arr)
    (img.convert(mode) if mode else img).save(path, **kwargs)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file short, as an interrupted download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def grey(img: np.ndarray) -> np.ndarray:
    return img.mean(axis=2).astype(np.uint8)


@pytest.fixture
def kvasir_root(tmp_path: Path) -> Path:
    """Kvasir-SEG/: JPEG images and JPEG masks (grey edges), kavsir_bboxes.json; traps: a truncated
    image, an image without mask, a mask of the wrong size, and an id missing from the box file."""
    root = tmp_path / "Kvasir-SEG"
    boxes = {}
    for i in range(6):
        name = f"cju{i}polyp"
        img, mask = pair("polyp", i)
        save(root / "images" / f"{name}.jpg", img, quality=90)
        save(root / "masks" / f"{name}.jpg", mask, quality=75)
        x0, y0, x1, y1 = (int(v) for v in box_around(mask))
        boxes[name] = {
            "height": H,
            "width": W,
            "bbox": [{"label": "polyp", "xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1}],
        }
    del boxes["cju5polyp"]
    (root / "kavsir_bboxes.json").write_text(json.dumps(boxes))
    img, mask = pair("polyp", 10)
    truncate(save(root / "images" / "cjutruncated.jpg", img))
    save(root / "masks" / "cjutruncated.jpg", mask)
    save(root / "images" / "cjunomask.jpg", img)
    save(root / "images" / "cjuwrongsize.jpg", img)
    save(root / "masks" / "cjuwrongsize.jpg", np.zeros((H // 2, W // 2), bool))
    return root


@pytest.fixture
def isic_root(tmp_path: Path) -> Path:
    """The three ISIC 2017 split folder pairs; traps: _superpixels.png files and the metadata CSV in
    the data folders, and a training image whose _segmentation.png is missing."""
    root = tmp_path / "isic"
    counts = {"Training": 4, "Validation": 2, "Test_v2": 2}
    index = 0
    for part, n in counts.items():
        data, truth = root / f"ISIC-2017_{part}_Data", root / f"ISIC-2017_{part}_Part1_GroundTruth"
        data.mkdir(parents=True)
        (data / f"ISIC-2017_{part}_Data_metadata.csv").write_text("image_id,age_approximate,sex\n")
        for _ in range(n):
            name = f"ISIC_{index:07d}"
            img, mask = pair("skin", 100 + index)
            save(data / f"{name}.jpg", img)
            save(data / f"{name}_superpixels.png", np.dstack([img[..., 0], img[..., 1], np.zeros_like(img[..., 0])]))
            if name != "ISIC_0000003":
                save(truth / f"{name}_segmentation.png", mask)
            index += 1
    return root


def ellipse_rho(head: tuple[float, float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: the ellipse's normalised radius (1 on the ellipse) and polar angle."""
    xc, yc, a, b, theta = head
    yy, xx = np.mgrid[:H, :W]
    u = ((xx - xc) * np.cos(theta) + (yy - yc) * np.sin(theta)) / a
    v = (-(xx - xc) * np.sin(theta) + (yy - yc) * np.cos(theta)) / b
    return np.sqrt(u**2 + v**2), np.arctan2(v, u)


def _outline(head: tuple[float, float, float, float, float], gap: bool) -> np.ndarray:
    """An ellipse outline about 2 px thick, as HC18 draws it; with a gap of ~25 degrees if asked."""
    rho, angle = ellipse_rho(head)
    line = np.abs(rho - 1.0) < 1.0 / min(head[2:4])
    if gap:
        line &= ~(np.abs(angle - 1.0) < 0.22)
    return line


@pytest.fixture
def hc18_root(tmp_path: Path) -> Path:
    """training_set/ (greyscale PNGs, outline annotations, one left open), the pixel size/HC CSV,
    and test_set/ with images but no annotations."""
    root = tmp_path / "hc18"
    rows = ["filename,pixel size(mm),head circumference (mm)"]
    for i, (name, head) in enumerate(HC18_HEADS.items()):
        img, _ = pair("fetal_head", 200 + i)
        save(root / "training_set" / f"{name}.png", grey(img))
        save(root / "training_set" / f"{name}_Annotation.png", _outline(head, gap=name == HC18_OPEN))
        rows.append(f"{name}.png,{0.1 + i / 100:.2f},{150 + i}.5")
    (root / "training_set_pixel_size_and_HC.csv").write_text("\n".join(rows) + "\n")
    img, _ = pair("fetal_head", 300)
    save(root / "test_set" / "500_HC.png", grey(img))
    (root / "test_set_pixel_size.csv").write_text("filename,pixel size(mm)\n500_HC.png,0.1\n")
    return root


@pytest.fixture
def busi_root(tmp_path: Path) -> Path:
    """Dataset_BUSI_with_GT/ under the folder the archive unpacked into. Traps: names with spaces
    and parentheses, a second lesion in _mask_1, RGB and RGBA masks, normal images with empty masks."""
    root = tmp_path / "busi" / "Dataset_BUSI_with_GT"
    for label, n in (("benign", 3), ("malignant", 2), ("normal", 2)):
        for i in range(1, n + 1):
            stem = root / label / f"{label} ({i})"
            img, mask = pair("breast_lesion", 400 + 10 * len(label) + i)
            save(stem.with_name(f"{stem.name}.png"), img, "RGB")
            if label == "normal":
                mask[:] = False
            save(stem.with_name(f"{stem.name}_mask.png"), mask, "RGBA" if label == "malignant" else "L")
    second = np.zeros((H, W), bool)
    second[2:10, 3:15] = True
    save(root / "benign" / "benign (2)_mask_1.png", second, "RGB")
    return root.parent


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """images/ + masks/ with every kind of file met in practice: greyscale, RGBA, palette and
    16-bit images, a truncated image, a mask of another size, an image with no mask."""
    root = tmp_path / "mixed"
    img, mask = pair("polyp", 500)
    save(root / "images" / "rgb.png", img)
    save(root / "images" / "grey.png", grey(img))
    save(root / "images" / "rgba.png", img, "RGBA")
    save(root / "images" / "palette.png", img, "P")
    save(root / "images" / "deep.png", grey(img).astype(np.uint16) * 200 + 1000)
    truncate(save(root / "images" / "truncated.png", img))
    save(root / "images" / "wrongsize.png", img)
    save(root / "images" / "nomask.png", img)
    for name in ("rgb", "grey", "rgba", "palette", "deep", "truncated"):
        save(root / "masks" / f"{name}.png", mask)
    save(root / "masks" / "wrongsize.png", mask[: H // 2])
    return root
