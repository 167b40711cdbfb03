"""Where kdsam keeps what it computes once (teacher embeddings, slice stores): one folder per machine."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """$KDSAM_CACHE, else ~/.cache/kdsam: shared by every run on the machine."""
    return Path(os.environ.get("KDSAM_CACHE", Path.home() / ".cache" / "kdsam"))
