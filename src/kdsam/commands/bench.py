"""`kdsam bench`: time and size models side by side (see kdsam.bench.latency for how and why)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from kdsam.commands.options import check_threads
from kdsam.errors import KdsamError
from kdsam.models.fast import VARIANTS
from kdsam.models.spec import ModelSpec, label_of, parse_models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models",
        required=True,
        metavar="MODEL,...",
        help="comma-separated MODELs (docs/models.md): a teacher NAME[=CHECKPOINT] (random weights when a "
        "checkpoint is needed and not given: timing only), student:BACKBONE@SIZE, a run folder or model.pt, "
        "an ONNX export folder (timed under --runtime onnxruntime*). "
        "Ratios are printed against the first model and against the first student.",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=1, help="batch for images/s and the train step")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds per model, interleaved")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds per model first")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=120.0,
        help="seconds per model; a model over it stops repeating, one whose warm-up alone "
        "exceeds it is reported as too slow",
    )
    parser.add_argument(
        "--variants",
        default="",
        help=f"also time each student with these fast-path steps ('all' or comma list of "
        f"{', '.join(VARIANTS)}; each adds one step to the previous)",
    )
    parser.add_argument(
        "--runtime",
        default="torch",
        help="comma-separated runtimes to time every model under, in the same interleaved run: torch, "
        "onnxruntime (the model's fp32 ONNX export), onnxruntime-int8 (its calibrated INT8 encoder); "
        "ONNX exports are made on the fly into a temporary folder, or give an export folder as a model",
    )
    parser.add_argument("--no-train-step", action="store_true", help="skip the student's fwd+bwd timing")
    parser.add_argument(
        "--eval",
        action="append",
        default=[],
        metavar="[MODEL=]METRICS_JSON",
        help="evaluation metrics.json (repeatable): the Pareto plot then shows Dice",
    )
    parser.add_argument(
        "--stage1-data",
        metavar="KIND:PATH",
        help="also time a stage-1 epoch (cached teacher) against the student's own fwd+bwd on this data",
    )
    parser.add_argument(
        "--cvpr24",
        action="store_true",
        help="instead, time whole CVPR24 challenge cases through kdsam predict's path: seconds per 2D case "
        "(512x512) and per 3D case (--cvpr24-slices slices of 512x512), JSON",
    )
    parser.add_argument("--cvpr24-slices", type=int, default=100, help="slices of the 3D case (default 100)")
    parser.add_argument("--cvpr24-repeats", type=int, default=5, help="timed 2D cases (median reported; default 5)")
    parser.add_argument("--cvpr24-side", type=int, default=512, help="image side of both cases (default 512)")
    parser.add_argument(
        "--slice-batch", type=int, help="slices per encoder batch in the 3D case (default: 8 on a GPU, 1 on a CPU)"
    )
    parser.add_argument(
        "--cvpr25",
        action="store_true",
        help="instead, time the six steps of a CVPR25 interactive case (box, then 5 clicks) through kdsam "
        "predict's path: --cvpr25-slices slices of --cvpr25-side pixels, 2 classes; seconds per step, JSON",
    )
    parser.add_argument("--cvpr25-slices", type=int, default=100, help="slices of the CVPR25 case (default 100)")
    parser.add_argument("--cvpr25-side", type=int, default=512, help="slice side of the CVPR25 case (default 512)")
    parser.add_argument(
        "--everything",
        action="store_true",
        help="instead, time everything mode (SAM's automatic mask generator) on a 512x512 image per model, JSON",
    )
    parser.add_argument("--points-per-side", type=int, default=32, help="--everything's grid (default 32)")
    parser.add_argument(
        "--targets", type=Path, default=None, help="speed targets JSON to judge (default: kdsam's bench/targets.json)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for bench.json, bench.md, pareto.png (default: --json path, .md, .png)",
    )


def _variants(arg: str, device: str) -> list[str]:
    from kdsam.models.fast import variants_for

    if arg == "all":
        import torch

        return variants_for(torch.device(device))
    return [v.strip() for v in arg.split(",") if v.strip()]


def read_eval_dice(entries: list[str]) -> dict[str, float]:
    """`[MODEL=]metrics.json` -> {model: mean Dice}; MODEL defaults to the file's own "model" field."""
    dice = {}
    for entry in entries:
        label, sep, path = entry.rpartition("=") if "=" in entry else ("", "", entry)
        try:
            metrics = json.loads(Path(path).read_text())
            value = float(metrics["mean"]["dice"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise KdsamError(f"{path}: not an evaluation metrics.json with mean.dice ({err})") from err
        name = label if sep else str(metrics.get("model", path))
        dice[label_of(name)] = value
    return dice


def run(args: argparse.Namespace) -> int:
    from kdsam.bench.latency import benchmark
    from kdsam.bench.targets import load_targets
    from kdsam.report.pareto import bench_markdown, pareto_plot
    from kdsam.utils.atomic import write_json, write_text

    logging.basicConfig(level=logging.INFO, format="kdsam bench: %(message)s")  # progress: a run can take minutes
    check_threads(args.threads)
    models = parse_models(args.models)  # an unknown model stops here, before minutes of timing
    if args.cvpr24:
        return _run_cvpr24(args, models)
    if args.cvpr25:
        return _run_cvpr25(args, models)
    if args.everything:
        return _run_everything(args, models)
    dice = read_eval_dice(args.eval)
    report = benchmark(
        models,
        device=args.device,
        batch_size=args.batch_size,
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        budget_s=args.budget_s,
        variants=_variants(args.variants, args.device),
        train_step=not args.no_train_step,
        runtimes=[r.strip() for r in args.runtime.split(",") if r.strip()],
        targets=load_targets(args.targets),
    )
    if args.stage1_data:
        from kdsam.bench.stage1_cost import stage1_epoch_cost

        report["stage1_epoch"] = cost = stage1_epoch_cost(args.stage1_data)
        print(
            f"stage-1 epoch {cost['epoch_train_seconds']} s vs student fwd+bwd {cost['student_fwd_bwd_seconds']} s: "
            f"{cost['ratio']}x (target <= {cost['target']}x)"
        )
    text = bench_markdown(report)
    print(text, end="")
    if args.out:
        json_path, md_path, png_path = (args.out / name for name in ("bench.json", "bench.md", "pareto.png"))
    elif args.json:
        json_path, md_path, png_path = (args.json.with_suffix(ext) for ext in (".json", ".md", ".png"))
    else:
        return _exit_code(report)
    write_json(args.json or json_path, report)
    write_text(md_path, text)
    print(f"wrote {args.json or json_path}, {md_path}, {pareto_plot(report['results'], png_path, dice)}")
    return _exit_code(report)


def _exit_code(report: dict) -> int:
    """1 when no model could be timed at all; failures of some models are reported, not fatal."""
    return 0 if any(r["status"] == "ok" for r in report["results"]) else 1


def _write_report(args: argparse.Namespace, report: dict, name: str) -> int:
    """Print a side benchmark's JSON and write it to --json (or OUT/NAME)."""
    from kdsam.utils.atomic import write_json

    print(json.dumps(report, indent=2))
    path = args.json or (args.out / name if args.out else None)
    if path:
        write_json(path, report)
    return 0


def _run_everything(args: argparse.Namespace, models: list[ModelSpec]) -> int:
    """Seconds of everything mode per image for each model."""
    from kdsam.bench.everything import time_everything

    rows = [time_everything(m, args.device, args.threads, args.points_per_side) for m in models]
    return _write_report(args, {"everything": rows}, "everything.json")


def _each_runtime(args: argparse.Namespace, models: list[ModelSpec], time_one) -> list[dict]:
    """time_one(model, runtime, exports) for every model under every --runtime, exports shared."""
    from kdsam.bench.latency import Exports

    exports = Exports()
    try:
        return [time_one(m, r.strip(), exports) for m in models for r in args.runtime.split(",") if r.strip()]
    finally:
        exports.close()


def _run_cvpr24(args: argparse.Namespace, models: list[ModelSpec]) -> int:
    """Seconds per challenge case for each model under each --runtime, printed and written as JSON."""
    from kdsam.bench.challenge import time_cases

    rows = _each_runtime(
        args,
        models,
        lambda m, runtime, exports: time_cases(
            m,
            args.device,
            args.threads,
            repeats_2d=args.cvpr24_repeats,
            slices=args.cvpr24_slices,
            side=args.cvpr24_side,
            batch_size=args.slice_batch,
            runtime=runtime,
            exports=exports,
        ),
    )
    report = {"cvpr24_cases": rows}
    return _write_report(args, report, "cvpr24.json")


def _run_cvpr25(args: argparse.Namespace, models: list[ModelSpec]) -> int:
    """Seconds per CVPR25 step for each model under each --runtime, printed and written as JSON."""
    from kdsam.bench.cvpr25 import time_steps

    rows = _each_runtime(
        args,
        models,
        lambda m, runtime, exports: time_steps(
            m, args.device, args.threads, args.cvpr25_slices, args.cvpr25_side, runtime, exports
        ),
    )
    return _write_report(args, {"cvpr25_steps": rows}, "cvpr25.json")
