"""`kdsam report`: one HTML and markdown page from evaluations, benchmarks, training runs and overlays.

Inputs are found by what they contain, not by where they are: an evaluation `metrics.json`
(mean Dice/IoU of one model on one dataset), a benchmark JSON (`kdsam bench --json`), a demo
`report.json`, a run's `metrics.jsonl` (training curves) and PNG overlays. The page is built once
as neutral blocks (text, tables, images) and rendered twice, so HTML and markdown always agree.
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdsam.errors import KdsamError
from kdsam.models.spec import label_of
from kdsam.report import paper
from kdsam.report.overlays import agg_figure, save_figure
from kdsam.report.pareto import machine_line, table_rows, targets_rows
from kdsam.report.tables import html_table, markdown_table
from kdsam.utils.atomic import write_text

MAX_OVERLAYS = 60

Block = tuple  # ("text", str) | ("table", header, rows) | ("image", relative path, caption)


@dataclass
class Inputs:
    """Everything found in the given paths, by kind."""

    evals: list[dict[str, Any]] = field(default_factory=list)
    benches: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    overlays: list[Path] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Epoch records; a line being written while we read (the last, partial one) is skipped."""
    records = []
    for line in path.read_text().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            records.append(obj)
    return records


def _demo_evals(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """A demo report.json as evaluation rows (dataset "synthetic demo")."""
    rows = []
    for role in ("teacher", "student"):
        r = obj[role]
        name = r.get("name") or f"student:{r.get('backbone')}@{r.get('input_size')}"
        rows.append(
            {
                "model": name,
                "data": "synthetic demo",
                "mean": {"dice": r.get("dice"), "iou": r.get("iou")},
                "params": r.get("params_encoder"),
                "latency_ms": r.get("latency_ms"),
            }
        )
    return rows


FIGURE_STEMS = ("overlay", "cases", "pareto")  # pictures kdsam writes; dataset images are not among them


def classify(path: Path, found: Inputs, run_name: str | None = None) -> None:
    """Add one file to what was found, by its content (PNGs by the names kdsam gives its pictures)."""
    if path.suffix == ".png":
        if any(stem in path.stem for stem in FIGURE_STEMS):
            found.overlays.append(path)
    elif path.name == "metrics.jsonl":
        found.curves[run_name or path.parent.name] = _read_jsonl(path)
    elif path.suffix == ".json":
        obj = _read_json(path)
        if not isinstance(obj, dict):
            return
        if "results" in obj and "torch" in obj:
            found.benches.append(obj)
        elif "mean" in obj and "model" in obj:
            found.evals.append(obj)
        elif isinstance(obj.get("teacher"), dict) and isinstance(obj.get("student"), dict):
            found.evals.extend(_demo_evals(obj))


def collect(paths: list[str | Path], out: Path) -> Inputs:
    """Walk the given files and folders (skipping the output folder itself)."""
    found = Inputs()
    out = out.resolve()
    for p in map(Path, paths):
        if not p.exists():
            raise KdsamError(f"{p}: no such run folder, metrics file or benchmark JSON")
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            if f.is_file() and out not in f.resolve().parents:
                run = f.parent.relative_to(p).as_posix() if p.is_dir() else None
                classify(f, found, run_name=p.name if run in (None, ".") else f"{p.name}/{run}")
    return found


def _dataset(ev: dict[str, Any]) -> str:
    data = str(ev.get("data", "?"))
    return Path(data).name or data if "/" in data else data


def _fmt(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def accuracy_table(evals: list[dict[str, Any]], benches: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The paper's table shape: a row per model, Dice and IoU per dataset, parameters, latency.

    Parameters and latency come from the benchmark row of the same model (the last benchmark wins),
    else from the evaluation itself (the demo reports them).
    """
    datasets = sorted({_dataset(e) for e in evals})
    timing = {label_of(r["model"]): r for b in benches for r in b["results"] if r.get("status") == "ok"}
    models: dict[str, dict[str, Any]] = {}
    for ev in evals:
        row = models.setdefault(label_of(str(ev["model"])), {"params": None, "latency": None})
        row[_dataset(ev)] = ev["mean"]
        row["params"] = ev.get("params") or row["params"]
        row["latency"] = ev.get("latency_ms") or row["latency"]
    header = [
        "model", *(f"{d} {m}" for d in datasets for m in ("Dice", "IoU")), "encoder params (M)", "latency (ms)"
    ]  # fmt: skip
    rows = []
    for name, row in models.items():
        bench = timing.get(name, {})
        params = bench.get("params_encoder", row["params"])
        latency = bench.get("latency_ms_median", row["latency"])
        cells = [_fmt(row.get(d, {}).get(m), ".3f") for d in datasets for m in ("dice", "iou")]
        rows.append([name, *cells, _fmt(params and params / 1e6, ".1f"), _fmt(latency, ".1f")])
    return header, rows


def curves_plot(name: str, records: list[dict[str, Any]], path: Path) -> Path:
    """Train and validation loss per epoch, one panel per stage (their losses differ in scale)."""
    stages = list(dict.fromkeys(r.get("stage", "train") for r in records))
    fig = agg_figure((5 * len(stages), 3.5))
    axes = fig.subplots(1, len(stages), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        recs = [r for r in records if r.get("stage", "train") == stage]
        for key in ("train_loss", "val_loss"):
            pts = [(r.get("epoch", i), r[key]) for i, r in enumerate(recs) if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=".", label=key)
        ax.set_title(f"{name}: {stage}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def build_blocks(found: Inputs, out: Path) -> list[tuple[str, list[Block]]]:
    """The page as (section title, blocks); writes the curve plots and copies the overlays into `out`."""
    sections: list[tuple[str, list[Block]]] = []
    if found.evals:
        sections.append(("Accuracy and cost per dataset", [("table", *accuracy_table(found.evals, found.benches))]))
    header, rows = paper.published_table()
    sections.append(
        (
            "Published results (the paper)",
            [
                ("text", f"Mean Dice per test set. Source: {paper.SOURCE}. {paper.CAVEATS}"),
                ("table", header, rows),
            ],
        )
    )
    for i, bench in enumerate(found.benches):
        blocks: list[Block] = [("text", machine_line(bench)), ("table", *table_rows(bench["results"]))]
        if bench.get("targets"):
            blocks.append(("table", *targets_rows(bench["targets"])))
        sections.append((f"Benchmark {i + 1}" if len(found.benches) > 1 else "Benchmark", blocks))
    if found.curves:
        blocks = []
        for name, records in sorted(found.curves.items()):
            if records:
                png = curves_plot(name, records, out / "curves" / f"{_safe(name)}.png")
                blocks.append(("image", png.relative_to(out).as_posix(), f"training curves: {name}"))
        sections.append(("Training curves", blocks))
    if found.overlays:
        blocks = []
        for i, src in enumerate(found.overlays[:MAX_OVERLAYS]):
            dst = out / "overlays" / f"{i:03d}_{_safe(src.name)}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            blocks.append(("image", dst.relative_to(out).as_posix(), str(src)))
        if len(found.overlays) > MAX_OVERLAYS:
            blocks.append(("text", f"{len(found.overlays) - MAX_OVERLAYS} more overlays not shown."))
        sections.append(("Overlays", blocks))
    return sections


_CSS = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child,th:first-child{text-align:left}"
    "figure{display:inline-block;margin:4px}figcaption{font-size:11px;color:#555}img{max-width:560px}"
)
_e = html.escape

# One renderer per output format: a function per element of the page.
RENDERERS: dict[str, dict[str, Callable[..., str]]] = {
    "markdown": {
        "title": lambda t: f"# {t}\n",
        "section": lambda t: f"\n## {t}\n",
        "text": lambda t: f"\n{t}\n",
        "table": lambda header, rows: "\n" + markdown_table(header, rows),
        "image": lambda src, cap: f"\n![{cap}]({src})\n",
        "end": lambda: "",
    },
    "html": {
        "title": lambda t: (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(t)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{_e(t)}</h1>"
        ),
        "section": lambda t: f"<h2>{_e(t)}</h2>",
        "text": lambda t: f"<p>{_e(t)}</p>",
        "table": html_table,
        "image": lambda src, cap: (
            f"<figure><img src='{_e(src)}' alt='{_e(cap)}'><figcaption>{_e(cap)}</figcaption></figure>"
        ),
        "end": lambda: "</body></html>\n",
    },
}


def render(title: str, sections: list[tuple[str, list[Block]]], fmt: str) -> str:
    """The page in one format ("markdown" or "html")."""
    r = RENDERERS[fmt]
    parts = [r["title"](title)]
    for name, blocks in sections:
        parts.append(r["section"](name))
        parts += [r[kind](*rest) for kind, *rest in blocks]
    parts.append(r["end"]())
    return "".join(parts)


def make_report(paths: list[str | Path], out: str | Path, title: str = "kdsam report") -> dict[str, Path]:
    """Write out/report.html and out/report.md (plus curve PNGs and copied overlays); returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    found = collect(paths, out)
    if not (found.evals or found.benches or found.curves or found.overlays):
        raise KdsamError("found no metrics.json, benchmark JSON, metrics.jsonl or PNG in the given paths")
    sections = build_blocks(found, out)
    written = {"html": out / "report.html", "markdown": out / "report.md"}
    for fmt, path in written.items():
        write_text(path, render(title, sections, fmt))
    return written
