"""Faults of a training run end in one line naming the file or option, or are reported by name."""

from __future__ import annotations

import fcntl
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdsam.cli import main
from kdsam.data import open_dataset
from kdsam.data.imageio import write_png
from kdsam.distill.run import LOCK_FILE, RunDir
from kdsam.distill.stage1 import distill
from kdsam.distill.trainer import FitConfig
from kdsam.errors import KdsamError
from tests import hostile
from tests.distill.tiny import FAST, STUDENT, cut_after_checkpoint

ARGS = {"perceptual": "none", **STUDENT}


@pytest.fixture(scope="module")
def cut_once(tmp_path_factory, synthetic_root):
    """A stage-1 run stopped after its first epoch's checkpoint (made once, copied per test)."""
    from tests.distill.tiny import make_tiny_teacher

    tmp = tmp_path_factory.mktemp("cut")
    train, val = (open_dataset(f"folder:{synthetic_root}", s, max_side=128) for s in ("train", "val"))
    with cut_after_checkpoint(1):
        distill(make_tiny_teacher(), train, val, tmp / "run", cache_dir=tmp, cfg=FAST, **ARGS)
    return tmp


@pytest.fixture
def cut_run(cut_once, tmp_path):
    shutil.copytree(cut_once, tmp_path / "cut")
    return tmp_path / "cut" / "run"


def _resume(run, tiny_teacher, splits, cfg=FAST, **kw):
    args = {**ARGS, **kw}
    return distill(tiny_teacher, splits["train"], splits["val"], run, cache_dir=run.parent, cfg=cfg, resume=True,
                   **args)  # fmt: skip


def test_unreadable_images_and_empty_masks_are_named(tmp_path, tiny_teacher, synthetic_root):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    train = open_dataset(f"folder:{root}", "train", max_side=128)
    broken, empty = train.records[0], train.records[1]
    broken.image.write_bytes(b"not an image")
    with Image.open(empty.masks[0]) as mask:
        write_png(empty.masks[0], np.zeros((mask.height, mask.width), np.uint8))
    val = open_dataset(f"folder:{root}", "val", max_side=128)
    distill(tiny_teacher, train, val, tmp_path / "run", cache_dir=tmp_path, cfg=replace(FAST, epochs=1), **ARGS)
    config = json.loads((tmp_path / "run" / "config.json").read_text())["distill"]["train"]
    assert config["skipped"] == 2 and config["n"] == len(train) - 2
    reasons = {s["name"]: s["reason"] for s in config["skipped_files"]}
    assert str(broken.image) in reasons[broken.name] and "empty mask" in reasons[empty.name]
    log = (tmp_path / "run" / "log.txt").read_text()
    assert broken.name in log and empty.name in log


def test_truncated_checkpoint_is_one_line_naming_it(cut_run, tiny_teacher, splits):
    ckpt = cut_run / "checkpoint-distill.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(KdsamError, match=rf"{ckpt}: not a readable checkpoint: .*delete it to restart"):
        _resume(cut_run, tiny_teacher, splits)


def test_resume_with_other_model_options_is_refused(cut_run, tiny_teacher, splits):
    with pytest.raises(KdsamError, match=r"--input-size 96 \(the run started with 64\)"):
        _resume(cut_run, tiny_teacher, splits, input_size=96)
    with pytest.raises(KdsamError, match=r"--perceptual decoder"):
        _resume(cut_run, tiny_teacher, splits, perceptual="decoder")


def test_lr_given_on_resume_takes_effect_and_stale_temporaries_go(cut_run, tiny_teacher, splits):
    stale = cut_run / ".checkpoint-distill.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    _resume(cut_run, tiny_teacher, splits, cfg=replace(FAST, lr=2e-4))
    rows = [json.loads(line) for line in (cut_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == [1e-3, 2e-4]
    assert not stale.exists()


def test_resume_without_best_weights_finishes(cut_run, tiny_teacher, splits, monkeypatch):
    (cut_run / "best-distill.pt").unlink()
    student = _resume(cut_run, tiny_teacher, splits)
    assert (cut_run / "model.pt").is_file() and student is not None


def test_unwritable_run_folder_is_one_line(tmp_path, tiny_teacher, splits):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(KdsamError, match=rf"{blocker / 'run'}: run folder not writable"):
        distill(tiny_teacher, splits["train"], splits["val"], blocker / "run", cache_dir=tmp_path, cfg=FAST, **ARGS)


def test_unwritable_cache_folder_is_one_line(tmp_path, tiny_teacher, splits):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(KdsamError, match=r"cache folder not writable"):
        distill(tiny_teacher, splits["train"], splits["val"], tmp_path / "run", cache_dir=blocker, cfg=FAST, **ARGS)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("epochs", 0, "--epochs 0"), ("batch_size", 0, "--batch-size 0"), ("lr", math.nan, "--lr nan"),
     ("checkpoint_minutes", -1.0, "--checkpoint-minutes -1"), ("accumulate", 0, "--accumulate 0")],
)  # fmt: skip
def test_invalid_options_are_refused_up_front(option, value, message):
    with pytest.raises(KdsamError, match=message):
        FitConfig(**{option: value})


def test_invalid_option_on_the_command_line_is_one_line(tmp_path, capsys, synthetic_root, monkeypatch):
    import kdsam.commands.distill as command  # patched where the command looks it up, not in stage1

    monkeypatch.setattr(command, "distill", lambda *a, **k: pytest.fail("training started"))
    args = ["distill", "--data", f"folder:{synthetic_root}", "--out", str(tmp_path / "r"), "--lr", "nan"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--lr nan" in err and len(err.splitlines()) == 1


def test_device_that_is_absent_is_one_line(capsys, synthetic_root, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal of an absent device cannot be shown")
    args = ["distill", "--data", f"folder:{synthetic_root}", "--out", str(tmp_path / "r"), "--device", "cuda"]
    assert main(args) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_disk_full_at_a_checkpoint_is_one_line_keeping_the_last_good_one(cut_run, tiny_teacher, splits, monkeypatch):
    ckpt = cut_run / "checkpoint-distill.pt"
    before = ckpt.read_bytes()
    hostile.fill_disk(monkeypatch, room=4096)
    with pytest.raises(KdsamError, match="disk full while writing; free space and rerun") as err:
        _resume(cut_run, tiny_teacher, splits)
    assert "\n" not in str(err.value)
    assert ckpt.read_bytes() == before and torch.load(ckpt, weights_only=True)["state"]["epoch"] == 1
    assert not list(cut_run.glob(".*.tmp"))  # no partial file


def test_resume_with_other_data_or_seed_is_refused_naming_it(cut_run, tiny_teacher, splits, tmp_path):
    checkpoint = (cut_run / "checkpoint-distill.pt").read_bytes()
    with pytest.raises(KdsamError, match=r"--seed 1 \(the run started with 0\)"):
        _resume(cut_run, tiny_teacher, splits, cfg=replace(FAST, seed=1))
    other = shutil.copytree(Path(splits["train"].location.split(":", 1)[1]), tmp_path / "other")
    moved = {s: open_dataset(f"folder:{other}", s, max_side=128) for s in ("train", "val")}
    with pytest.raises(KdsamError, match=rf"--data folder:{other} \(the run started with {splits['train'].location}\)"):
        _resume(cut_run, tiny_teacher, moved)
    assert (cut_run / "checkpoint-distill.pt").read_bytes() == checkpoint


def test_a_resumed_stage_keeps_its_split(tmp_path):
    run = RunDir(tmp_path / "run")
    run.start("distill", resume=False)
    run.write_split("distill", "folder:/a", {"train": ["x", "y"], "val": ["z"], "test": []})
    run.checkpoint("distill").write_bytes(b"a checkpoint")  # the stage is under way: a resume
    with pytest.raises(KdsamError, match="cannot resume distill with --data folder:/b"):
        run.write_split("distill", "folder:/b", {"train": ["x", "y"], "val": ["z"], "test": []})
    with pytest.raises(KdsamError, match="another train split than it started with"):
        run.write_split("distill", "folder:/a", {"train": ["x"], "val": ["z"], "test": ["y"]})
    run.write_split("distill", "folder:/a", {"train": ["y", "x"], "val": ["z"], "test": []})  # the same split


def test_a_second_run_into_a_locked_folder_is_one_line(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    with open(folder / LOCK_FILE, "w") as other:  # another process's run: its own open file, locked
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(KdsamError, match="another kdsam run is writing into this folder") as err:
            RunDir(folder).start("distill", resume=False)
        assert "\n" not in str(err.value) and not (folder / "log.txt").exists()
    RunDir(folder).start("distill", resume=False)  # free again once that run has ended
