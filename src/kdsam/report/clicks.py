"""Dice against the number of clicks, one line per model: how fast each model answers corrections."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kdsam.report.overlays import agg_figure, save_figure

CLICKS_PLOT = "dice_vs_clicks.png"
_STEP = re.compile(r"dice@(\d+)")


def click_curve(result: dict[str, Any]) -> list[tuple[int, float]]:
    """[(clicks, mean Dice)] from a metrics.json of an interactive evaluation (empty for boxes)."""
    points = [(int(m.group(1)), value) for key, value in result["mean"].items() if (m := _STEP.fullmatch(key))]
    return sorted(p for p in points if p[1] is not None)


def dice_vs_clicks_plot(results: list[dict[str, Any]], path: str | Path) -> Path:
    """One line per evaluated model and dataset; the x axis counts clicks (0 = the box alone)."""
    fig = agg_figure((5, 3.5))
    ax = fig.subplots()
    for result in results:
        curve = click_curve(result)
        if curve:
            ax.plot(*zip(*curve, strict=True), marker=".", label=f"{result['model']} ({result['data']})")
    ax.set_xlabel("clicks")
    ax.set_ylabel("mean Dice")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
