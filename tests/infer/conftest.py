"""A tiny random student saved once for the DICOM SEG and DICOMweb tests (geometry and plumbing are
tested here, not accuracy)."""

from __future__ import annotations

import pytest
import torch

from kdsam.models.loading import save_model
from kdsam.models.student import build_student


@pytest.fixture(scope="package")
def tiny_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.manual_seed(0)  # the same random weights each run: their masks are not empty by chance
    save_model(build_student(None, "resnet18", 64), path)
    return str(path)
