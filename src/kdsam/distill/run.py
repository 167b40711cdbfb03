"""A run folder: config, split, metrics log, checkpoints and the final model, all written atomically.

A folder belongs to one run at a time: the writing process holds an OS lock (flock) on RUN/.lock
for as long as it lives, so a second run started into the same folder is refused in one line
instead of both writing and one being silently lost. The kernel drops the lock when the process
ends, however it ends (Ctrl-C, SIGKILL), so a stale lock never blocks a resume.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

from kdsam.errors import KdsamError
from kdsam.utils.atomic import write_json, write_text

log = logging.getLogger("kdsam")
LOCK_FILE = ".lock"
_HELD: dict[str, int] = {}  # run folder -> the open descriptor holding its lock, for this process's life


class RunDir:
    """RUN/config.json, split.json, metrics.jsonl, log.txt, checkpoint-<stage>.pt, model.pt."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def checkpoint(self, stage: str) -> Path:
        return self.path / f"checkpoint-{stage}.pt"

    @property
    def model(self) -> Path:
        return self.path / "model.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    def start(self, stage: str, resume: bool, writer: bool = True) -> None:
        """Create the folder; refuse to redo a finished stage, or to restart an interrupted one
        unless resuming it. The writer (rank 0) also removes temporary files a killed save left
        behind and sends this stage's log lines to RUN/log.txt."""
        ckpt = self.checkpoint(stage)
        if self.is_done(stage):
            raise KdsamError(f"{self.path}: its {stage} stage has finished; choose another folder to train again")
        if resume and not ckpt.is_file():
            raise KdsamError(f"{ckpt}: nothing to resume (no checkpoint of stage {stage!r} in this run)")
        if not resume and ckpt.is_file():
            raise KdsamError(
                f"{self.path}: holds an unfinished {stage} run; pass --resume to continue it or choose another folder"
            )
        if not writer:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock()
            for stale in self.path.glob(".*.tmp"):  # only the writer saves here: any left are a killed save's
                stale.unlink()
            handler = logging.FileHandler(self.path / "log.txt")
        except OSError as err:
            raise KdsamError(f"{self.path}: run folder not writable ({err.strerror}); choose another --out") from err
        for old in [h for h in log.handlers if isinstance(h, logging.FileHandler)]:
            log.removeHandler(old)
            old.close()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)

    def lock(self) -> None:
        """Take the folder's lock for this process (again: a no-op), or refuse: another process holds it."""
        key = str(self.path.resolve())
        if key in _HELD:
            return
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(fd)
            raise KdsamError(
                f"{self.path}: another kdsam run is writing into this folder (it holds {LOCK_FILE}); "
                "wait for it to finish, or choose another --out"
            ) from err
        except OSError:
            os.close(fd)
            raise
        _HELD[key] = fd

    def _read(self, name: str) -> dict[str, Any]:
        path = self.path / name
        return json.loads(path.read_text()) if path.is_file() else {}

    def _set(self, name: str, stage: str, value: dict[str, Any]) -> None:
        """config.json and split.json hold one entry per stage: replace one, keep the others."""
        current = self._read(name)
        current[stage] = value
        write_json(self.path / name, current)

    def is_done(self, stage: str) -> bool:
        return bool(self._read("config.json").get(stage, {}).get("completed"))

    def finish(self, stage: str) -> None:
        """Mark a stage complete and drop what only resuming needed (optimiser state, best weights):
        they are several times the model's size."""
        self._set("config.json", stage, {**self._read("config.json")[stage], "completed": True})
        self.checkpoint(stage).unlink(missing_ok=True)
        (self.path / f"best-{stage}.pt").unlink(missing_ok=True)

    def write_config(self, stage: str, config: dict[str, Any]) -> None:
        self._set("config.json", stage, config)

    def write_split(self, stage: str, location: str, splits: dict[str, list[str]]) -> None:
        """The exact sample names of each split, so evaluation can prove it never saw training images.
        A stage being resumed (its checkpoint is here) keeps the split it started with: another one
        would mix two datasets or two splits in one run, so it is refused."""
        before = self._read("split.json").get(stage)
        if before is not None and self.checkpoint(stage).is_file():
            if before.get("data") != location:
                raise KdsamError(
                    f"{self.path}: cannot resume {stage} with --data {location} (the run started with "
                    f"{before.get('data')}); resume with the same data or choose another folder"
                )
            changed = [s for s in splits if sorted(before.get(s, [])) != sorted(splits[s])]
            if changed:
                raise KdsamError(
                    f"{self.path}: cannot resume {stage} with another {changed[0]} split than it started with "
                    "(another --seed or --split-file, or the dataset's files changed); resume with the same "
                    "options or choose another folder"
                )
        self._set("split.json", stage, {"data": location, **splits})

    def read_config(self) -> dict[str, Any]:
        if not (self.path / "config.json").is_file():
            raise KdsamError(f"{self.path}: not a kdsam run folder (no config.json); run `kdsam distill` first")
        return self._read("config.json")

    def append_metrics(self, row: dict[str, Any]) -> None:
        """One JSON line per epoch. Rewritten whole (atomically) so a crash never leaves half a line."""
        rows = self.read_metrics()
        rows = [r for r in rows if not (r["stage"] == row["stage"] and r["epoch"] >= row["epoch"])]
        text = "".join(json.dumps(r) + "\n" for r in [*rows, row])
        write_text(self.metrics, text)

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def check_resume(self, stage: str, options: dict[str, Any]) -> None:
        """A resumed stage must train the same model the same way: refuse, naming the first option
        that differs from the one the run started with (its checkpoint would not fit, or would
        silently mean something else)."""
        before = self._read("config.json").get(stage, {}).get("options")
        if before is None:
            return
        for name, value in options.items():
            old = before.get(name)
            if name in before and json.dumps(old, default=str) != json.dumps(value, default=str):
                flag = "--" + name.replace("_", "-")
                raise KdsamError(
                    f"{self.path}: cannot resume {stage} with {flag} {value} (the run started with {old}); "
                    "resume with the same options or choose another folder"
                )
