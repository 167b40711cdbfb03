"""`kdsam data inspect`: exit codes, the JSON report, and bad files reported by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdsam.cli import main
from kdsam.data.registry import ADAPTERS, VOLUME_KINDS

LAYOUTS = {
    "kvasir": "kvasir_root",
    "isic2017": "isic_root",
    "hc18": "hc18_root",
    "busi": "busi_root",
    "folder": "folder_root",
}


def _inspect(location: str, out: Path, *extra: str) -> tuple[int, dict]:
    code = main(["data", "inspect", location, "--json", str(out), *extra])
    return code, json.loads(out.read_text()) if out.exists() else {}


def test_every_real_layout_has_a_fixture() -> None:
    """2D layouts here; the volume layouts' fixtures are in test_volumes.py."""
    assert set(ADAPTERS) - {"synthetic"} == set(LAYOUTS) | set(VOLUME_KINDS)
    assert set(VOLUME_KINDS) == {"nnunet", "msd", "npz", "images"}


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
def test_report_shape(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    root = request.getfixturevalue(LAYOUTS[kind])
    code, report = _inspect(f"{kind}:{root}", tmp_path / "report.json")
    assert code == 0
    assert set(report) >= {"data", "n_records", "n_ok", "problems", "splits", "classes", "image_sizes"}
    assert report["n_ok"] + len(report["problems"]) == report["n_records"]
    assert set(report["splits"]) == {"train", "val", "test"}
    assert report["image_sizes"] == {"min_hw": [64, 80], "max_hw": [64, 80]}
    assert all(set(p) == {"name", "file", "error"} for p in report["problems"])


def test_bad_files_reported_by_name(folder_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, report = _inspect(f"folder:{folder_root}", tmp_path / "r.json")
    assert code == 0
    assert report["n_records"] == 8 and report["n_ok"] == 5  # grey, RGBA, palette, 16-bit load
    problems = {p["name"]: p for p in report["problems"]}
    assert set(problems) == {"truncated", "wrongsize", "nomask"}
    assert problems["truncated"]["file"].endswith("images/truncated.png")
    assert problems["wrongsize"]["file"].endswith("masks/wrongsize.png")
    out = capsys.readouterr().out
    assert "truncated:" in out and "problems (skipped)" in out


def test_classes_and_official_splits(busi_root: Path, isic_root: Path, tmp_path: Path) -> None:
    _, busi = _inspect(f"busi:{busi_root}", tmp_path / "b.json")
    assert busi["classes"] == {"benign": 3, "malignant": 2, "normal": 2}
    assert busi["n_empty_masks"] == 2
    _, isic = _inspect(f"isic2017:{isic_root}", tmp_path / "i.json")
    assert isic["splits"] == {"train": 4, "val": 2, "test": 2} and isic["classes"] == {}


def test_seed_and_split_file(kvasir_root: Path, tmp_path: Path) -> None:
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": ["cju0polyp", "cju1polyp"], "test": ["cju2polyp"]}))
    _, report = _inspect(f"kvasir:{kvasir_root}", tmp_path / "r.json", "--split-file", str(split_file))
    assert report["splits"] == {"train": 2, "val": 0, "test": 1}
    _, seeded = _inspect(f"kvasir:{kvasir_root}", tmp_path / "s.json", "--seed", "7")
    assert sum(seeded["splits"].values()) == 8


def test_wrong_layout_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "inspect", f"hc18:{tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "expected training_set/" in err
    assert main(["data", "inspect", f"nope:{tmp_path}"]) == 2
    assert main(["data", "inspect", f"busi:{tmp_path / 'missing'}"]) == 2


def test_nothing_readable_exits_1(folder_root: Path, tmp_path: Path) -> None:
    for mask in (folder_root / "masks").iterdir():
        mask.unlink()
    code, report = _inspect(f"folder:{folder_root}", tmp_path / "r.json")
    assert code == 1 and report["n_ok"] == 0 and report["image_sizes"]["min_hw"] is None


def test_label_maps_are_counted_per_label(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import numpy as np
    from PIL import Image

    from kdsam.data.imageio import write_png

    root = tmp_path / "organs"
    (root / "images").mkdir(parents=True)
    for i, present in enumerate(([1, 2], [2])):
        Image.fromarray(np.full((32, 40, 3), 90, np.uint8)).save(root / "images" / f"case{i}.png")
        labels = np.zeros((32, 40), np.uint8)
        for k in present:
            labels[4:20, 4 + 16 * (k - 1) : 18 + 16 * (k - 1)] = k
        write_png(root / "masks" / f"case{i}.png", labels)
    code, report = _inspect(f"folder:{root}", tmp_path / "r.json")
    assert code == 0 and report["labels"] == {"1": 1, "2": 2}
    assert "labels    1: 1 images  2: 2 images" in capsys.readouterr().out
