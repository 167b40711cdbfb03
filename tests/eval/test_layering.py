"""Evaluation stands on its own: importing kdsam.eval never loads the training code (kdsam.distill)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import kdsam.eval


def test_eval_does_not_import_distill() -> None:
    modules = [f"kdsam.eval.{m.name}" for m in pkgutil.iter_modules(kdsam.eval.__path__)]
    assert {"kdsam.eval.evaluate", "kdsam.eval.metrics", "kdsam.eval.compare"} <= set(modules)
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('kdsam.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    assert "kdsam.eval.evaluate" in loaded  # the check itself ran
    assert [m for m in loaded if m == "kdsam.distill" or m.startswith("kdsam.distill.")] == []
