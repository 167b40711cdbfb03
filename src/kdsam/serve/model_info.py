"""What the served model was trained to answer, so the page can be honest about clicks.

A decoder trained on boxes alone (MedSAM, LiteMedSAM, a student fine-tuned on boxes only, or one whose
decoder is such a teacher's) answers a click without a box with noise. The teacher registry names each
teacher's prompts; a run folder's config.json names its fine-tuning prompt mix, or its teacher when
the decoder was not fine-tuned. An ONNX export's card names its prompts (older exports: boxes only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdsam.models.spec import MODEL_FILE, ONNX_CONFIG_FILE, as_spec, card_key
from kdsam.models.teachers import TEACHERS

BOXES_AND_CLICKS = ("box", "point")
BOXES = ("box",)


def _teacher_prompts(name: Any) -> tuple[str, ...] | None:
    entry = TEACHERS.get(str(name)) if name else None
    return entry.prompts if entry else None


def _run_prompts(run: Path) -> tuple[str, ...] | None:
    """From a run folder's config.json: the fine-tuning mix, else the teacher whose decoder it kept."""
    try:
        config = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if "finetune" in config and "prompts" not in config["finetune"]:
        return BOXES  # fine-tuned before the prompt mix existed: boxes only
    mix = config.get("finetune", {}).get("prompts")
    if isinstance(mix, dict) and isinstance(mix.get("first_prompt"), dict):
        kinds = {kind for kind, weight in mix["first_prompt"].items() if weight}
        clicks = mix.get("max_corrective_clicks", 0)
        return BOXES if kinds <= {"box"} and not clicks else BOXES_AND_CLICKS
    teacher = config.get("distill", {}).get("teacher", {})
    return _teacher_prompts(teacher.get("name") if isinstance(teacher, dict) else None)


def _export_prompts(folder: Path) -> tuple[str, ...]:
    """From the card `kdsam export` copies into the export (cards name their prompts since 2026-12)."""
    try:
        config = json.loads((folder / ONNX_CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return BOXES
    key = card_key(config)
    card = config[key] if key else None
    prompts = card.get("prompts") if isinstance(card, dict) else None
    return tuple(prompts) if prompts in (list(BOXES), list(BOXES_AND_CLICKS)) else BOXES  # older: unknown, say boxes


def trained_prompts(model: str) -> tuple[str, ...] | None:
    """("box",), ("box", "point"), or None when nothing says (a random-weight student)."""
    spec = as_spec(model)
    if spec.kind == "onnx" and spec.path is not None:
        return _export_prompts(spec.path)
    if spec.kind == "teacher":
        return _teacher_prompts(spec.name)
    if spec.kind == "saved" and spec.path is not None:
        return _run_prompts(spec.path.parent if spec.path.name == MODEL_FILE else spec.path)
    return None
