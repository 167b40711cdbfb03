"""A synthetic abdominal CT set in the nnU-Net v2 raw layout, for the demo, tests and benchmarks.

Each case is a body of soft tissue (about 30 HU) in air (-1000 HU) holding two organs that vary
in place and size from case to case: a large "liver" (about 100 HU, contrast-enhanced) and a
smaller, brighter "kidney" (about 180 HU), with Gaussian noise, anisotropic spacing
(0.8 x 0.8 x 2.5 mm) and a few slices above and below the organs that hold no foreground, as real
scans do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LABELS = {"background": 0, "liver": 1, "kidney": 2}
SPACING = (0.8, 0.8, 2.5)  # mm along x, y, z (the NIfTI array's i, j, k)


def _ellipsoid(grid: tuple[np.ndarray, ...], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0


def synthetic_case(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image in HU as int16, labels uint8), both (X, Y, Z)."""
    x, y, z = shape
    grid = np.ogrid[:x, :y, :z]  # broadcast, so a 512x512x100 case does not hold three full grids
    body = _ellipsoid(grid[:2], np.array([x / 2, y / 2]), np.array([0.46 * x, 0.38 * y]))
    liver_c = np.array([x * rng.uniform(0.3, 0.4), y * rng.uniform(0.42, 0.52), z * rng.uniform(0.45, 0.55)])
    liver_r = np.array([x * rng.uniform(0.14, 0.2), y * rng.uniform(0.12, 0.17), z * rng.uniform(0.25, 0.32)])
    kidney_c = np.array([x * rng.uniform(0.64, 0.72), y * rng.uniform(0.5, 0.6), z * rng.uniform(0.4, 0.6)])
    kidney_r = np.array([x * rng.uniform(0.06, 0.09), y * rng.uniform(0.08, 0.11), z * rng.uniform(0.15, 0.22)])
    labels = np.zeros(shape, np.uint8)
    labels[_ellipsoid(grid, liver_c, liver_r) & body] = LABELS["liver"]
    labels[_ellipsoid(grid, kidney_c, kidney_r) & body] = LABELS["kidney"]
    hu = np.broadcast_to(np.where(body, 30.0, -1000.0), shape).astype(np.float32)
    hu[labels == 1] = rng.uniform(90, 115)
    hu[labels == 2] = rng.uniform(170, 200)
    hu += rng.normal(0, 15, shape).astype(np.float32)
    return np.round(hu).astype(np.int16), labels


def write_synthetic_ct(
    root: str | Path, n_cases: int = 12, shape: tuple[int, int, int] = (96, 96, 24), seed: int = 0
) -> Path:
    """Write `n_cases` cases of `shape` (X, Y, Z) as an nnU-Net v2 raw dataset at root; returns root."""
    import nibabel as nib

    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = np.diag([*SPACING, 1.0])
    for i in range(n_cases):
        image, labels = synthetic_case(shape, np.random.default_rng([seed, i]))
        name = f"ct_{i:03d}"
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"{name}_0000.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), root / "labelsTr" / f"{name}.nii.gz")
    meta = {
        "channel_names": {"0": "CT"},
        "labels": LABELS,
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "name": "kdsam synthetic CT (two organs)",
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return root
