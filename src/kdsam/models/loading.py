"""Saving students into run folders and loading any model from a MODEL string (grammar: kdsam.models.spec)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kdsam.errors import KdsamError
from kdsam.models.checkpoint import load_strict, load_weights_only, read_state_dict
from kdsam.models.sam import KDSam
from kdsam.models.spec import KINDS, MODEL_FILE, Kind, ModelSpec, as_spec, check_saved_spec, require_kind
from kdsam.models.student import build_student
from kdsam.models.teachers import load_teacher
from kdsam.utils.atomic import save_torch

if TYPE_CHECKING:
    from kdsam.export.onnx_predictor import OnnxPredictor
    from kdsam.predictor import KDSamPredictor


def save_model(model: KDSam, path: str | Path) -> None:
    """Write weights plus the spec that rebuilds the architecture; atomic."""
    save_torch(path, {"spec": model.spec, "state_dict": model.state_dict()})


def _read_saved(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise KdsamError(f"{path}: no saved model here (a run folder holds {MODEL_FILE} once training has finished)")
    obj = load_weights_only(path, "a kdsam model file")
    if not isinstance(obj, dict) or "spec" not in obj or "state_dict" not in obj:
        raise KdsamError(f"{path}: not a kdsam model file (expected keys 'spec' and 'state_dict')")
    return obj["spec"], obj["state_dict"]


def load_saved_student(path: str | Path) -> KDSam:
    """A student written by `save_model` (a model.pt, or a run folder holding one)."""
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    spec, state = _read_saved(file)
    spec = check_saved_spec(file, spec)
    model = build_student(None, spec["backbone"], spec["input_size"], resize_mode=spec.get("resize_mode"))
    load_strict(model, state, file, f"kdsam student ({spec['backbone']}@{spec['input_size']})")
    model.spec = spec
    return model.eval()


def load_model(
    model: str | ModelSpec, kinds: tuple[Kind, ...] = KINDS, purpose: str = "a MODEL"
) -> KDSam | OnnxPredictor:
    """Any MODEL string (see kdsam.models.spec): a `KDSam` in eval mode, or for an ONNX export
    folder its `OnnxPredictor` (an export has no torch modules). `kinds` narrows what a caller
    accepts, e.g. `load_model(arg, ("teacher",), "--teacher")`."""
    spec = require_kind(as_spec(model), kinds, purpose)
    if spec.kind == "teacher":
        return load_teacher(spec.name, spec.checkpoint)
    if spec.kind == "student":
        model = build_student(None, spec.name, spec.input_size).eval()
        model.spec = {**model.spec, "weights": "random"}
        return model
    if spec.kind == "onnx":
        from kdsam.export.onnx_predictor import OnnxPredictor

        return OnnxPredictor(spec.path)
    return load_saved_student(spec.path)


def load_predictor(
    model: str | ModelSpec, device: str | None = None, runtime: str | None = None, threads: int | None = None
) -> KDSamPredictor | OnnxPredictor:
    """The predictor of any MODEL: torch models on their fast inference path on `device` (auto, cpu,
    cuda, cuda:N; auto is CUDA when present); an ONNX export folder under `runtime` onnxruntime (the
    default) or onnxruntime-int8, with `threads` onnxruntime threads per session (None: its choice)."""
    spec = as_spec(model)
    if spec.kind == "onnx":
        from kdsam.export.onnx_predictor import load_export

        if runtime == "torch":
            raise KdsamError(f"{spec.text}: an ONNX export runs under onnxruntime or onnxruntime-int8, not torch")
        return load_export(spec.path, runtime or "onnxruntime", threads)
    if runtime not in (None, "torch"):
        raise KdsamError(f"--runtime {runtime}: needs an ONNX export folder as the model (run `kdsam export`)")
    from kdsam.models.fast import optimize_for_inference
    from kdsam.predictor import KDSamPredictor
    from kdsam.utils.device import resolve_device

    return KDSamPredictor(optimize_for_inference(load_model(spec), resolve_device(device)))


__all__ = ["MODEL_FILE", "load_model", "load_predictor", "load_saved_student", "read_state_dict", "save_model"]
