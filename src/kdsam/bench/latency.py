"""Efficiency benchmark: every model timed in one process, interleaved, on the same inputs.

Ratios between models are what matter, and a shared machine drifts (other jobs, thermal limits,
frequency scaling). So models are not timed one after another: each round times every model once
(round robin), and the median over rounds is reported. A model that cannot run (unknown, out of
memory, slower than its time budget) is reported with its reason and the others go on.

Runtimes: besides PyTorch ("torch"), each model can be timed under ONNX Runtime from its export,
fp32 ("onnxruntime") and with the calibrated INT8 encoder ("onnxruntime-int8"); the model is
exported once into a temporary folder, and the rows carry "runtime".
"""

from __future__ import annotations

import copy
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdsam.bench.flops import count_forward, matmul_peak_gflops
from kdsam.bench.targets import load_targets
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
BENCH_KINDS = ("teacher", "student", "saved", "onnx")  # an ONNX export is timed under onnxruntime only
DEFAULT_VARIANT = "default"
TORCH = "torch"
RUNTIMES = (TORCH, "onnxruntime", "onnxruntime-int8")


def build_for_timing(spec: ModelSpec) -> tuple[KDSam, str]:
    """A parsed MODEL -> (model, what its weights are). Timing needs no weights, so a teacher whose
    checkpoint is not given is built with random ones (and labelled so) rather than refused."""
    if spec.kind == "teacher" and spec.checkpoint is None and TEACHERS[spec.name].default_checkpoint is None:
        return build_architecture(spec.name), RANDOM_WEIGHTS
    model = load_model(spec)
    assert isinstance(model, KDSam)  # ONNX exports never get here (prepare times them apart)
    if spec.kind == "teacher":
        return model, f"pretrained ({model.card['checkpoint']})"
    return model, RANDOM_WEIGHTS if spec.kind == "student" else f"trained ({spec.path})"


def timed_model(spec: ModelSpec, device: str = "cpu", threads: int | None = None) -> tuple[KDSam, str, torch.device]:
    """(model on its inference fast path, what its weights are, the device) for a side benchmark."""
    if threads:
        torch.set_num_threads(threads)
    target = resolve_device(device)
    model, weights = build_for_timing(spec)
    return optimize_for_inference(model.eval(), target), weights, target


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
    runtime: str = TORCH
    model: KDSam | None = None
    result: dict[str, Any] = field(default_factory=dict)
    tasks: dict[str, Callable[[], Any]] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)
    spent: float = 0.0
    status: str = "ok"
    error: str | None = None

    @property
    def name(self) -> str:
        tags = [t for t in (self.variant, self.runtime) if t not in (DEFAULT_VARIANT, TORCH)]
        return self.label + "".join(f" [{t}]" for t in tags)

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
        except (RuntimeError, ValueError, KdsamError) as err:  # e.g. a feature map too small for BatchNorm
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


class Exports:
    """Each model's ONNX export (fp32 + INT8), made once per benchmark in a temporary folder."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="kdsam-bench-")
        self._folders: dict[str, Path] = {}

    def folder(self, label: str, model: KDSam) -> Path:
        from kdsam.export.onnx import export_onnx
        from kdsam.export.quantize import synthetic_calibration

        if label not in self._folders:
            log.info("exporting %s to ONNX (fp32 and INT8) for the onnxruntime rows", label)
            folder = Path(self._tmp.name) / str(len(self._folders))
            export_onnx(copy.deepcopy(model).cpu().eval(), folder, calibration=synthetic_calibration(4))
            self._folders[label] = folder
        return self._folders[label]

    def close(self) -> None:
        self._tmp.cleanup()


def _onnx_tasks(predictor: Any, size: int, batch_size: int) -> dict[str, Callable[[], Any]]:
    """The ONNX Runtime twins of `_make_tasks`: encoder (the graph has batch 1, so a batch is that
    many calls) and decoder for one box; no train step."""
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).numpy()
    box = np.array([[size * 0.25, size * 0.25, size * 0.75, size * 0.6]], np.float32)
    (embedding,) = predictor.encoder.run(None, {"image": image})

    def encoder() -> Any:
        return predictor.encoder.run(None, {"image": image})

    tasks: dict[str, Callable[[], Any]] = {
        "encoder": encoder,
        "decoder": lambda: predictor.decoder.run(None, {"image_embeddings": embedding, "boxes": box}),
    }
    if batch_size > 1:
        tasks["batch"] = lambda: [encoder() for _ in range(batch_size)]
    return tasks


def _graph_mb(folder: Path, name: str) -> float:
    """Size on disk of a graph and its external data: what the runtime holds as weights."""
    files = [folder / name, folder / f"{name}.data"]
    return round(sum(f.stat().st_size for f in files if f.is_file()) / 2**20, 1)


def _prepare_onnx(entry: Entry, model: KDSam | None, exports: Exports, batch_size: int, threads: int) -> None:
    """An onnxruntime entry: its model's export (or the export folder it names), timed on CPU."""
    from kdsam.export.onnx_predictor import OnnxPredictor, graph_file

    if entry.device.type != "cpu":
        raise RuntimeError(f"{entry.runtime} is timed on CPU only (onnxruntime's CPU provider); use --device cpu")
    folder = Path(entry.label).expanduser() if model is None else exports.folder(entry.label, model)
    predictor = OnnxPredictor(folder, runtime=entry.runtime, threads=threads)
    entry.result["dtype"] = "int8" if entry.runtime.endswith("int8") else "float32"
    entry.result["weights_mb"] = _graph_mb(folder, graph_file(predictor.config, entry.runtime, folder))
    entry.tasks = _onnx_tasks(predictor, int(predictor.config["img_size"]), batch_size)


def _export_counts(folder: Path) -> dict[str, Any]:
    """What an export folder says about its model without PyTorch: input size and parameter counts."""
    import onnx

    from kdsam.export.onnx_predictor import read_config

    config = read_config(folder)

    def params(name: str) -> int:
        graph = onnx.load(str(folder / name), load_external_data=False).graph
        return sum(int(np.prod(t.dims)) for t in graph.initializer)

    encoder = params(config["encoder"])
    return {
        "weights": f"ONNX export ({folder})",
        "input_size": int(config["img_size"]),
        "params_encoder": encoder,
        "params_total": encoder + params(config["decoder"]),
        "gflops": None,
        "activation_mb": None,
    }


def prepare(
    spec: ModelSpec,
    variant: str,
    device: torch.device,
    batch_size: int,
    train: bool,
    runtime: str = TORCH,
    exports: Exports | None = None,
) -> Entry:
    """Build, size, count and set up one model; failures become a reported status, not an exception."""
    entry = Entry(spec.text, variant, device, runtime)
    if spec.kind == "onnx":
        if runtime == TORCH:
            entry.fail("failed", "an ONNX export has no PyTorch model: time it with --runtime onnxruntime")
            return entry
        with entry.reported():
            entry.result = {"kind": spec.kind, **_export_counts(Path(spec.text).expanduser())}
            _prepare_onnx(entry, None, exports or Exports(), batch_size, torch.get_num_threads())
        return entry
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
        if runtime != TORCH:
            _prepare_onnx(entry, model, exports or Exports(), batch_size, torch.get_num_threads())
            return entry
        trainable = copy.deepcopy(model.image_encoder) if train and model.card.get("kind") == "student" else None
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
    elif entry.result["activation_mb"] is not None:
        entry.result["peak_memory_mb"] = round(entry.result["weights_mb"] + entry.result["activation_mb"], 1)
        entry.result["memory_method"] = "encoder weights + peak live activations at batch 1 (counted in PyTorch)"


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
    res: dict[str, Any] = {
        "model": entry.name,
        "runtime": entry.runtime,
        "variant": entry.variant,
        "status": entry.status,
    }
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
    if res["gflops"] is None:  # an export folder: no PyTorch model to count
        res["achieved_gflops_per_s"] = res["flop_efficiency"] = None
        return res
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
    runtimes: list[str] | None = None,
    targets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return its JSON-ready report (see `kdsam bench --help`).

    variants: fast-path variants from kdsam.models.fast.VARIANTS to time for each student, besides
    the default path, so what each optimisation buys is measured in the same interleaved run.
    runtimes: RUNTIMES to time every model under (default torch only); ONNX Runtime threads are
    set to torch's, so the runtimes compete on equal terms.
    """
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    unknown = sorted(set(variants or []) - set(VARIANTS))
    if unknown:
        raise KdsamError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    specs = [require_kind(as_spec(m), BENCH_KINDS, "kdsam bench") for m in models]
    runtimes = runtimes or [TORCH]
    unknown = sorted(set(runtimes) - set(RUNTIMES))
    if unknown:
        raise KdsamError(f"unknown runtime(s) {', '.join(unknown)}; choose from {', '.join(RUNTIMES)}")
    plan = [(m, DEFAULT_VARIANT, r) for m in specs for r in runtimes]
    plan += [(m, v, TORCH) for m in specs if m.kind in ("student", "saved") for v in variants or []]
    peaks: list[float] = []

    def measure_peak() -> None:
        """Once per round, so the ceiling is sampled under the same load as the models."""
        if dev.type == "cpu":
            peaks.append(matmul_peak_gflops(threads))

    measure_peak()
    load_start = _load_average()
    entries: list[Entry] = []
    failed: set[str] = set()
    exports = Exports()
    try:
        for spec, variant, runtime in plan:
            if spec.text in failed and variant != DEFAULT_VARIANT:
                continue  # its variants would fail the same way
            train = train_step and variant == DEFAULT_VARIANT and runtime == TORCH
            entry = prepare(spec, variant, dev, batch_size, train, runtime, exports)
            if entry.status == "ok":
                log.info("warming up %s", entry.name)
                warm_up(entry, warmup, budget_s)
            if entry.status != "ok" and runtime == TORCH:
                failed.add(spec.text)
            entries.append(entry)
        interleave(entries, repeats, budget_s, measure_peak)
    finally:
        exports.close()
    peak = max(peaks) if peaks else None
    results = [summarise(e, batch_size, peak) for e in entries]
    add_ratios(results)
    return {
        "device": str(dev),
        "device_name": device_name(dev),
        "threads": threads,
        "torch": torch.__version__,
        "onnxruntime": _onnxruntime_version() if set(runtimes) - {TORCH} else None,
        "batch_size": batch_size,
        "repeats": repeats,
        "budget_s": budget_s,
        "matmul_peak_gflops": round(peak, 1) if peak else None,
        "load_average": {"start": load_start, "end": _load_average()},  # others' work on a shared machine
        "results": results,
        "targets": check_targets(results, targets),
    }


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def check_targets(results: list[dict[str, Any]], targets: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The targets (kdsam.bench.targets; the bundled targets.json by default) that this run can
    judge (both models present and timed), each with its verdict."""
    targets = targets or load_targets()
    min_efficiency = float(targets["min_flop_efficiency"])
    by_name = {r["model"]: r for r in results if r["status"] == "ok"}
    checks = []
    for row in targets["speedups"]:
        student, ref, minimum = row["student"], row["reference"], float(row["min"])
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
        torch_student = is_student(r) and r.get("runtime", TORCH) == TORCH
        if torch_student and r.get("flop_efficiency") is not None:
            eff = r["flop_efficiency"]
            checks.append(
                {
                    "target": f"{r['model']} throughput >= {min_efficiency:.0%} of matmul peak",
                    "measured": eff,
                    "holds": eff >= min_efficiency,
                }
            )
    return checks
