"""Layers stand on their own: importing kdsam.eval, or the inference commands (predict, evaluate,
serve), never loads the training code (kdsam.distill, the training commands' options, timm's
optimisers and schedulers; torch.optim is no marker: `import torch` loads it)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import kdsam.eval

TRAINING = ("kdsam.distill", "kdsam.commands.train_options", "timm.optim", "timm.scheduler")


def loaded_after_importing(modules: list[str]) -> list[str]:
    """Every module loaded by a fresh interpreter that imports `modules`."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    return json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def training(loaded: list[str]) -> list[str]:
    return [m for m in loaded if any(m == t or m.startswith(f"{t}.") for t in TRAINING)]


def test_eval_does_not_import_distill() -> None:
    modules = [f"kdsam.eval.{m.name}" for m in pkgutil.iter_modules(kdsam.eval.__path__)]
    assert {"kdsam.eval.evaluate", "kdsam.eval.metrics", "kdsam.eval.compare"} <= set(modules)
    loaded = loaded_after_importing(modules)
    assert "kdsam.eval.evaluate" in loaded  # the check itself ran
    assert [m for m in loaded if m == "kdsam.distill" or m.startswith("kdsam.distill.")] == []


@pytest.mark.parametrize("command", ["predict", "predict_pacs", "evaluate", "serve"])
def test_inference_commands_do_not_import_training(command: str) -> None:
    """Each command's module as `kdsam COMMAND --help` imports it, and as it runs (its library)."""
    library = {
        "predict": ["kdsam.infer.folder", "kdsam.infer.box_file", "kdsam.infer.efficiency", "kdsam.utils.ranks"],
        "predict_pacs": ["kdsam.infer.dicomweb"],
        "evaluate": ["kdsam.eval.evaluate", "kdsam.eval.cases"],
        "serve": ["kdsam.serve.app", "kdsam.serve.server"],
    }[command]
    loaded = loaded_after_importing([f"kdsam.commands.{command}", *library])
    assert f"kdsam.commands.{command}" in loaded  # the check itself ran
    assert training(loaded) == []


def test_the_training_commands_are_seen_by_the_check() -> None:
    """The check can fail: a training command does load the training stack."""
    assert "kdsam.distill.trainer" in training(loaded_after_importing(["kdsam.commands.finetune"]))


@pytest.mark.parametrize("command", ["predict", "evaluate", "serve"])
def test_help_of_an_inference_command_loads_no_torch(command: str) -> None:
    """`kdsam predict --help`, `kdsam evaluate --help` and `kdsam serve --help` import only the
    command's module: no torch (seconds on a loaded CPU), which the work itself imports when it runs."""
    loaded = loaded_after_importing(["kdsam.cli", f"kdsam.commands.{command}"])
    assert f"kdsam.commands.{command}" in loaded
    assert "torch" not in loaded
