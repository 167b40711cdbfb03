"""Saving students into run folders and loading any model from a MODEL string."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kdsam.errors import KdsamError
from kdsam.models.checkpoint import load_strict, read_state_dict
from kdsam.models.sam import KDSam
from kdsam.models.student import build_student
from kdsam.models.teachers import load_teacher, parse_teacher_arg
from kdsam.utils.atomic import save_torch

MODEL_FILE = "model.pt"


def save_model(model: KDSam, path: str | Path) -> None:
    """Write weights plus the spec that rebuilds the architecture; atomic."""
    save_torch(path, {"spec": model.spec, "state_dict": model.state_dict()})


def _read_saved(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise KdsamError(f"{path}: no saved model here (a run folder holds {MODEL_FILE} once training has finished)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise KdsamError(f"{path}: not a readable kdsam model file (truncated?): {err}") from err
    if not isinstance(obj, dict) or "spec" not in obj or "state_dict" not in obj:
        raise KdsamError(f"{path}: not a kdsam model file (expected keys 'spec' and 'state_dict')")
    return obj["spec"], obj["state_dict"]


def load_saved_student(path: str | Path) -> KDSam:
    """A student written by `save_model` (a model.pt, or a run folder holding one)."""
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    spec, state = _read_saved(file)
    if spec.get("kind") != "student":
        raise KdsamError(f"{file}: holds a {spec.get('kind')!r} model, expected a student")
    model = build_student(None, spec["backbone"], int(spec["input_size"]), resize_mode=spec.get("resize_mode"))
    load_strict(model, state, file, f"kdsam student ({spec['backbone']}@{spec['input_size']})")
    model.spec = spec
    return model.eval()


def load_model(model: str) -> KDSam:
    """MODEL strings: a run folder or model.pt (a trained student), or `teacher:NAME[=CHECKPOINT]`."""
    if model.startswith("teacher:"):
        name, ckpt = parse_teacher_arg(model.removeprefix("teacher:"))
        return load_teacher(name, ckpt)
    path = Path(model).expanduser()
    if not path.exists():
        raise KdsamError(f"{model}: no such run folder or model file (or write teacher:NAME[=CHECKPOINT])")
    return load_saved_student(path)


def load_predictor(model: str, runtime: str | None = None, device: str | None = None) -> Any:
    """A predictor for any MODEL string: `KDSamPredictor` on the fast path, or for an ONNX export
    folder `OnnxPredictor` (runtime onnxruntime, the default, or onnxruntime-int8)."""
    from kdsam.export.onnx_predictor import is_export, load_export

    if is_export(Path(model).expanduser()):
        if runtime == "torch":
            raise KdsamError(f"{model}: an ONNX export runs under onnxruntime or onnxruntime-int8, not torch")
        return load_export(Path(model).expanduser(), runtime or "onnxruntime")
    if runtime not in (None, "torch"):
        raise KdsamError(f"--runtime {runtime}: needs an ONNX export folder as the model (run `kdsam export`)")
    from kdsam.models.fast import optimize_for_inference
    from kdsam.predictor import KDSamPredictor

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return KDSamPredictor(optimize_for_inference(load_model(model), device))


__all__ = ["MODEL_FILE", "load_model", "load_predictor", "load_saved_student", "read_state_dict", "save_model"]
