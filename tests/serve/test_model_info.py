"""The page is told what the model was trained on: the teacher registry, a run's config, an export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kdsam.serve.app import create_app
from kdsam.serve.engine import Engine
from kdsam.serve.model_info import BOXES, BOXES_AND_CLICKS, trained_prompts


def run_folder(tmp_path: Path, config: dict) -> str:
    (tmp_path / "model.pt").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


@pytest.mark.parametrize(
    ("config", "want"),
    [
        ({"finetune": {"prompts": {"first_prompt": {"box": 1.0}, "max_corrective_clicks": 0}}}, BOXES),
        (
            {"finetune": {"prompts": {"first_prompt": {"box": 0.5, "point": 0.5}, "max_corrective_clicks": 2}}},
            BOXES_AND_CLICKS,
        ),
        ({"finetune": {"prompts": {"first_prompt": {"box": 1.0}, "max_corrective_clicks": 1}}}, BOXES_AND_CLICKS),
        ({"finetune": {"loss": "dice"}}, BOXES),  # fine-tuned before the prompt mix: boxes only
        ({"distill": {"teacher": {"kind": "teacher", "name": "litemedsam"}}}, BOXES),  # the teacher's decoder
        ({"distill": {"teacher": {"kind": "teacher", "name": "sam_vit_b"}}}, BOXES_AND_CLICKS),
    ],
)
def test_a_run_says_what_its_decoder_learnt(tmp_path: Path, config: dict, want: tuple[str, ...]) -> None:
    assert trained_prompts(run_folder(tmp_path, config)) == want


def test_teachers_and_exports(tmp_path: Path) -> None:
    assert trained_prompts("teacher:litemedsam") == BOXES
    assert trained_prompts("teacher:medsam") == BOXES
    assert trained_prompts("teacher:mobilesam") == BOXES_AND_CLICKS
    (tmp_path / "kdsam_onnx.json").write_text("{}")
    assert trained_prompts(str(tmp_path)) == BOXES  # an export from before cards named prompts: boxes only
    (tmp_path / "kdsam_onnx.json").write_text(json.dumps({"card": {"kind": "student", "prompts": ["box", "point"]}}))
    assert trained_prompts(str(tmp_path)) == BOXES_AND_CLICKS
    assert trained_prompts("student:resnet18@64") is None  # random weights: nothing says


def test_healthz_names_the_prompts(engine: Engine) -> None:
    boxes_only = Engine(engine.predictor, prompts=BOXES)
    assert TestClient(create_app(boxes_only)).get("/healthz").json()["prompts"] == ["box"]
    assert TestClient(create_app(engine)).get("/healthz").json()["prompts"] == ["box", "point"]
