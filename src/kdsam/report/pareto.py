"""Benchmark output for people: a markdown table and a Pareto plot (accuracy or size against latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdsam.models.spec import is_student, label_of
from kdsam.report.overlays import agg_figure, save_figure
from kdsam.report.tables import markdown_table

COLUMNS = [
    ("model", "model", "{}"),
    ("status", "status", "{}"),
    ("input_size", "input", "{}"),
    ("params_encoder", "encoder params (M)", "M"),
    ("gflops", "GFLOPs", "{:.1f}"),
    ("latency_ms_median", "latency median (ms)", "{:.1f}"),
    ("latency_ms_p90", "p90 (ms)", "{:.1f}"),
    ("images_per_s", "images/s", "{:.2f}"),
    ("decoder_latency_ms", "decoder (ms)", "{:.1f}"),
    ("train_step_ms", "train step (ms)", "{:.1f}"),
    ("peak_memory_mb", "peak mem (MB)", "{:.0f}"),
    ("achieved_gflops_per_s", "GFLOP/s", "{:.0f}"),
    ("flop_efficiency", "of matmul peak", "{:.0%}"),
    ("vs_first", "vs first", "{:.3g}x"),
    ("student_speedup", "student speed-up", "{:.1f}x"),
]


def _cell(value: Any, fmt: str) -> str:
    if value is None or value == "":
        return "-"
    if fmt == "M":
        return f"{value / 1e6:.1f}"
    return fmt.format(value)


def table_rows(results: list[dict[str, Any]], columns: list[tuple[str, str, str]] = COLUMNS) -> tuple[list, list]:
    """(header, rows of formatted cells); missing values are '-'."""
    rows = [[_cell(r.get(key), fmt) for key, _, fmt in columns] for r in results]
    return [title for _, title, _ in columns], rows


def targets_rows(targets: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the target verdicts."""
    rows = [[t["target"], str(t["measured"]), "yes" if t["holds"] else "NO"] for t in targets]
    return ["target", "measured", "holds"], rows


def machine_line(report: dict[str, Any]) -> str:
    """Which machine and settings the numbers belong to."""
    peak = report.get("matmul_peak_gflops")
    return (
        f"Device: {report['device']} ({report.get('device_name', '?')}), {report['threads']} threads, "
        f"torch {report['torch']}, batch {report.get('batch_size', 1)}"
        + (f", fp32 matmul peak {peak:.0f} GFLOP/s" if peak else "")
        + "."
    )


def bench_markdown(report: dict[str, Any]) -> str:
    """The whole benchmark as markdown: machine line, table, failures, targets."""
    text = machine_line(report) + "\n\n" + markdown_table(*table_rows(report["results"]))
    failed = [r for r in report["results"] if r["status"] != "ok"]
    if failed:
        text += "\n" + "".join(f"- {r['model']}: {r['status']} ({r.get('error', '')})\n" for r in failed)
    if report.get("targets"):
        text += "\n" + markdown_table(*targets_rows(report["targets"]))
    return text


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and the y value."""

    def beats(a: tuple[float, float], b: tuple[float, float]) -> bool:
        ya, yb = (a[1], b[1]) if higher_is_better else (-a[1], -b[1])
        return a[0] <= b[0] and ya >= yb and a != b

    return [i for i, p in enumerate(points) if not any(beats(q, p) for q in points)]


def pareto_plot(results: list[dict[str, Any]], path: str | Path, dice: dict[str, float] | None = None) -> Path:
    """PNG: Dice against latency when evaluation results are given, else parameters against latency.

    Latency is on a log axis: the models span three orders of magnitude. The front is drawn as a line.
    Fast-path variants are left out: they are one model, and the table compares them.
    """
    dice = dice or {}
    ok = [
        r
        for r in results
        if r["status"] == "ok"
        and r.get("variant", "default") == "default"
        and (not dice or label_of(r["model"]) in dice)
    ]
    use_dice = bool(dice) and bool(ok)
    ys = [dice[label_of(r["model"])] if use_dice else r["params_total"] / 1e6 for r in ok]
    points = [(r["latency_ms_median"], y) for r, y in zip(ok, ys, strict=True)]
    fig = agg_figure((7, 4.5), dpi=120)
    ax = fig.subplots()
    for i, (r, (x, y)) in enumerate(zip(ok, points, strict=True)):
        ax.scatter(x, y, s=30, color="tab:orange" if is_student(r) else "tab:blue")
        # alternate above/below: twins (SAM ViT-B and MedSAM) sit on the same point
        ax.annotate(r["model"], (x, y), textcoords="offset points", xytext=(4, 4 if i % 2 else -10), fontsize=7)
    front = sorted(points[i] for i in pareto_front(points, higher_is_better=use_dice))
    if len(front) > 1:
        ax.plot(*zip(*front, strict=True), "--", color="grey", lw=1, label="Pareto front")
        ax.legend(loc="best", fontsize=8)
    ax.set_xscale("log")
    ax.margins(0.15)  # room for the labels
    if not use_dice:
        ax.set_yscale("log")
    ax.set_xlabel("image encoder latency (ms, log)")
    ax.set_ylabel("Dice" if use_dice else "parameters (M, log)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
