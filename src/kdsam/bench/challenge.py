"""Seconds per CVPR24 challenge case, measured through `kdsam predict`'s own path (read npz, segment,
write segs), as the challenge times a case: a 2D case (512x512x3, one box) and a 3D case
(100 slices of 512x512, one box through every slice, so every slice is embedded and decoded).
Targets on a laptop-class CPU: <= 0.5 s per 2D case and <= 5 s per 3D case. Under an onnxruntime
runtime the model is exported (fp32 graphs and the INT8 encoder) into a temporary folder first.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdsam.bench.latency import TORCH, Exports, device_name, timed_model
from kdsam.bench.targets import load_targets
from kdsam.errors import KdsamError
from kdsam.infer.files import Prompts, run_file
from kdsam.infer.volume import SliceModel, slice_model
from kdsam.models.spec import ModelSpec
from kdsam.utils.device import resolve_device

TARGETS_S = {k: float(v) for k, v in load_targets()["cvpr24_seconds_per_case"].items()}


def synthetic_cases(folder: Path, side: int = 512, slices: int = 100, seed: int = 0) -> dict[str, Path]:
    """A 2D and a 3D case in the challenge's format: an ellipse/ellipsoid on noise, boxed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:side, :side]
    disc = ((x - side * 0.45) / (side * 0.2)) ** 2 + ((y - side * 0.5) / (side * 0.15)) ** 2 < 1
    box = [int(side * 0.25), int(side * 0.35), int(side * 0.65), int(side * 0.65)]
    image = (60 + 120 * disc[..., None] + rng.integers(0, 40, (side, side, 3))).astype(np.uint8)
    np.savez_compressed(folder / "2DBench.npz", imgs=image, boxes=np.array([box]))
    stack = np.repeat((60 + 120 * disc).astype(np.uint8)[None], slices, axis=0)
    stack += rng.integers(0, 40, stack.shape, dtype=np.uint8)
    box3d = [box[0], box[1], 0, box[2], box[3], slices - 1]
    np.savez_compressed(folder / "3DBench.npz", imgs=stack, boxes=np.array([box3d]), spacing=[1.0, 1.0, 1.0])
    return {"2d": folder / "2DBench.npz", "3d": folder / "3DBench.npz"}


def per_slice_parts(sm: SliceModel, side: int, batch_size: int, rounds: int = 2) -> dict[str, float]:
    """Seconds per slice of the two parts of a 3D step: preparing and encoding a slice (in batches)
    and decoding one box up to a full-size mask (sequential along z), medians over `rounds`."""
    images = [np.full((side, side), 100, np.uint8)] * batch_size
    box = np.array([10.0, 10.0, sm.img_size / 2, sm.img_size / 2], np.float32)
    embedding = sm.embed(images[:1])[0]
    input_size = sm.transform.get_preprocess_shape(side, side, sm.img_size)
    encode, decode = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        sm.embed(images)
        encode.append((time.perf_counter() - start) / batch_size)
        start = time.perf_counter()
        sm.decode_box(embedding, box, input_size, (side, side))
        decode.append(time.perf_counter() - start)
    return {"encoder_s": round(statistics.median(encode), 4), "decoder_s": round(statistics.median(decode), 4)}


def _case_model(
    spec: ModelSpec, device: str, threads: int | None, runtime: str, exports: Exports | None
) -> tuple[Any, str, torch.device]:
    """(what segments the cases: a KDSam, or an export's OnnxPredictor; its weights; the device)."""
    from kdsam.export.onnx_predictor import RUNTIMES, OnnxPredictor

    if runtime != TORCH and runtime not in RUNTIMES:
        raise KdsamError(f"unknown runtime {runtime!r}; choose from {TORCH}, {', '.join(RUNTIMES)}")
    if runtime != TORCH and resolve_device(device).type != "cpu":
        raise KdsamError(f"{runtime} is timed on CPU only (onnxruntime's CPU provider); use --device cpu")
    if spec.kind == "onnx":
        if runtime == TORCH:
            raise KdsamError(f"{spec.text}: an ONNX export has no PyTorch model; time it with --runtime onnxruntime")
        if threads:
            torch.set_num_threads(threads)
        folder = Path(spec.text).expanduser()
        predictor = OnnxPredictor(folder, runtime=runtime, threads=session_threads())
        return predictor, f"export ({folder})", torch.device("cpu")
    model, weights, target = timed_model(spec, device, threads)
    if runtime == TORCH:
        return model, weights, target
    folder = (exports or Exports()).folder(spec.label, model)
    return OnnxPredictor(folder, runtime=runtime, threads=session_threads()), weights, target


def session_threads() -> int:
    """onnxruntime threads per session within torch's thread budget (`threads_per_session`)."""
    from kdsam.export.onnx_predictor import threads_per_session

    return threads_per_session(torch.get_num_threads())


def time_cases(
    spec: ModelSpec,
    device: str = "cpu",
    threads: int | None = None,
    repeats_2d: int = 5,
    repeats_3d: int = 1,
    slices: int = 100,
    side: int = 512,
    batch_size: int | None = None,
    runtime: str = TORCH,
    exports: Exports | None = None,
) -> dict[str, Any]:
    """Median seconds per 2D and per 3D case for one model under one runtime (after one untimed 2D
    warm-up case)."""
    model, weights, target = _case_model(spec, device, threads, runtime, exports)
    sm = slice_model(model)
    batch_size = batch_size or sm.batch_size
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"2d": [], "3d": []}
    cpu: dict[str, list[float]] = {"2d": [], "3d": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = synthetic_cases(folder, side, slices)
        run_file(model, cases["2d"], folder / "out" / "warmup.npz", Prompts(), batch_size=batch_size)
        for kind, repeats in (("2d", repeats_2d), ("3d", repeats_3d)):
            for i in range(repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                run_file(model, cases[kind], folder / "out" / f"{kind}{i}.npz", Prompts(), batch_size=batch_size)
                times[kind].append(time.perf_counter() - start)
                cpu[kind].append(time.process_time() - start_cpu)
        parts = per_slice_parts(sm, side, batch_size)
    seconds = {kind: statistics.median(t) for kind, t in times.items()}
    return {
        "model": spec.label,
        "runtime": runtime,
        "weights": weights,
        "device": device_name(target),
        "threads": torch.get_num_threads(),
        "slices_at_once": sm.workers,
        **({"onnxruntime_threads_per_session": session_threads()} if runtime != TORCH else {}),
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "case_2d": f"{side}x{side}x3, 1 box",
        "case_3d": f"{slices} slices of {side}x{side}, 1 box through all of them",
        "batch_size": batch_size,
        "seconds_per_2d_case": round(seconds["2d"], 4),
        "seconds_per_3d_case": round(seconds["3d"], 4),
        "all_seconds": {k: [round(v, 4) for v in t] for k, t in times.items()},
        "seconds_per_slice": parts,
        # CPU seconds of this process: on a machine others load, CPU seconds / threads is what the
        # wall clock would read on a quiet one (an estimate; wall seconds above are the measurement)
        "cpu_seconds_per_2d_case": round(statistics.median(cpu["2d"]), 4),
        "cpu_seconds_per_3d_case": round(statistics.median(cpu["3d"]), 4),
        "targets_s": TARGETS_S,
        "meets_targets": {k: seconds[k] <= TARGETS_S[k] for k in TARGETS_S},
    }
