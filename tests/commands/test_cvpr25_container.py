"""The CVPR25 container's `predict.sh`, run as the evaluator runs it (twice: the box, then a click)
with a stand-in workspace: temporary inputs/outputs folders and a tiny model instead of the image's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from kdsam.models.loading import save_model
from kdsam.models.student import build_student
from tests.infer.test_cvpr25 import BOX_A, click_step, volume

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "docker" / "cvpr25"


def test_predict_sh_answers_each_call_and_keeps_the_cache_in_outputs(tmp_path: Path) -> None:
    inputs, outputs = tmp_path / "inputs", tmp_path / "outputs"
    inputs.mkdir()
    outputs.mkdir()
    save_model(build_student(None, "resnet18", 64), tmp_path / "tiny.pt")
    imgs, _ = volume()
    np.savez_compressed(inputs / "CT_case.npz", imgs=imgs, spacing=[1.0] * 3, boxes=[BOX_A])
    bin_dir = str(Path(sys.executable).parent)  # the `kdsam` installed beside this Python
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "INPUTS": str(inputs)}
    env |= {"OUTPUTS": str(outputs), "KDSAM_MODEL": str(tmp_path / "tiny.pt")}
    env.pop("KDSAM_CACHE", None)
    run = subprocess.run(["sh", str(FOLDER / "predict.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    segs = np.load(outputs / "CT_case.npz")["segs"]
    assert segs.shape == imgs.shape and segs.dtype == np.uint8
    assert list((outputs / ".kdsam_cache" / "cvpr25").iterdir())  # embeddings kept for the next call

    click_step(inputs / "CT_case.npz", imgs, segs)
    run = subprocess.run(["sh", str(FOLDER / "predict.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "1 segmented, 0 already done" in run.stdout


def test_dockerfile_copies_what_exists() -> None:
    text = (FOLDER / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
    assert 'CMD ["sh", "predict.sh"]' in text
