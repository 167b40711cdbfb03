"""ONNX export as EdgeSAM does it: the image encoder and the box decoder as two files, plus the preprocessing.

The split follows the 256x64x64 contract: the encoder runs once per image, the decoder once per set
of prompts. The encoder reads an already preprocessed 1x3xSxS tensor, so the resizing and
normalisation a model was trained with are stated in a JSON file beside the graphs instead of
being baked into them; `OnnxPredictor` reads it and prepares images exactly as `KDSam.prepare` does.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from kdsam.errors import KdsamError
from kdsam.export.layout import CONFIG_FILE, DECODER_FILE, ENCODER_FILE, PROMPT_DECODER_FILE, place_graph
from kdsam.export.quantize import Calibration, quantize_decoders, quantize_encoder
from kdsam.models.layer_norm import fused_layer_norms
from kdsam.models.sam import KDSam
from kdsam.utils.atomic import make_folder, write_json

DEFAULT_OPSET = 17
# Protobuf caps one file at 2 GiB: larger graphs (SAM ViT-H's encoder) keep their weights in one
# FILE.data beside FILE. A margin below the cap leaves room for the graph itself.
EXTERNAL_DATA_BYTES = 1_800_000_000


class BoxDecoder(nn.Module):
    """Prompt encoder + mask decoder for box prompts only, with SAM's single-mask output.

    Inputs: image embeddings 1x256x64x64 and Nx4 XYXY boxes already in the prompt frame (the
    encoder's input frame). Outputs: low-res logits Nx1x256x256 and IoU predictions Nx1; exactly
    what `SamPredictor.predict_torch(boxes=..., multimask_output=False)` computes before upsampling.
    """

    def __init__(self, model: KDSam) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder

    def forward(self, image_embeddings: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes, masks=None)
        return self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )


class PromptDecoder(nn.Module):
    """Prompt encoder + mask decoder for clicks, a box and a mask prompt together (SAM's own ONNX
    model does the same): the box enters as two corner points labelled 2 and 3, a click as 1
    (object) or 0 (background), padding as -1; `has_mask_input` 0 stands for "no mask prompt".

    Inputs: image embeddings 1x256x64x64, point_coords 1xNx2 in the prompt frame, point_labels 1xN,
    mask_input 1x1x256x256 logits, has_mask_input (1,). Outputs: all four of SAM's low-res masks
    1x4x256x256 (0: the single-mask output, 1-3: the multimask ones) and their IoU predictions 1x4,
    so one graph serves a single-mask decode and a lone click's best of three.
    """

    def __init__(self, model: KDSam) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pe = self.prompt_encoder
        sparse = pe.pe_layer.forward_with_coords(point_coords + 0.5, pe.input_image_size)
        labels = point_labels[..., None]
        sparse = sparse * (labels != -1) + pe.not_a_point_embed.weight * (labels == -1)
        for i in range(pe.num_point_embeddings):
            sparse = sparse + pe.point_embeddings[i].weight * (labels == i)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = pe.mask_downscaling(mask_input) * has_mask_input + no_mask * (1 - has_mask_input)
        return self.mask_decoder.predict_masks(image_embeddings, pe.get_dense_pe(), sparse, dense)


def preprocessing_config(model: KDSam, opset: int) -> dict[str, Any]:
    """Everything an ONNX runtime needs besides the graphs: how to prepare an image and read the masks."""
    return {
        "model": model.name,
        "card": model.card,
        "img_size": model.img_size,
        "normalization": model.normalization,
        "resize_mode": model.resize_mode,
        "recipe": model.recipe,
        "pixel_mean": model.pixel_mean.flatten().tolist(),
        "pixel_std": model.pixel_std.flatten().tolist(),
        "mask_threshold": float(model.mask_threshold),
        "embedding_shape": [1, 256, 64, 64],
        "encoder": ENCODER_FILE,
        "decoder": DECODER_FILE,
        "prompt_decoder": PROMPT_DECODER_FILE,
        "opset": opset,
        "external_data": False,
    }


def needs_external_data(module: nn.Module) -> bool:
    """Whether a module's weights are too large for a single ONNX file."""
    return sum(p.numel() * p.element_size() for p in module.parameters()) > EXTERNAL_DATA_BYTES


def _export_graph(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    names: tuple[list[str], list[str]],
    opset: int,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    external_data: bool = False,
) -> None:
    """Trace one module to `path`, then run onnx.checker on the file written.

    The trace goes to a private folder first (the exporter itself spills a large model into one
    file per tensor there), then moves into place in one rename, or with external_data is re-saved
    as FILE + FILE.data.
    """
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp, warnings.catch_warnings():
        traced = Path(tmp) / path.name
        # The TorchScript exporter is the one that needs no onnxscript; its tracer warnings are about
        # shapes that are static by design (64x64 embeddings, a fixed encoder size), and the folding
        # notes about strided slices (TinyViT's windows) change nothing in the graph's results.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)
        try:
            torch.onnx.export(
                module,
                inputs,
                str(traced),
                input_names=names[0],
                output_names=names[1],
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        except (RuntimeError, TypeError, ValueError, torch.onnx.errors.OnnxExporterError) as err:
            # An opset too old for an operator fails deep in the exporter (a TypeError at opset 9).
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise KdsamError(
                f"{path.name}: ONNX export failed at opset {opset} (opset {DEFAULT_OPSET} is tested): {first[:200]}"
            ) from err
        place_graph(traced, path, external_data or len(os.listdir(tmp)) > 1)
    onnx.checker.check_model(str(path), full_check=True)


def export_onnx(
    model: KDSam,
    out_dir: str | Path,
    opset: int = DEFAULT_OPSET,
    external_data: bool | None = None,
    calibration: Calibration | None = None,
) -> dict[str, Any]:
    """Write ENCODER_FILE, DECODER_FILE, PROMPT_DECODER_FILE and CONFIG_FILE into `out_dir`; returns the config.

    Each file is written atomically and the JSON last, so a folder with the JSON holds a complete
    export. The decoder takes any number of boxes (dynamic first axis). Traced on the model's device;
    the graphs hold no device, so they run anywhere onnxruntime does. SAM's LayerNorm2d is traced as
    one LayerNormalization (`kdsam.models.layer_norm`).
    external_data: keep the encoder's weights in ENCODER_FILE.data (None: when over 2 GB).
    calibration: also write the INT8 encoder, calibrated on these images (see `quantize_encoder`), and
    the INT8 decoders (`quantize_decoders`).
    """
    out = Path(out_dir)
    make_folder(out)
    (out / CONFIG_FILE).unlink(missing_ok=True)  # an interrupted re-export must not look complete
    external = needs_external_data(model.image_encoder) if external_data is None else external_data
    model = model.eval()
    size, device = model.img_size, model.device
    embedding = torch.zeros(1, 256, 64, 64, device=device)
    boxes = torch.tensor([[0.1, 0.1, 0.6, 0.7], [0.0, 0.0, 1.0, 1.0]], device=device) * (size - 1)
    per_box = {0: "num_boxes"}
    with torch.no_grad(), fused_layer_norms(model):
        _export_graph(
            model.image_encoder,
            (torch.zeros(1, 3, size, size, device=device),),
            out / ENCODER_FILE,
            (["image"], ["image_embeddings"]),
            opset,
            external_data=external,
        )
        _export_graph(
            BoxDecoder(model),
            (embedding, boxes),
            out / DECODER_FILE,
            (["image_embeddings", "boxes"], ["low_res_logits", "iou_predictions"]),
            opset,
            {"boxes": per_box, "low_res_logits": per_box, "iou_predictions": per_box},
        )
        points = torch.tensor([[[10.0, 20.0], [0.0, 0.0], [5.0, 5.0], [40.0, 60.0]]], device=device)
        _export_graph(
            PromptDecoder(model),
            (
                embedding,
                points,
                torch.tensor([[1.0, 0.0, 2.0, 3.0]], device=device),
                torch.zeros(1, 1, 256, 256, device=device),
                torch.ones(1, device=device),
            ),
            out / PROMPT_DECODER_FILE,
            (
                ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"],
                ["low_res_logits", "iou_predictions"],
            ),
            opset,
            {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
        )
    config = preprocessing_config(model, opset) | {"external_data": external}
    if calibration is not None:
        config["int8"] = quantize_encoder(out, config, calibration) | quantize_decoders(out)
    write_json(out / CONFIG_FILE, config)
    return config
