"""Efficiency benchmark: every model timed in one process, interleaved, on the same inputs.

Ratios between models are what matter, and a shared machine drifts (other jobs, thermal limits,
frequency scaling). So models are not timed one after another: each round times every model once
(round robin), and the median over rounds is reported. A model that cannot run (unknown, out of
memory, slower than its time budget) is reported with its reason and the others go on.
"""

from __future__ import annotations

import copy
import logging
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdsam.bench.flops import count_forward, matmul_peak_gflops
from kdsam.errors import KdsamError
from kdsam.models.fast import DEFAULT, VARIANTS, optimize_for_inference
from kdsam.models.loading import load_model
from kdsam.models.sam import KDSam
from kdsam.models.spec import ModelSpec, as_spec, is_student, require_kind
from kdsam.models.student import count_parameters
from kdsam.models.teachers import TEACHERS, build_architecture
from kdsam.utils.device import resolve_device

log = logging.getLogger(__name__)

RANDOM_WEIGHTS = "random (timing only)"
BENCH_KINDS = ("teacher", "student", "saved")  # timing an ONNX export is onnxruntime's job, not this loop's
DEFAULT_VARIANT = "default"


def build_for_timing(spec: ModelSpec) -> tuple[KDSam, str]:
    """A parsed MODEL -> (model, what its weights are). Timing needs no weights, so a teacher whose
    checkpoint is not given is built with random ones (and labelled so) rather than refused."""
    if spec.kind == "teacher" and spec.checkpoint is None and TEACHERS[spec.name].default_checkpoint is None:
        return build_architecture(spec.name), RANDOM_WEIGHTS
    model = load_model(spec)
    assert isinstance(model, KDSam)  # BENCH_KINDS has no ONNX export
    if spec.kind == "teacher":
        return model, f"pretrained ({model.spec['checkpoint']})"
    return model, RANDOM_WEIGHTS if spec.kind == "student" else f"trained ({spec.path})"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: with few repeats, a real measurement rather than an interpolation."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass
class Entry:
    """One model under test: its prepared inputs, the timed tasks, and what they measured."""

    label: str
    variant: str
    device: torch.device
    model: KDSam | None = None
    result: dict[str, Any] = field(default_factory=dict)
    tasks: dict[str, Callable[[], Any]] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)
    spent: float = 0.0
    status: str = "ok"
    error: str | None = None

    @property
    def name(self) -> str:
        return self.label if self.variant == DEFAULT_VARIANT else f"{self.label} [{self.variant}]"

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run_round(self) -> float:
        """Time every task once; returns the seconds the round took."""
        total = 0.0
        for task, fn in self.tasks.items():
            self._sync()
            start = time.perf_counter()
            fn()
            self._sync()
            elapsed = time.perf_counter() - start
            self.times.setdefault(task, []).append(elapsed)
            total += elapsed
        self.spent += total
        return total

    @contextmanager
    def reported(self) -> Iterator[None]:
        """A model that cannot run becomes a reported status; the benchmark goes on with the others."""
        try:
            yield
        except torch.OutOfMemoryError as err:
            self.fail("out of memory", str(err).splitlines()[0])
        except (RuntimeError, ValueError) as err:  # e.g. a feature map too small for BatchNorm in training
            self.fail("failed", str(err).splitlines()[0])

    def fail(self, status: str, error: str) -> None:
        self.status, self.error = status, error
        self.tasks.clear()
        self.model = None
        log.warning("%s: %s (%s)", self.name, status, error)


def _make_tasks(
    model: KDSam, batch_size: int, device: torch.device, trainable: torch.nn.Module | None
) -> dict[str, Callable[[], Any]]:
    """The timed closures: encoder at batch 1, at the batch size, decoder for one box, train step."""
    size = model.img_size
    gen = torch.Generator().manual_seed(0)  # the same inputs for every model of a size, run after run
    image = torch.rand(batch_size, 3, size, size, generator=gen).to(device)
    one = image[:1]
    box = torch.tensor([[size * 0.25, size * 0.25, size * 0.75, size * 0.6]], device=device)
    embedding = model.image_encoder(one)

    def decoder() -> Any:
        with torch.inference_mode():
            return model.decode(embedding, box)

    tasks: dict[str, Callable[[], Any]] = {"encoder": lambda: model.image_encoder(one), "decoder": decoder}
    if batch_size > 1:
        tasks["batch"] = lambda: model.image_encoder(image)
    if trainable is not None:
        tasks["train"] = _train_step(trainable.to(device), image)
    return tasks


def _train_step(encoder: torch.nn.Module, image: torch.Tensor) -> Callable[[], None]:
    """The student's own forward and backward on a batch (MSE to a fixed target), no optimiser:
    the floor a stage-1 epoch with cached teacher embeddings is compared with."""
    encoder.train().requires_grad_(True).to(memory_format=torch.channels_last)
    x = image.contiguous(memory_format=torch.channels_last)
    target = torch.zeros(image.shape[0], 256, 64, 64, device=image.device)

    def step() -> None:
        encoder.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(encoder(x), target).backward()

    return step


def prepare(spec: ModelSpec, variant: str, device: torch.device, batch_size: int, train: bool) -> Entry:
    """Build, size, count and set up one model; failures become a reported status, not an exception."""
    entry = Entry(spec.text, variant, device)
    try:
        model, weights = build_for_timing(spec)
    except (KdsamError, RuntimeError, ValueError) as err:
        entry.fail("failed", str(err))
        return entry
    size = model.img_size
    counted = count_forward(model.image_encoder, (1, 3, size, size))
    params_encoder = count_parameters(model.image_encoder)
    entry.result = {
        "kind": spec.kind,
        "weights": weights,
        "input_size": size,
        "params_encoder": params_encoder,
        "params_total": count_parameters(model),
        "gflops": round(counted.flops / 1e9, 3),
        "activation_mb": round(counted.activation_bytes / 2**20, 1),
    }
    with entry.reported():
        trainable = copy.deepcopy(model.image_encoder) if train and model.spec.get("kind") == "student" else None
        model = optimize_for_inference(model, device, VARIANTS.get(variant, DEFAULT))
        dtype = next(model.image_encoder.parameters()).dtype
        entry.result["dtype"] = str(dtype).removeprefix("torch.")
        entry.result["weights_mb"] = round(params_encoder * dtype.itemsize / 2**20, 1)
        entry.model = model
        entry.tasks = _make_tasks(model, batch_size, device, trainable)
    return entry


def warm_up(entry: Entry, rounds: int, budget_s: float) -> None:
    """Untimed rounds (allocator, caches, lazy init); a model whose round alone exceeds the budget is
    reported as too slow instead of holding the whole benchmark up."""
    if entry.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(entry.device)
        before = torch.cuda.memory_allocated(entry.device)
    with entry.reported():
        for _ in range(rounds + (entry.variant == "compile")):  # compiling may take two calls
            entry.run_round()
            took = entry.times["encoder"][-1]
            if took > budget_s:
                entry.fail("too slow", f"one forward took {took:.1f} s, over the --budget-s of {budget_s:g} s")
                break
    if entry.status != "ok":
        return
    entry.times.clear()
    if entry.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(entry.device) - before
        entry.result["peak_memory_mb"] = round(entry.result["weights_mb"] + peak / 2**20, 1)
        entry.result["memory_method"] = "torch.cuda.max_memory_allocated during the warm-up round"
    else:
        entry.result["peak_memory_mb"] = round(entry.result["weights_mb"] + entry.result["activation_mb"], 1)
        entry.result["memory_method"] = "encoder weights + peak live activations at batch 1 (counted)"


def interleave(entries: list[Entry], repeats: int, budget_s: float, each_round: Callable[[], Any]) -> None:
    """Round robin: each round times every model that still has repeats and budget left."""
    for i in range(repeats):
        log.info("round %d/%d", i + 1, repeats)
        each_round()
        for entry in entries:
            if entry.status != "ok":
                continue
            last = sum(t[-1] for t in entry.times.values()) if entry.times else 0.0
            if entry.times and entry.spent + last > budget_s:
                continue  # out of budget: keeps the rounds it has
            with entry.reported():
                entry.run_round()


def _ms(seconds: list[float], q: float | None = None) -> float | None:
    if not seconds:
        return None
    value = statistics.median(seconds) if q is None else percentile(seconds, q)
    return round(value * 1000, 2)


def summarise(entry: Entry, batch_size: int, peak_gflops: float | None) -> dict[str, Any]:
    """One result row of the JSON."""
    res: dict[str, Any] = {"model": entry.name, "variant": entry.variant, "status": entry.status}
    if entry.error:
        res["error"] = entry.error
    res |= entry.result
    if entry.status != "ok":
        return res
    enc = entry.times["encoder"]
    batch = entry.times.get("batch", enc)
    per_batch = statistics.median(batch)
    res |= {
        "repeats": len(enc),
        "latency_ms_median": _ms(enc),
        "latency_ms_p90": _ms(enc, 90),
        "latency_ms_min": round(min(enc) * 1000, 2),  # the least disturbed run, on a shared machine
        "latency_ms_all": [round(t * 1000, 2) for t in enc],
        "batch_size": batch_size,
        "images_per_s": round(batch_size / per_batch, 3),
        "decoder_latency_ms": _ms(entry.times["decoder"]),
        "train_step_ms": _ms(entry.times.get("train", [])),
    }
    achieved = res["gflops"] * res["images_per_s"]
    res["achieved_gflops_per_s"] = round(achieved, 2)
    res["flop_efficiency"] = round(achieved / peak_gflops, 3) if peak_gflops else None
    return res


def add_ratios(results: list[dict[str, Any]]) -> None:
    """`vs_first`: latency / the first model's; `student_speedup`: latency / the first student's."""
    ok = [r for r in results if r["status"] == "ok"]
    if not ok:
        return
    first = ok[0]["latency_ms_median"]
    student = next((r for r in ok if is_student(r)), None)
    for r in ok:
        r["vs_first"] = round(r["latency_ms_median"] / first, 3)
        if student:
            r["student_speedup"] = round(r["latency_ms_median"] / student["latency_ms_median"], 2)


def device_name(device: torch.device) -> str:
    """The CPU model or GPU name: latencies mean nothing without it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def benchmark(
    models: list[str | ModelSpec],
    device: str = "cpu",
    batch_size: int = 1,
    threads: int | None = None,
    repeats: int = 10,
    warmup: int = 1,
    budget_s: float = 120.0,
    variants: list[str] | None = None,
    train_step: bool = True,
) -> dict[str, Any]:
    """Run the benchmark and return its JSON-ready report (see `kdsam bench --help`).

    variants: fast-path recipes from kdsam.models.fast.VARIANTS to time for each student, besides
    the default path, so what each optimisation buys is measured in the same interleaved run.
    """
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    unknown = sorted(set(variants or []) - set(VARIANTS))
    if unknown:
        raise KdsamError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    specs = [require_kind(as_spec(m), BENCH_KINDS, "kdsam bench") for m in models]
    plan = [(m, DEFAULT_VARIANT) for m in specs]
    plan += [(m, v) for m in specs if m.kind != "teacher" for v in variants or []]
    peaks: list[float] = []

    def measure_peak() -> None:
        """Once per round, so the ceiling is sampled under the same load as the models."""
        if dev.type == "cpu":
            peaks.append(matmul_peak_gflops(threads))

    measure_peak()
    entries: list[Entry] = []
    failed: set[str] = set()
    for spec, variant in plan:
        if spec.text in failed:
            continue  # its variants would fail the same way
        entry = prepare(spec, variant, dev, batch_size, train_step and variant == DEFAULT_VARIANT)
        if entry.status == "ok":
            log.info("warming up %s", entry.name)
            warm_up(entry, warmup, budget_s)
        if entry.status != "ok":
            failed.add(spec.text)
        entries.append(entry)
    interleave(entries, repeats, budget_s, measure_peak)
    peak = max(peaks) if peaks else None
    results = [summarise(e, batch_size, peak) for e in entries]
    add_ratios(results)
    return {
        "device": str(dev),
        "device_name": device_name(dev),
        "threads": threads,
        "torch": torch.__version__,
        "batch_size": batch_size,
        "repeats": repeats,
        "budget_s": budget_s,
        "matmul_peak_gflops": round(peak, 1) if peak else None,
        "results": results,
        "targets": check_targets(results),
    }


# The speed targets: (student, reference, minimum speed-up of the student's encoder).
SPEED_TARGETS = [
    ("student:resnet50@512", "sam_vit_h", 100.0),
    ("student:resnet50@512", "sam_vit_b", 20.0),
    ("student:resnet50@512", "mobilesam", 2.0),
    ("student:resnet50@1024", "sam_vit_h", 25.0),
]
MIN_FLOP_EFFICIENCY = 0.6


def check_targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets that this run can judge (both models present and timed), each with its verdict."""
    by_name = {r["model"]: r for r in results if r["status"] == "ok"}
    checks = []
    for student, ref, minimum in SPEED_TARGETS:
        if student in by_name and ref in by_name:
            ratio = by_name[ref]["latency_ms_median"] / by_name[student]["latency_ms_median"]
            checks.append(
                {
                    "target": f"{student} >= {minimum:g}x faster than {ref}",
                    "measured": round(ratio, 1),
                    "holds": ratio >= minimum,
                }
            )
    for r in results:
        if is_student(r) and r.get("flop_efficiency") is not None:
            eff = r["flop_efficiency"]
            checks.append(
                {
                    "target": f"{r['model']} throughput >= {MIN_FLOP_EFFICIENCY:.0%} of matmul peak",
                    "measured": eff,
                    "holds": eff >= MIN_FLOP_EFFICIENCY,
                }
            )
    return checks
