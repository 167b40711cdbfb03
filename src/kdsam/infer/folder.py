"""A folder of cases segmented into another (`kdsam predict --input`): under torchrun each rank takes
its share, cases already answered are left as they are, and one bad file is named and skipped, never
stopping the run. The seconds of each case go to the challenges' efficiency CSV as it finishes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from kdsam.errors import KdsamError, one_line
from kdsam.infer.cvpr25 import is_cvpr25_file
from kdsam.infer.efficiency import efficiency_path, read_efficiency, write_efficiency
from kdsam.infer.files import Prompts, kind_of, output_name, run_file
from kdsam.utils.ranks import torchrun_place

Case = tuple[Path, str]  # a file and its kind (kdsam.infer.files.kind_of)


@dataclass
class Share:
    """This rank's part of a folder run: the cases to answer, how many of its share were answered
    before, and where its seconds per case go."""

    todo: list[Case]
    done_before: int
    efficiency: Path
    rank: int = 0
    world_size: int = 1


def share_of(folder: Path, out: Path, overwrite: bool) -> Share:
    """The cases kdsam reads in `folder` (sorted by name) that fall to this rank and still need an
    answer in `out`. A CVPR25 case is answered afresh at every call: its evaluator leaves the previous
    step's segs there."""
    cases = [(p, kind) for p in sorted(folder.iterdir()) if (kind := kind_of(p)) is not None]
    if not cases:
        raise KdsamError(f"{folder}: no images, volumes or npz cases found")
    place = torchrun_place()
    mine = place.shard(cases)
    todo = [
        (p, k)
        for p, k in mine
        if overwrite or not (out / output_name(p, k)).exists() or (k == "npz" and is_cvpr25_file(p))
    ]
    efficiency = efficiency_path(out, place.rank, place.world_size)
    return Share(todo, len(mine) - len(todo), efficiency, place.rank, place.world_size)


def segment_share(
    model: Any,
    share: Share,
    out: Path,
    prompts_for: Callable[[Path], Prompts],
    window: Any,
    batch_size: int | None,
    skipped: Callable[[str], None],
) -> tuple[list[str], dict[str, float]]:
    """Each case of `share` into `out`; a case that fails, for whatever reason, goes to `skipped` as
    one line and the run goes on. Returns (the failed cases' names, {case: seconds} of every case
    this rank has timed, earlier runs' too)."""
    times = read_efficiency(share.efficiency)
    failed: list[str] = []
    desc = f"predict (rank {share.rank}/{share.world_size})" if share.world_size > 1 else "predict"
    for path, kind in tqdm(share.todo, desc=desc, unit="case"):
        try:
            record = run_file(model, path, out / output_name(path, kind), prompts_for(path), window, batch_size)
        except KdsamError as err:
            skipped(str(err))
            failed.append(path.name)
            continue
        except Exception as err:  # one bad file never stops the folder: any failure is named and skipped
            skipped(f"{path}: {type(err).__name__}: {one_line(err)}")
            failed.append(path.name)
            continue
        times[path.name] = record["seconds"]
        write_efficiency(share.efficiency, times)
    return failed, times
