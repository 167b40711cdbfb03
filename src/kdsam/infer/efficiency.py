"""The seconds each case took, as the CVPR challenges' efficiency CSV (columns case, time): written
by `kdsam predict` on a folder, one file per torchrun rank, and read back by it (to keep earlier
cases' times) and by `kdsam evaluate` (to report them beside the scores)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from kdsam.errors import BadFileError
from kdsam.utils.atomic import write_text

EFFICIENCY_FILE = "efficiency.csv"  # the official script's name


def efficiency_path(folder: Path, rank: int = 0, world_size: int = 1) -> Path:
    """Where a rank writes its times: efficiency.csv alone, efficiency_rank<R>.csv under torchrun."""
    return folder / (EFFICIENCY_FILE if world_size == 1 else f"efficiency_rank{rank}.csv")


def read_efficiency(path: Path) -> dict[str, float]:
    """{case: seconds} from one efficiency CSV ({} when absent); one line naming the file when it is
    some other CSV."""
    if not path.is_file():
        return {}
    try:
        with path.open(newline="") as f:
            return {row["case"]: float(row["time"]) for row in csv.DictReader(f)}
    except (KeyError, ValueError, TypeError, UnicodeDecodeError, csv.Error) as err:
        raise BadFileError(
            f"{path}: not a timing file (columns case,time with seconds; {type(err).__name__}: {err}); "
            "move it away or choose another folder"
        ) from err


def read_times(folder: Path) -> dict[str, float]:
    """{case: seconds} from every efficiency*.csv in a predictions folder (one per rank)."""
    times: dict[str, float] = {}
    for path in sorted(folder.glob("efficiency*.csv")):
        times.update(read_efficiency(path))
    return times


def write_efficiency(path: Path, times: dict[str, float]) -> None:
    """{case: seconds} as the challenge's CSV, cases sorted, written atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", "time"])
    writer.writerows([name, f"{t:.4f}"] for name, t in sorted(times.items()))
    write_text(path, buf.getvalue())
