"""The teacher registry, the bundled LiteMedSAM weights, and one-line errors for bad checkpoints."""

from __future__ import annotations

import argparse
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from kdsam.cli import main
from kdsam.data.imageio import write_png
from kdsam.data.prompts import box_around
from kdsam.errors import KdsamError
from kdsam.eval.metrics import dice
from kdsam.models.checkpoint import read_state_dict
from kdsam.models.loading import load_model
from kdsam.models.sam import KDSam
from kdsam.models.teachers import TEACHERS, build_architecture, load_teacher
from kdsam.predictor import KDSamPredictor

from .conftest import tiny_sam

SLOW = os.environ.get("KDSAM_SLOW_TESTS") == "1"
SMALL = {"litemedsam", "mobilesam"}  # ViT-B/L/H take seconds to minutes just to initialise


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_every_registry_entry_is_complete_and_builds(name: str) -> None:
    entry = TEACHERS[name]
    assert entry.checkpoint_file.endswith((".pth", ".pt")) and entry.source
    assert entry.normalization in ("imagenet", "minmax") and entry.resize_mode in ("longest", "squash")
    if name not in SMALL and not SLOW:
        pytest.skip("large architecture: set KDSAM_SLOW_TESTS=1 to build it")
    model = build_architecture(name)
    assert isinstance(model, KDSam) and model.name == name and model.card["weights"] == "random"
    assert (model.normalization, model.resize_mode) == (entry.normalization, entry.resize_mode)
    assert model.prompt_encoder.input_image_size == (model.img_size, model.img_size)
    if SLOW and name in SMALL:  # ViT-H alone takes a minute at 1024 px on 2 cores
        with torch.no_grad():
            out = model.eval().image_encoder(torch.zeros(1, 3, model.img_size, model.img_size))
        assert out.shape == (1, 256, 64, 64)


def test_litemedsam_segments_a_synthetic_polyp(litemedsam: KDSam, polyp) -> None:
    image, truth = polyp
    assert litemedsam.card["sha256"] and not any(p.requires_grad for p in litemedsam.parameters())
    predictor = KDSamPredictor(litemedsam)
    predictor.set_image(image)
    assert predictor.features.shape == (1, 256, 64, 64)
    assert dice(predictor.segment(box_around(truth)[None]), truth) > 0.9


def truncated(path: Path) -> Path:
    """A real checkpoint cut to its first 1000 bytes, as an interrupted download leaves it."""
    torch.save(tiny_sam().state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    return path


def text_file(path: Path) -> Path:
    path.write_text("<html>404 Not Found</html>\n")
    return path


def with_pickled_objects(path: Path) -> Path:
    """A training checkpoint that also pickles a Python object (its argparse namespace)."""
    torch.save({"model": tiny_sam().state_dict(), "args": argparse.Namespace(lr=1e-4)}, path)
    return path


REFUSED = "not a weights-only checkpoint: refusing to unpickle (it would import"


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def pickle_with_code(path: Path) -> Path:
    """A plain pickle (protocol 4, which torch also warns about) that would run a shell command."""
    path.write_bytes(pickle.dumps({"state_dict": _RunsCode()}, protocol=4))
    return path


def empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def assert_one_line_naming(err: KdsamError, *parts: str) -> None:
    text = str(err)
    assert "\n" not in text
    for part in parts:
        assert part in text


@pytest.mark.parametrize(("name", "official"), [("sam_vit_b", "sam_vit_b_01ec64.pth"), ("mobilesam", "mobile_sam.pt")])
def test_missing_checkpoint_names_the_official_file(tmp_path: Path, name: str, official: str) -> None:
    with pytest.raises(KdsamError) as err:
        load_teacher(name)
    assert_one_line_naming(err.value, official, "download")
    with pytest.raises(KdsamError) as err:
        load_teacher(name, tmp_path / "nope.pth")
    assert_one_line_naming(err.value, official, "nope.pth")


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (truncated, "not a readable checkpoint: truncated or damaged"),
        (text_file, "not a readable checkpoint: not a PyTorch checkpoint"),
        (with_pickled_objects, f"{REFUSED} argparse.Namespace)"),
        (pickle_with_code, f"{REFUSED} {os.system.__module__}.system)"),
        (empty_file, "not a readable checkpoint: the file is empty"),
    ],
    ids=["truncated", "text", "pickled-objects", "pickle-with-code", "empty"],
)
def test_unreadable_checkpoint_is_one_line(
    tmp_path: Path, make: Callable[[Path], Path], problem: str, recwarn: pytest.WarningsRecorder
) -> None:
    """The file and what is wrong with it, with no warning; none of torch's text, which reads like
    advice to load the file unsafely."""
    path = make(tmp_path / "weights.pth")
    with pytest.raises(KdsamError) as err:
        load_teacher("litemedsam", path)
    assert_one_line_naming(err.value, str(path), problem)
    assert err.value.__suppress_context__ and len(str(err.value)) < 300
    assert not any(w in str(err.value).lower() for w in ("weights_only", "trust", "safe_globals"))
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd, "loss": 0.1},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"model": {f"_orig_mod.{k}": v for k, v in sd.items()}},
        lambda sd: {"model": sd, "best_loss": np.float64(0.1), "epoch": np.int64(3)},
    ],
    ids=["state_dict", "ddp-bare", "compiled", "numpy-metrics"],
)
def test_training_checkpoint_wrappers_are_removed(tmp_path: Path, wrap) -> None:
    state = tiny_sam().state_dict()
    torch.save(wrap(state), tmp_path / "ckpt.pth")
    loaded = read_state_dict(tmp_path / "ckpt.pth", "tiny")
    assert loaded.keys() == state.keys() and all(torch.equal(v, state[k]) for k, v in loaded.items())


def test_multi_gpu_training_checkpoint_loads_as_a_teacher(litemedsam: KDSam, tmp_path: Path) -> None:
    """As peers' multi-GPU training scripts save it: DistributedDataParallel's `module.` keys, in {"model": ...}."""
    state = litemedsam.state_dict()
    path = tmp_path / "trained.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3, "optimizer": {}}, path)
    loaded = load_teacher("litemedsam", path)
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    assert loaded.card["checkpoint"] == str(path)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_random_weights_are_never_presented_as_pretrained(name: str) -> None:
    """Only `load_teacher` (with a checkpoint) yields a model whose card names weights; an architecture is
    marked random, and a teacher without its checkpoint is an error, never a silent random model."""
    card = build_architecture(name).card
    assert card["weights"] == "random" and "checkpoint" not in card and "sha256" not in card
    if TEACHERS[name].default_checkpoint is None:
        with pytest.raises(KdsamError, match="download"):
            load_model(f"teacher:{name}")
    else:
        loaded = load_model(f"teacher:{name}").card
        assert "weights" not in loaded and len(loaded["sha256"]) == 64 and Path(loaded["checkpoint"]).is_file()


@pytest.fixture(scope="module")
def foreign_checkpoint(litemedsam: KDSam, tmp_path_factory) -> Path:
    """LiteMedSAM's weights under a name a user might pass to another teacher."""
    path = tmp_path_factory.mktemp("ckpt") / "mobile_sam.pt"
    torch.save(litemedsam.state_dict(), path)
    return path


def test_checkpoint_of_another_model_is_refused(foreign_checkpoint: Path) -> None:
    with pytest.raises(KdsamError) as err:
        load_teacher("mobilesam", foreign_checkpoint)
    assert_one_line_naming(err.value, str(foreign_checkpoint), "not a mobilesam")
    assert "missing" in str(err.value) or "wrong shape" in str(err.value)


def write_image(path: Path) -> Path:
    write_png(path, np.full((48, 64, 3), 128, np.uint8))
    return path


def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path: Path, foreign_checkpoint: Path, capsys) -> None:
    image = write_image(tmp_path / "image.png")
    out = tmp_path / "mask.png"
    argv = ["predict", "--image", str(image), "--box", "4,4,40,40", "--out", str(out)]
    assert main([*argv, "--model", f"teacher:mobilesam={foreign_checkpoint}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(foreign_checkpoint) in err and "Traceback" not in err
    assert not out.exists()
