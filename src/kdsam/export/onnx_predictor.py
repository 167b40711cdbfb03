"""`OnnxPredictor`: the box-prompt part of `KDSamPredictor`'s API on an exported folder, run by onnxruntime.

Same method names, shapes and dtypes as `KDSamPredictor` (set_image, predict_boxes, segment,
get_image_embedding, reset_image), so the two can be swapped and compared. Images are prepared in
numpy with SAM's own resize transform, following the preprocessing recorded at export time.
Two runtimes: "onnxruntime" (the fp32 graphs) and "onnxruntime-int8" (the INT8 encoder that
`kdsam export` calibrates, and decoders whose image-token projections are INT8; see
`kdsam.export.quantize`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

from kdsam.errors import KdsamError
from kdsam.export.layout import CONFIG_FILE, DECODER_FILE, ENCODER_FILE, PROMPT_DECODER_FILE
from kdsam.infer.volume import Decoded, FramePrompt, pick_mask
from kdsam.models.sam import grey_to_rgb
from kdsam.models.spec import card_key
from kdsam.models.transforms import medsam_upsample, resize_transform
from kdsam.predictor import KDSamPredictor, as_rgb_uint8


def read_config(folder: Path) -> dict[str, Any]:
    """The export's JSON, or one line saying the folder holds no complete export."""
    path = folder / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise KdsamError(f"{folder}: no ONNX export here (missing {CONFIG_FILE}; run `kdsam export`)") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise KdsamError(f"{path}: not a kdsam ONNX config ({err})") from err
    if not isinstance(config, dict):
        raise KdsamError(f"{path}: not a kdsam ONNX config (a JSON {type(config).__name__}, not an object)")
    missing = [k for k in ("img_size", "normalization", "resize_mode", "pixel_mean", "pixel_std") if k not in config]
    if missing:
        raise KdsamError(f"{path}: not a kdsam ONNX config (missing {', '.join(missing)})")
    size = config["img_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise KdsamError(f"{path}: img_size {size!r} is not a positive whole number; rerun `kdsam export`")
    for key in ("pixel_mean", "pixel_std"):
        values = config[key]
        if not isinstance(values, list) or not all(_is_number(v) for v in values):
            raise KdsamError(f"{path}: {key} {values!r} is not a list of numbers; rerun `kdsam export`")
    return config


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


RUNTIMES = ("onnxruntime", "onnxruntime-int8")
FP32_FILES = {"encoder": ENCODER_FILE, "decoder": DECODER_FILE, "prompt_decoder": PROMPT_DECODER_FILE}


def is_export(path: str | Path) -> bool:
    """Whether `path` is a `kdsam export` folder (it holds the export's JSON)."""
    return (Path(path) / CONFIG_FILE).is_file()


def preprocess(resized: np.ndarray, config: dict[str, Any]) -> np.ndarray:
    """A resized hxwx3 uint8 image -> the 1x3xSxS float32 encoder input: normalised, then zero-padded
    bottom-right; the numpy twin of `KDSam.preprocess`."""
    x = resized.astype(np.float32)
    if config["normalization"] == "minmax":
        lo, hi = x.min(), x.max()
        x = (x - lo) / max(hi - lo, np.float32(1e-8))
    else:
        x = (x - np.asarray(config["pixel_mean"], np.float32)) / np.asarray(config["pixel_std"], np.float32)
    size = int(config["img_size"])
    out = np.zeros((1, 3, size, size), np.float32)
    out[0, :, : x.shape[0], : x.shape[1]] = x.transpose(2, 0, 1)
    return out


def prepare_image(image: np.ndarray, config: dict[str, Any]) -> tuple[np.ndarray, tuple[int, int]]:
    """An HxWx3 uint8 RGB image, or HxW grey (resized first, as `KDSam.prepare`) -> (the encoder
    input, the resized hxw inside it)."""
    transform = resize_transform(config["resize_mode"], int(config["img_size"]), config.get("recipe", "sam"))
    resized = grey_to_rgb(transform.apply_image(image))
    return preprocess(resized, config), resized.shape[:2]


def session_options(threads: int | None) -> ort.SessionOptions:
    """CPU threads for onnxruntime's operators (None: onnxruntime's choice, one per core). Idle
    threads do not spin: encoder and decoder each hold a thread pool, and torch's upsampling runs
    between them, so a pool spinning after its run would steal the cores the next step needs."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def postprocess_masks(
    low_res: np.ndarray, img_size: int, input_size: tuple[int, int], original_size: tuple[int, int], recipe: str = "sam"
) -> np.ndarray:
    """NxCx256x256 logits -> NxCxHxW logits: upsample to the encoder frame, crop the padding, resize to
    the original image; the same interpolation as `KDSam.postprocess_masks` (torch on CPU, exact match)."""
    if recipe == "medsam":
        return medsam_upsample(torch.from_numpy(low_res), original_size).numpy()
    masks = F.interpolate(torch.from_numpy(low_res), (img_size, img_size), mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    return F.interpolate(masks, original_size, mode="bilinear", align_corners=False).numpy()


class OnnxPredictor:
    """`KDSamPredictor`'s API (the `kdsam.predictor.Predictor` protocol) over a `kdsam export`
    folder: boxes through the box decoder graph, clicks, a box and a mask prompt through the
    prompt decoder graph; see `KDSamPredictor` for the conventions."""

    def __init__(
        self,
        folder: str | Path,
        providers: list[str] | None = None,
        runtime: str = "onnxruntime",
        threads: int | None = None,
    ) -> None:
        if runtime not in RUNTIMES:
            raise KdsamError(f"runtime {runtime!r}: an ONNX export runs under {' or '.join(RUNTIMES)}")
        self.folder = Path(folder)
        self.runtime = runtime
        self.config = read_config(self.folder)
        key = card_key(self.config)
        self.card: dict[str, Any] = self.config[key] if key else {}
        self.transform = resize_transform(
            self.config["resize_mode"], int(self.config["img_size"]), self.config.get("recipe", "sam")
        )
        self.mask_threshold = float(self.config.get("mask_threshold", 0.0))
        self.name = f"{self.config.get('model', self.folder.name)} [{runtime}]"
        self.providers = providers or ["CPUExecutionProvider"]
        self.options = session_options(threads)
        self.encoder = self._session("encoder")
        self.decoder = self._session("decoder")
        self._prompt_decoder: ort.InferenceSession | None = None
        self.reset_image()

    def _session(self, graph: str) -> ort.InferenceSession:
        """The session of one of the export's graphs, the file this runtime runs (`graph_file`)."""
        path = self.folder / graph_file(self.config, self.runtime, self.folder, graph)
        if not path.is_file():
            raise KdsamError(f"{path}: missing from the ONNX export (rerun `kdsam export`)")
        try:
            return ort.InferenceSession(str(path), self.options, providers=self.providers)
        except Exception as err:  # onnxruntime raises its own untyped exceptions for a bad file
            raise KdsamError(f"{path}: not a loadable ONNX model ({str(err).splitlines()[0][:200]})") from err

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed an HxWx3 uint8 image (greyscale, RGBA and 16-bit arrays are converted first)."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        image = as_rgb_uint8(image)
        if image_format == "BGR":
            image = np.ascontiguousarray(image[..., ::-1])
        self.features, self.input_size = self.encode(image)
        self.original_size = image.shape[:2]
        self.is_image_set = True

    def encode(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """An HxWx3 RGB or HxW grey uint8 image -> (its 1x256x64x64 embedding, the resized hxw),
        without changing the image set (volumes embed many slices)."""
        encoder_input, input_size = prepare_image(image, self.config)
        (features,) = self.encoder.run(None, {"image": encoder_input})
        return features, input_size

    def get_image_embedding(self) -> np.ndarray:
        """The 1x256x64x64 float32 embedding of the image set (a numpy array, not a torch tensor)."""
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) to generate an embedding.")
        return self.features

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features = None
        self.original_size = None
        self.input_size = None

    def predict_boxes(
        self, boxes: np.ndarray, multimask_output: bool = False, return_logits: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nx4 XYXY boxes in original pixels -> masks Nx1xHxW, scores Nx1, low-res logits Nx1x256x256.

        The exported decoder has SAM's single-mask output only, so multimask_output must be False.
        """
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        if multimask_output:
            raise ValueError("the ONNX box decoder was exported with single-mask output only")
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        box_t = self.transform.apply_boxes(boxes, self.original_size).astype(np.float32)
        masks, scores, low_res = self.decode(self.features, box_t, self.input_size, self.original_size)
        return (masks if return_logits else masks > self.mask_threshold), scores, low_res

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`SamPredictor.predict` through the export's prompt decoder: Nx2 clicks in original pixels
        with N labels (1 object, 0 background), an optional 4 XYXY box and an optional 1x256x256
        mask prompt -> masks CxHxW, scores C, low-res logits Cx256x256 (C = 3 with
        multimask_output else 1)."""
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        if point_coords is not None and point_labels is None:
            raise ValueError("point_labels must be supplied if point_coords is supplied.")
        points = np.zeros((0, 2)) if point_coords is None else np.asarray(point_coords, np.float64).reshape(-1, 2)
        prompt = FramePrompt(
            self.transform.apply_coords(points, self.original_size),
            np.zeros(0) if point_labels is None else np.asarray(point_labels).reshape(-1),
            None if box is None else self.transform.apply_boxes(np.asarray(box).reshape(1, 4), self.original_size)[0],
            None if mask_input is None else np.asarray(mask_input, np.float32).reshape(256, 256),
        )
        low_res, iou = self.decode_prompt(self.features, prompt)
        keep = slice(1, 4) if multimask_output else slice(0, 1)
        img_size, recipe = int(self.config["img_size"]), self.config.get("recipe", "sam")
        masks = postprocess_masks(low_res[:, keep], img_size, self.input_size, self.original_size, recipe)[0]
        return (masks if return_logits else masks > self.mask_threshold), iou[0, keep], low_res[0, keep]

    def decode_prompt(self, features: np.ndarray, prompt: FramePrompt) -> tuple[np.ndarray, np.ndarray]:
        """One object's prompts in the encoder frame -> all four of SAM's low-res masks 1x4x256x256
        (0: single-mask, 1-3: multimask) and their IoU estimates 1x4, for any embedding."""
        coords, labels = prompt.sam_points()
        mask = np.zeros((256, 256), np.float32) if prompt.mask is None else prompt.mask
        low_res, iou = self.prompt_decoder().run(
            None,
            {
                "image_embeddings": features,
                "point_coords": coords,
                "point_labels": labels,
                "mask_input": np.asarray(mask, np.float32)[None, None],
                "has_mask_input": np.array([0.0 if prompt.mask is None else 1.0], np.float32),
            },
        )
        return low_res, iou

    def decode(
        self, features: np.ndarray, frame_boxes: np.ndarray, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nx4 boxes already in the encoder frame -> (logits NxCxHxW at the original size, scores,
        low-res logits), for any embedding."""
        low_res, scores = self.decoder.run(None, {"image_embeddings": features, "boxes": frame_boxes})
        img_size, recipe = int(self.config["img_size"]), self.config.get("recipe", "sam")
        return postprocess_masks(low_res, img_size, input_size, original_size, recipe), scores, low_res

    # The union of per-box masks is defined once, on KDSamPredictor; it only uses predict_boxes.
    segment = KDSamPredictor.segment

    def prompt_decoder(self) -> ort.InferenceSession:
        """The clicks+box+mask decoder graph, loaded on first use; one line when the export predates it."""
        if self._prompt_decoder is None:
            if "prompt_decoder" not in self.config:
                raise KdsamError(f"{self.folder}: this export has no prompt decoder for clicks (rerun `kdsam export`)")
            self._prompt_decoder = self._session("prompt_decoder")
        return self._prompt_decoder

    def slices(self) -> OnnxSlices:
        """This export as the 3D protocol's `kdsam.infer.volume.SliceModel`."""
        return OnnxSlices(self)


SLICES_AT_ONCE = 2  # a 3D box's chains up and down from its middle slice


def threads_per_session(total: int) -> int:
    """onnxruntime threads per session for a budget of `total` CPU threads, so that the two slices
    a volume runs at once use it without oversubscribing (at least one)."""
    return max(1, total // SLICES_AT_ONCE)


class OnnxSlices:
    """`SliceModel` of an export: one encoder run per slice (the graph has batch 1), the box decoder
    on a box already in the frame, and the same upsampling as `predict_boxes`. Sessions take
    concurrent runs, so two slices are processed at once: the up and down chains of a 3D box (on
    2 cores, sessions of 1 thread each, 3.3 s against 4.2 s one slice after another)."""

    def __init__(self, predictor: OnnxPredictor) -> None:
        self.predictor = predictor
        self.img_size = int(predictor.config["img_size"])
        self.transform = predictor.transform
        self.batch_size = 1  # the graph's batch
        self.workers = SLICES_AT_ONCE

    def embed(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self.predictor.encode(image)[0] for image in images]

    def decode_box(
        self, embedding: np.ndarray, frame_box: np.ndarray, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> np.ndarray:
        box = np.asarray(frame_box, np.float32).reshape(1, 4)
        masks = self.predictor.decode(embedding, box, input_size, original_size)[0]
        return masks[0, 0] > self.predictor.mask_threshold

    def decode_prompts(
        self, embedding: np.ndarray, prompt: FramePrompt, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> Decoded:
        low_res, iou = self.predictor.decode_prompt(embedding, prompt)
        k = pick_mask(iou[0], prompt.ambiguous)
        config = self.predictor.config
        full = postprocess_masks(
            low_res[:, k : k + 1], int(config["img_size"]), input_size, original_size, config.get("recipe", "sam")
        )
        return Decoded(full[0, 0] > self.predictor.mask_threshold, low_res[0, k], float(iou[0, k]))


def graph_file(config: dict[str, Any], runtime: str, folder: Path, graph: str = "encoder") -> str:
    """The file a runtime runs for a graph ("encoder", "decoder" or "prompt_decoder"): the fp32 one,
    or the export's INT8 one under onnxruntime-int8 (an export made before the INT8 decoders keeps
    its fp32 decoders there)."""
    if runtime == "onnxruntime-int8":
        if "int8" not in config:
            raise KdsamError(f"{folder}: this export has no INT8 encoder (rerun `kdsam export` without --no-int8)")
        if graph in config["int8"]:
            return config["int8"][graph]
    return config.get(graph, FP32_FILES[graph])


def load_export(path: str | Path, runtime: str = "onnxruntime", threads: int | None = None) -> OnnxPredictor:
    """A `kdsam export` folder as a predictor, run by onnxruntime (fp32) or onnxruntime-int8."""
    return OnnxPredictor(path, runtime=runtime, threads=threads)
