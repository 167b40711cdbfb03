"""`kdsam cache`'s job: every missing teacher entry of a dataset, computed ahead of training."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdsam.data.dataset import Dataset
from kdsam.distill.cache import open_cache
from kdsam.distill.items import index_dataset
from kdsam.distill.process import TrainingProcess
from kdsam.models.sam import KDSam

log = logging.getLogger("kdsam")


RANDOM_WEIGHTS = "RANDOM (timing only: not a pretrained teacher)"  # how every report labels such a teacher


def fill_teacher_cache(
    teacher: KDSam,
    datasets: Sequence[Dataset],
    process: TrainingProcess,
    cache_dir: str | Path | None = None,
    batch_size: int = 8,
    logits: bool = True,
    background: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Embeddings (and the mask logits of every box, which the default perceptual loss reads) of each
    image of `datasets`; each rank takes a disjoint share, finished entries are never recomputed.
    Returns the counts over all ranks: images, computed, reused, skipped, seconds. `background`
    and `seed`: the volume slices without foreground that distill will draw (as its options)."""
    teacher.to(process.device)
    cache = open_cache(teacher, cache_dir, process)
    start = time.perf_counter()
    totals = {"images": 0, "computed": 0, "reused": 0, "skipped": 0}
    for data in datasets:
        index = index_dataset(
            data, process, cache, logits=logits, batch_size=batch_size, background=background, seed=seed
        )
        totals["images"] += len(index.entries)
        totals["computed"] += index.computed
        totals["reused"] += index.reused
        totals["skipped"] += len(index.skipped)
        for s in index.skipped:
            log.warning("cache: skipped %s (%s)", s["name"], s["reason"])
    seconds = time.perf_counter() - start
    return {
        **totals,
        "seconds": round(seconds, 3),
        "computed_images_per_s": round(totals["computed"] / seconds, 3) if totals["computed"] else None,
        "teacher": teacher.name,
        "weights": RANDOM_WEIGHTS if teacher.card.get("weights") == "random" else teacher.card.get("sha256", "unknown"),
        "device": str(process.device),
        "world_size": process.world_size,
        "batch_size": batch_size,
        "cache": str(cache.dir),
    }
