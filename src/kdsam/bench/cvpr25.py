"""Seconds per step of a CVPR25 interactive case through `kdsam predict`'s own path, as the
challenge's evaluator calls it: the box step, then 5 click steps, each reading the case written
with the new clicks and the previous answer, answering it and writing `segs`. The case: a CT-like
volume (default 100 slices of 512 x 512) holding 2 ellipsoid organs (2 classes) through most of
its slices, clicks placed by the protocol's own rule (kdsam.eval.cvpr25). Slice embeddings live in
a fresh cache folder, as on a challenge machine; the model is loaded once (a separate process per
step, as the evaluator runs, adds the model's load time, reported apart). Target: <= 10 s per step
on a 2-core CPU with the INT8 student (`cvpr25_seconds_per_step` in targets.json).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

from kdsam.bench.challenge import _case_model
from kdsam.bench.latency import TORCH, Exports, device_name
from kdsam.bench.targets import load_targets
from kdsam.eval.cvpr25 import CLICKS, add_clicks, object_array, truth_boxes
from kdsam.infer.files import Prompts, run_file
from kdsam.models.spec import ModelSpec

TARGET_S = float(load_targets()["cvpr25_seconds_per_step"])


def synthetic_case(slices: int = 100, side: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(imgs DxHxW uint8, gts with labels 1 and 2): two ellipsoids of different brightness on noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:slices, :side, :side]
    gts = np.zeros((slices, side, side), np.uint8)
    for label, (cz, cy, cx, rz, ry, rx) in enumerate(
        [(0.5, 0.45, 0.35, 0.42, 0.18, 0.15), (0.55, 0.55, 0.7, 0.3, 0.08, 0.07)], start=1
    ):
        inside = ((z - cz * slices) / (rz * slices)) ** 2 + ((y - cy * side) / (ry * side)) ** 2
        gts[(inside + ((x - cx * side) / (rx * side)) ** 2) <= 1] = label
    imgs = (60 + 60 * gts + rng.integers(0, 30, gts.shape)).astype(np.uint8)
    return imgs, gts


def time_steps(
    spec: ModelSpec,
    device: str = "cpu",
    threads: int | None = None,
    slices: int = 100,
    side: int = 512,
    runtime: str = TORCH,
    exports: Exports | None = None,
) -> dict[str, Any]:
    """Seconds of each of the six steps of one case for one model under one runtime."""
    start = time.perf_counter()
    model, weights, target = _case_model(spec, device, threads, runtime, exports)
    load_s = time.perf_counter() - start
    imgs, gts = synthetic_case(slices, side)
    labels = [1, 2]
    boxes = object_array(truth_boxes(gts, labels))
    clicks: list[dict[str, list]] = [{"fg": [], "bg": []} for _ in labels]
    order: list[list[str | None]] = [[] for _ in labels]
    seconds, cpu = [], []
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, {"KDSAM_CACHE": str(Path(tmp) / "cache")}):
        case, out = Path(tmp) / "CT_bench.npz", Path(tmp) / "out" / "CT_bench.npz"
        arrays: dict[str, Any] = {"imgs": imgs, "spacing": np.array([2.5, 0.8, 0.8]), "boxes": boxes}
        segs = None
        for _ in range(CLICKS + 1):
            if segs is not None:
                add_clicks(segs, gts, labels, clicks, order)
                arrays |= {"clicks": object_array(clicks), "clicks_order": object_array(order), "prev_pred": segs}
            np.savez_compressed(case, **arrays)
            begin, begin_cpu = time.perf_counter(), time.process_time()
            run_file(model, case, out, Prompts())
            seconds.append(time.perf_counter() - begin)
            cpu.append(time.process_time() - begin_cpu)
            with np.load(out) as answer:
                segs = answer["segs"]
    dsc = [2 * ((segs == i) & (gts == i)).sum() / ((segs == i).sum() + (gts == i).sum()) for i in labels]
    clicks_only = seconds[1:]
    return {
        "model": spec.label,
        "runtime": runtime,
        "weights": weights,
        "device": device_name(target),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "case": f"{slices} slices of {side}x{side}, 2 classes",
        "model_load_s": round(load_s, 3),
        "seconds_per_step": [round(s, 3) for s in seconds],
        "cpu_seconds_per_step": [round(s, 3) for s in cpu],
        "box_step_s": round(seconds[0], 3),
        "click_step_median_s": round(statistics.median(clicks_only), 3),
        "worst_step_s": round(max(seconds), 3),
        "final_dsc_per_class": [round(float(d), 4) for d in dsc],
        "target_s": TARGET_S,
        "meets_target": max(seconds) <= TARGET_S,
    }
