"""Saving students into run folders and loading any model from a MODEL string (grammar: kdsam.models.spec)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kdsam.errors import KdsamError
from kdsam.models.checkpoint import load_strict, load_weights_only, read_state_dict
from kdsam.models.sam import KDSam
from kdsam.models.spec import KINDS, MODEL_FILE, Kind, ModelSpec, as_spec, card_key, check_card, require_kind
from kdsam.models.student import build_student
from kdsam.models.teachers import load_teacher
from kdsam.utils.atomic import save_torch

if TYPE_CHECKING:
    from kdsam.export.onnx_predictor import OnnxPredictor
    from kdsam.predictor import KDSamPredictor


def save_model(model: KDSam, path: str | Path) -> None:
    """Write weights plus the model's card, which rebuilds the architecture; atomic."""
    save_torch(path, {"card": model.card, "state_dict": model.state_dict()})


def _read_saved(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise KdsamError(f"{path}: no saved model here (a run folder holds {MODEL_FILE} once training has finished)")
    obj = load_weights_only(path, "a kdsam model file")
    key = card_key(obj)
    if key is None or "state_dict" not in obj:
        raise KdsamError(f"{path}: not a kdsam model file (expected keys 'card' and 'state_dict')")
    return obj[key], obj["state_dict"]


def load_saved_student(path: str | Path) -> KDSam:
    """A student written by `save_model` (a model.pt, or a run folder holding one)."""
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    card, state = _read_saved(file)
    card = check_card(file, card)
    model = build_student(None, card["backbone"], card["input_size"], resize_mode=card.get("resize_mode"))
    load_strict(model, state, file, f"kdsam student ({card['backbone']}@{card['input_size']})")
    model.card = card
    return model.eval()


def load_model(
    model: str | ModelSpec, kinds: tuple[Kind, ...] = KINDS, purpose: str = "a MODEL"
) -> KDSam | OnnxPredictor:
    """Build any model a MODEL string names, as segment_anything's `sam_model_registry` does for SAM.

    Arguments:
      model (str or ModelSpec): a MODEL string (grammar: `kdsam.models.spec`): a teacher
        (`sam_vit_b=CKPT`, `medsam=CKPT`, ...), a random-weight student (`resnet50@512`), a run
        folder or model.pt, or an ONNX export folder.
      kinds (tuple of str): the kinds the caller accepts, from ("teacher", "student", "saved", "onnx").
      purpose (str): how the caller names the argument in errors, e.g. "--teacher".

    Returns:
      (KDSam): the model in eval mode; its `image_encoder` maps Bx3xSxS to Bx256x64x64 (S: `img_size`).
      (OnnxPredictor): for an ONNX export folder, which has no torch modules.

    Raises:
      KdsamError: the string names no model, a kind outside `kinds`, or a missing or unreadable
        checkpoint (one line naming the file).
    """
    spec = require_kind(as_spec(model), kinds, purpose)
    if spec.kind == "teacher":
        return load_teacher(spec.name, spec.checkpoint)
    if spec.kind == "student":
        model = build_student(None, spec.name, spec.input_size).eval()
        model.card = {**model.card, "weights": "random"}
        return model
    if spec.kind == "onnx":
        from kdsam.export.onnx_predictor import OnnxPredictor

        return OnnxPredictor(spec.path)
    return load_saved_student(spec.path)


def load_predictor(
    model: str | ModelSpec, device: str | None = None, runtime: str | None = None, threads: int | None = None
) -> KDSamPredictor | OnnxPredictor:
    """The `SamPredictor`-style predictor of any MODEL, ready for `set_image` and `predict_boxes`.

    Arguments:
      model (str or ModelSpec): a MODEL string, as for `load_model`.
      device (str or None): auto (None: the same), cpu, cuda or cuda:N for torch models; auto is
        CUDA when present. Torch models run on their fast inference path (`kdsam.models.fast`).
      runtime (str or None): for an ONNX export folder, "onnxruntime" (fp32, the default) or
        "onnxruntime-int8"; for torch models None or "torch".
      threads (int or None): onnxruntime threads per session (None: onnxruntime's choice).

    Returns:
      (KDSamPredictor or OnnxPredictor): both take an HxWx3 uint8 image (greyscale, RGBA and
        16-bit arrays are converted) and Nx4 XYXY boxes in its pixels.

    Raises:
      KdsamError: as `load_model`; or a `runtime` the model cannot run under.
    """
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
