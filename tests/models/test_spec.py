"""The one MODEL grammar: every form parses to what it names, every command accepts it, the rest is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdsam.cli import main
from kdsam.data.synthetic import write_synthetic
from kdsam.errors import KdsamError
from kdsam.export.layout import CONFIG_FILE
from kdsam.models.loading import load_model, save_model
from kdsam.models.sam import KDSam
from kdsam.models.spec import ONNX_CONFIG_FILE, label_of, parse_model, parse_models


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    model = load_model("student:resnet18@64")
    assert isinstance(model, KDSam)
    save_model(model, run / "model.pt")
    return run


def test_every_form_parses(saved: Path, tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / ONNX_CONFIG_FILE).write_text("{}")
    got = {
        text: (s.kind, s.name, s.checkpoint, s.input_size, s.label)
        for text, s in ((t, parse_model(t)) for t in [
            "litemedsam",
            "sam_vit_b=/w/sam.pth",
            "teacher:medsam = /w/medsam.pth",
            "student:resnet18@64",
            "student:resnet50",
            str(saved),
            str(saved / "model.pt"),
            str(tmp_path / "export"),
        ])
    }  # fmt: skip
    assert got == {
        "litemedsam": ("teacher", "litemedsam", None, None, "teacher:litemedsam"),
        "sam_vit_b=/w/sam.pth": ("teacher", "sam_vit_b", "/w/sam.pth", None, "teacher:sam_vit_b"),
        "teacher:medsam = /w/medsam.pth": ("teacher", "medsam", "/w/medsam.pth", None, "teacher:medsam"),
        "student:resnet18@64": ("student", "resnet18", None, 64, "student:resnet18@64"),
        "student:resnet50": ("student", "resnet50", None, 512, "student:resnet50@512"),
        str(saved): ("saved", "", None, None, saved.name),
        str(saved / "model.pt"): ("saved", "", None, None, saved.name),
        str(tmp_path / "export"): ("onnx", "", None, None, "export"),
    }
    assert ONNX_CONFIG_FILE == CONFIG_FILE  # the parser's copy of the export's file name


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("sam_vit_x", "no such teacher, file or folder"),
        ("teacher:sam_vit_x", "no teacher named 'sam_vit_x'"),
        ("student:no_such_backbone@64", "timm has no model"),
        ("student:resnet18@sixty", "SIZE in pixels"),
        ("student:resnet18@65", "multiple of 32"),
        (".", "holds neither model.pt"),
        ("", "empty"),
    ],
)
def test_unknown_models_are_one_line_listing_what_is_accepted(text: str, why: str) -> None:
    with pytest.raises(KdsamError) as err:
        parse_model(text)
    msg = str(err.value)
    assert why in msg and "\n" not in msg
    assert all(form in msg for form in ("teacher:NAME", "student:BACKBONE", "run folder", "ONNX export", "litemedsam"))


def test_a_list_is_parsed_whole_before_anything_loads() -> None:
    assert [s.kind for s in parse_models("litemedsam, student:resnet18@64,")] == ["teacher", "student"]
    with pytest.raises(KdsamError, match="sam_vit_x"):
        parse_models("student:resnet18@64,sam_vit_x")


def test_a_fresh_student_has_random_weights_and_says_so() -> None:
    model = load_model("student:resnet18@64")
    assert isinstance(model, KDSam) and model.card["weights"] == "random" and model.img_size == 64


def test_commands_refuse_what_they_cannot_use(saved: Path, tmp_path: Path, capsys) -> None:
    argv = ["distill", "--teacher", str(saved), "--data", f"synthetic:{tmp_path / 'd'}", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--teacher takes NAME[=CHECKPOINT]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_onnx_export_folder_is_a_model_everywhere(saved: Path, tmp_path: Path, capsys) -> None:
    """Export a run folder, then use the export folder as a MODEL: predict, evaluate; export refuses it."""
    export = tmp_path / "export"
    assert main(["export", "--model", str(saved), "--out", str(export)]) == 0
    predictor = load_model(str(export))
    assert type(predictor).__name__ == "OnnxPredictor"
    image = tmp_path / "img.png"
    Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(image)
    argv = [
        "predict",
        "--model",
        str(export),
        "--image",
        str(image),
        "--box",
        "4,4,40,30",
        "--out",
        str(tmp_path / "m.png"),
    ]
    assert main(argv) == 0 and (tmp_path / "m.png").is_file()
    data = write_synthetic(tmp_path / "syn", 2)
    argv = ["evaluate", "--model", str(export), "--data", f"folder:{data}", "--split", "all"]
    argv += ["--out", str(tmp_path / "e")]
    assert main(argv) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["coverage"]["n_scored"] == 2
    capsys.readouterr()
    assert main(["export", "--model", str(export), "--out", str(tmp_path / "again")]) == 2
    assert "kdsam export takes" in capsys.readouterr().err


def test_results_name_one_model_one_way(saved: Path) -> None:
    assert label_of("litemedsam") == label_of("teacher:litemedsam") == label_of("litemedsam=/w/x.pth")
    assert label_of(str(saved)) == label_of(str(saved / "model.pt")) == saved.name
    assert label_of("runs/moved-away/") == "runs/moved-away"  # no longer parses: kept as written
