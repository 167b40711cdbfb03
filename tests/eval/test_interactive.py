"""`--prompt` protocols on the real LiteMedSAM teacher: points, clicks, box plus clicks, NoC."""

from __future__ import annotations

import json

import pytest

from kdsam.cli import main
from kdsam.data import open_dataset
from kdsam.errors import KdsamError
from kdsam.eval.evaluate import evaluate
from kdsam.eval.interactive import PromptProtocol, _noc, parse_prompt


@pytest.mark.parametrize(
    ("text", "box", "clicks", "name"),
    [
        ("box", True, 0, "box"),
        ("point", False, 1, "point"),
        ("clicks:5", False, 5, "clicks:5"),
        ("clicks", False, 20, "clicks:20"),
        ("box+clicks:3", True, 3, "box+clicks:3"),
    ],
)
def test_prompt_grammar(text, box, clicks, name):
    protocol = parse_prompt(text)
    assert protocol == PromptProtocol(box, clicks) and protocol.name == name


@pytest.mark.parametrize("text", ["boxes", "clicks:0", "clicks:x", "point+box"])
def test_bad_prompt_is_refused(text):
    with pytest.raises(KdsamError, match="--prompt"):
        parse_prompt(text)


def test_noc_counts_clicks_not_steps():
    assert _noc([0.5, 0.86, 0.95], 0.85, 20, clicks_at_first_step=1) == 2  # point protocol
    assert _noc([0.5, 0.86, 0.95], 0.85, 20, clicks_at_first_step=0) == 1  # box, then clicks
    assert _noc([0.9], 0.85, 20, clicks_at_first_step=0) == 0  # the box alone was enough
    assert _noc([0.5, 0.6], 0.90, 20, clicks_at_first_step=1) == 20  # never reached


@pytest.fixture(scope="module")
def litemedsam():
    from kdsam.models.teachers import load_teacher

    return load_teacher("litemedsam")


def test_box_plus_clicks_starts_from_the_box_result(litemedsam, synthetic_root):
    data = open_dataset(f"folder:{synthetic_root}", None)
    boxes = evaluate(litemedsam, data, progress=False)
    clicks = evaluate(litemedsam, data, prompt="box+clicks:2", progress=False)
    for box_row, click_row in zip(boxes["per_image"], clicks["per_image"], strict=True):
        assert click_row["dice@0"] == pytest.approx(box_row["dice"], abs=1e-9)
        assert {"dice@1", "dice@2", "noc85", "noc90"} <= set(click_row)
        assert 0 <= click_row["noc90"] <= 2
    assert clicks["settings"]["prompts"].startswith("box+clicks:2")


def test_clicks_improve_a_single_point(litemedsam, synthetic_root):
    data = open_dataset(f"folder:{synthetic_root}", None)
    result = evaluate(litemedsam, data, prompt="clicks:4", progress=False)
    mean = result["mean"]
    assert "dice@0" not in mean and mean["dice@4"] > mean["dice@1"]
    assert mean["dice"] == pytest.approx(mean["dice@4"])


def test_cli_writes_the_dice_vs_clicks_plot(synthetic_root, tmp_path):
    out = tmp_path / "out"
    argv = ["evaluate", "--model", "teacher:litemedsam", "--data", f"folder:{synthetic_root}", "--split", "all"]
    assert main([*argv, "--prompt", "point", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["settings"]["prompts"].startswith("point")
    assert (out / "dice_vs_clicks.png").stat().st_size > 1000
    assert main([*argv, "--prompt", "clicks:0", "--out", str(tmp_path / "bad")]) == 2
