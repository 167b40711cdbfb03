"""The benchmark's targets live in a config file beside it (targets.json), not in code: a team with
other hardware or other goals passes its own with `kdsam bench --targets FILE`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdsam.errors import KdsamError

DEFAULT = Path(__file__).with_name("targets.json")


def load_targets(path: str | Path | None = None) -> dict[str, Any]:
    """The targets JSON (the bundled one by default); one line naming the file when it is unusable."""
    path = Path(path or DEFAULT)
    try:
        targets = json.loads(path.read_text())
        for row in targets["speedups"]:
            row["student"], row["reference"], float(row["min"])
        float(targets["min_flop_efficiency"])
        {k: float(v) for k, v in targets["cvpr24_seconds_per_case"].items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise KdsamError(
            f"{path}: not a targets file ({type(err).__name__}: {err}); copy {DEFAULT.name} from kdsam and edit it"
        ) from err
    return targets
