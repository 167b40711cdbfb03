"""What training at scale costs, measured through the real commands, side by side in one run:

- stage-1 images/s with 1 and N processes (torchrun, gloo or nccl), the same global batch;
- teacher cache images/s per teacher (`kdsam cache`'s code path, batched);
- peak RSS of `kdsam distill` against the number of training images (streamed training keeps it
  flat; the old in-memory items grew ~2.5 MB per image at 256 px);
- the student's training step in fp32 and in bf16 autocast (`--precision`), and how far apart;
- the mask decoder over a batch, one call per image against one `vmap` call (`KDSam.decode`).

Every child is a fresh process, so one measurement never inherits another's memory or threads.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdsam.data import open_dataset
from kdsam.data.synthetic import write_synthetic
from kdsam.distill.fill import RANDOM_WEIGHTS, fill_teacher_cache
from kdsam.distill.process import TrainingProcess, init_process
from kdsam.distill.prompting import DEFAULT_MIX, parse_mix, prompted_logits
from kdsam.errors import KdsamError
from kdsam.models.sam import KDSam
from kdsam.models.student import build_student
from kdsam.models.teachers import build_architecture, load_teacher
from kdsam.utils.device import resolve_device

TRAIN_FRACTION = 0.7  # of a seeded split (kdsam.data.splits): n images give about 0.7 n training images

_RSS_CHILD = (
    "import json, resource, sys\n"
    "from kdsam.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('KDSAM_RSS ' + json.dumps({'rc': rc, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss"
    " / 1024}))\n"
)


def synthetic_data(root: Path, n_train: int) -> str:
    """A synthetic folder dataset with about `n_train` training images; its location."""
    path = root / f"synthetic-{n_train}"
    if not (path / "synthetic.json").is_file():
        write_synthetic(path, n=round(n_train / TRAIN_FRACTION))
    return f"folder:{path}"


def volume_data(root: Path, n_train: int) -> str:
    """A synthetic CT set in the nnU-Net layout with about `n_train` training cases of 64x64x12; its location."""
    from kdsam.data.volumes.synthetic import write_synthetic_ct

    path = root / f"ct-{n_train}"
    if not (path / "dataset.json").is_file():
        write_synthetic_ct(path, n_cases=round(n_train / 0.8), shape=(64, 64, 12))
    return f"nnunet:{path}"


DATA = {"2d": synthetic_data, "volumes": volume_data}


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise KdsamError(f"benchmark child failed ({' '.join(cmd[:6])} ...): {tail}")
    return proc.stdout


def _fill_cache(location: str, cache: Path, teacher: str, device: str) -> None:
    """Teacher entries computed beforehand, so the measurement that follows is of training alone."""
    _run([sys.executable, "-m", "kdsam", "cache", "--teacher", teacher, "--data", location, "--cache-dir", str(cache),
          "--max-side", "512", "--device", device])  # fmt: skip


def _distill_args(location: str, out: Path, cache: Path, student: str, input_size: int, batch: int, epochs: int,
                  teacher: str, device: str) -> list[str]:  # fmt: skip
    return [
        "distill", "--teacher", teacher, "--data", location, "--out", str(out), "--cache-dir", str(cache),
        "--backbone", student, "--input-size", str(input_size), "--batch-size", str(batch),
        "--epochs", str(epochs), "--patience", str(epochs), "--device", device, "--max-side", "512",
    ]  # fmt: skip


def peak_rss(
    sizes: Sequence[int] = (80, 320),
    *,
    root: Path,
    teacher: str = "litemedsam",
    student: str = "resnet18",
    input_size: int = 256,
    batch_size: int = 8,
    epochs: int = 1,
    device: str = "cpu",
    data: str = "2d",
) -> dict[str, Any]:
    """Peak RSS of a whole `kdsam distill` (cache filled first, so only training is compared) per
    training-set size (images, or cases with data="volumes"); the ratio largest/smallest is what
    streaming must keep near 1."""
    rows = []
    cache = root / "cache"
    for n in sizes:
        location = DATA[data](root, n)
        _fill_cache(location, cache, teacher, device)
        out = root / f"rss-run-{n}-{time.time_ns()}"
        args = _distill_args(location, out, cache, student, input_size, batch_size, epochs, teacher, device)
        stdout = _run([sys.executable, "-c", _RSS_CHILD, *args])
        line = next(ln for ln in stdout.splitlines() if ln.startswith("KDSAM_RSS "))
        n_train = json.loads((out / "config.json").read_text())["distill"]["train"]["n"]
        rows.append({"train_size": n, "train_images": n_train, **json.loads(line.split(" ", 1)[1])})
    return {
        "what": "peak RSS of kdsam distill (cache filled beforehand)",
        "data": data,
        "student": f"{student}@{input_size}",
        "teacher": teacher,
        "batch_size": batch_size,
        "epochs": epochs,
        "device": device,
        "rows": rows,
        "ratio_largest_to_smallest": round(rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3),
        "target": 1.25,
    }


def stage1_scaling(
    processes: Sequence[int] = (1, 2),
    *,
    root: Path,
    n_train: int = 32,
    teacher: str = "litemedsam",
    student: str = "resnet18",
    input_size: int = 256,
    global_batch: int = 8,
    epochs: int = 2,
    device: str = "cpu",
) -> dict[str, Any]:
    """Stage-1 training images/s (last epoch, cached teacher) with each number of processes under
    torchrun; the global batch is the same for all, split over the ranks; each CPU rank gets an equal
    share of the cores."""
    location = synthetic_data(root, n_train)
    cache = root / "cache"
    _fill_cache(location, cache, teacher, device)
    cores = os.cpu_count() or 1
    rows = []
    for n in processes:
        if global_batch % n:
            raise KdsamError(f"global batch {global_batch} does not split over {n} processes")
        out = root / f"scaling-{n}-{time.time_ns()}"
        args = _distill_args(location, out, cache, student, input_size, global_batch // n, epochs, teacher, device)
        threads = [] if device != "cpu" else ["--threads", str(max(cores // n, 1))]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
        _run([*launcher, "-m", "kdsam", *args, *threads], env={"OMP_NUM_THREADS": str(max(cores // n, 1))})
        last = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()][-1]
        rows.append({"processes": n, "batch_per_rank": global_batch // n, "images_per_s": last["train_images_per_s"]})
    base = rows[0]["images_per_s"]
    for r in rows:
        r["speedup"] = round(r["images_per_s"] / base, 3)
    return {
        "what": "stage-1 training images/s, cached teacher, last epoch",
        "student": f"{student}@{input_size}",
        "global_batch": global_batch,
        "device": device,
        "cpu_cores": cores,
        "train_images": rows and json.loads((out / "config.json").read_text())["distill"]["train"]["n"],
        "rows": rows,
    }


def cache_speed(
    teachers: Sequence[str],
    *,
    root: Path,
    n_images: int = 16,
    random_weights: bool = False,
    device: str = "cpu",
    batch_size: int = 8,
) -> dict[str, Any]:
    """Teacher embedding (+ mask logits) images/s per teacher into an empty cache; random weights
    only when asked, and then labelled so in every row."""
    location = synthetic_data(root, n_images)
    process = init_process(device)
    data = [open_dataset(location, "train", max_side=1024)]
    rows = []
    for name in teachers:
        teacher = build_architecture(name).eval().requires_grad_(False) if random_weights else load_teacher(name)
        with tempfile.TemporaryDirectory(dir=root) as cache:
            report = fill_teacher_cache(teacher, data, process, cache, batch_size)
        rows.append({k: report[k] for k in ("teacher", "weights", "images", "seconds", "computed_images_per_s")})
        del teacher
        if process.device.type == "cuda":
            torch.cuda.empty_cache()
    return {"what": "teacher cache fill, images/s (embedding + mask logits)", "device": str(process.device),
            "batch_size": batch_size, "rows": rows}  # fmt: skip


def _interleaved(
    runs: dict[str, Callable[[], tuple[torch.Tensor, ...]]], device: torch.device, rounds: int
) -> tuple[dict[str, float], dict[str, tuple[torch.Tensor, ...]]]:
    """Each run timed once per round, in turn, so that drifting clocks or load hit all alike; the
    median over the rounds after the first (warm-up), and each run's last outputs (as fp32)."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    outputs: dict[str, tuple[torch.Tensor, ...]] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            outputs[name] = tuple(t.float() for t in run())
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - start)
    return {k: statistics.median(v[1:] or v) for k, v in seconds.items()}, outputs


def _rel_l2(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> list[float]:
    return [round(float((y - x).norm() / x.norm()), 5) for x, y in zip(a, b, strict=True)]


def _fp32_vs_bf16(run: Callable[[], tuple[torch.Tensor, ...]], device: torch.device, rounds: int) -> dict[str, Any]:
    """`run` timed under fp32 and under bf16 autocast, interleaved, and how far bf16's outputs are
    from fp32's (relative L2, one value per output)."""

    def under(dtype: torch.dtype | None) -> Callable[[], tuple[torch.Tensor, ...]]:
        def autocast_run() -> tuple[torch.Tensor, ...]:
            with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                return run()

        return autocast_run

    median, outputs = _interleaved({"fp32": under(None), "bf16": under(torch.bfloat16)}, device, rounds)
    return {
        "fp32_s": round(median["fp32"], 4),
        "bf16_s": round(median["bf16"], 4),
        "bf16_speedup": round(median["fp32"] / median["bf16"], 3),
        "rel_l2": _rel_l2(outputs["fp32"], outputs["bf16"]),
    }


def _objects(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectangles as low-res targets (Bx1x256x256) and their boxes in a 1024 prompt frame (Bx4)."""
    targets = torch.zeros(batch_size, 1, 256, 256, device=device)
    boxes = torch.zeros(batch_size, 4, device=device)
    for i in range(batch_size):
        y, x = 16 + (12 * i) % 160, 24 + (20 * i) % 140
        targets[i, 0, y : y + 64, x : x + 90] = 1
        boxes[i] = torch.tensor([x, y, x + 90, y + 64], device=device) * 4.0
    return targets, boxes


def _loop_vs_vmap(
    decode: Callable[..., torch.Tensor], emb: torch.Tensor, process: TrainingProcess, rounds: int
) -> dict[str, float | list[float]]:
    """`decode(batched=...)` forward and backward (to `emb`) with each path, interleaved."""

    def step(batched: bool) -> Callable[[], tuple[torch.Tensor, ...]]:
        def forward_backward() -> tuple[torch.Tensor, ...]:
            emb.grad = None
            with process.autocast():
                logits = decode(batched=batched)
            logits.float().square().mean().backward()
            return logits.detach(), emb.grad

        return forward_backward

    median, outputs = _interleaved({"loop": step(False), "vmap": step(True)}, process.device, rounds)
    distance = _rel_l2(outputs["loop"], outputs["vmap"])
    return {"loop_s": round(median["loop"], 4), "vmap_s": round(median["vmap"], 4),
            "vmap_speedup": round(median["loop"] / median["vmap"], 3),
            "logits_rel_l2": distance[0], "gradient_rel_l2": distance[1]}  # fmt: skip


def _box_logits(model: KDSam, emb: torch.Tensor, boxes: torch.Tensor, batched: bool) -> torch.Tensor:
    return model.decode(emb, boxes, batched=batched)[0]


def decode_speed(
    *, teachers: Sequence[str] = ("litemedsam",), batch_size: int = 8, device: str = "cpu", rounds: int = 10
) -> dict[str, Any]:
    """The mask decoder's forward and backward for a batch of objects, as training runs it: boxes
    (stage 1's perceptual loss, stage 2's box recipe) and the default prompt mix with its simulated
    clicks (stage 2). Each with one decoder call per image against one `vmap` call per batch or
    group (`batched=`), in the precision training uses on the device."""
    process = init_process(device)
    targets, boxes = _objects(batch_size, process.device)
    rng = np.random.default_rng(0)
    plans = [parse_mix(DEFAULT_MIX).draw(t[0].cpu().numpy() > 0.5, rng) for t in targets]
    rows = []
    for name in teachers:
        model = load_teacher(name).to(process.device)
        torch.manual_seed(0)
        emb = torch.randn(batch_size, 256, 64, 64, device=process.device, requires_grad=True)
        for prompts, decode in (("box", partial(_box_logits, model, emb, boxes)),
                                ("mix", partial(prompted_logits, model, emb, targets, boxes, plans))):  # fmt: skip
            rows.append({"teacher": name, "prompts": prompts, **_loop_vs_vmap(decode, emb, process, rounds)})
    return {"what": "mask decoder forward + backward over a batch: one call per image vs one vmap call",
            "device": str(process.device), "precision": str(process.amp_dtype or torch.float32).replace("torch.", ""),
            "batch_size": batch_size, "rounds": rounds, "prompt_mix": DEFAULT_MIX,
            "default_path": "vmap" if process.device.type == "cuda" else "loop", "rows": rows}  # fmt: skip


def precision_speed(
    *,
    student: str,
    input_size: int,
    teachers: Sequence[str] = ("litemedsam",),
    random_weights: bool = False,
    batch_size: int = 4,
    device: str = "cpu",
    rounds: int = 5,
) -> dict[str, Any]:
    """fp32 against bf16 autocast, side by side: the student's stage-1 training step (forward,
    embedding MSE, backward; distances of the embedding and the gradient) and each teacher's
    embedding forward as `kdsam cache` runs it (inference mode; distance of the embedding)."""
    dev = resolve_device(device)
    what = "fp32 vs bf16 autocast: student training step, teacher embedding forward; interleaved rounds"
    try:
        TrainingProcess(dev, precision="bf16")
    except KdsamError as err:
        return {"what": what, "device": str(dev), "skipped": str(err)}
    torch.manual_seed(0)
    encoder = build_student(load_teacher("litemedsam"), student, input_size).image_encoder.to(dev).train()
    x = torch.randn(batch_size, 3, input_size, input_size, device=dev)
    target = torch.randn(batch_size, 256, 64, 64, device=dev)

    def train_step() -> tuple[torch.Tensor, torch.Tensor]:
        encoder.zero_grad(set_to_none=True)
        emb = encoder(x)
        with torch.autocast(dev.type, enabled=False):
            torch.nn.functional.mse_loss(emb.float(), target).backward()
        return emb.detach(), torch.cat([p.grad.flatten() for p in encoder.parameters() if p.grad is not None])

    step = _fp32_vs_bf16(train_step, dev, rounds)
    report = {"what": what, "device": str(dev), "batch_size": batch_size, "rounds": rounds,
              "student": {"model": f"{student}@{input_size}", **{k: v for k, v in step.items() if k != "rel_l2"},
                          "embedding_rel_l2": step["rel_l2"][0], "gradient_rel_l2": step["rel_l2"][1]},
              "teachers": []}  # fmt: skip
    for name in teachers:
        teacher = build_architecture(name) if random_weights else load_teacher(name)
        teacher = teacher.eval().requires_grad_(False).to(dev)
        side = teacher.image_encoder.img_size
        images = torch.randn(batch_size, 3, side, side, device=dev)

        def embed(teacher=teacher, images=images) -> tuple[torch.Tensor]:
            with torch.inference_mode():
                return (teacher.image_encoder(images),)

        row = _fp32_vs_bf16(embed, dev, rounds)
        weights = RANDOM_WEIGHTS if random_weights else "pretrained"
        report["teachers"].append({"teacher": name, "weights": weights, "input_size": side,
                                   **{k: v for k, v in row.items() if k != "rel_l2"},
                                   "embedding_rel_l2": row["rel_l2"][0]})  # fmt: skip
        del teacher
    return report
