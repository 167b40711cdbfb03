"""Write the synthetic CT used in docs/medical.md: body, an organ (label 1) and a vertebra, in HU.

python scripts/make_volume.py OUT_DIR  ->  OUT_DIR/ct.nii.gz (160x128x24 voxels, 1x1x3 mm) and
OUT_DIR/truth/ct.nii.gz (the organ), on the same grid.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np


def main(out: Path) -> None:
    i, j, k = np.meshgrid(np.arange(160), np.arange(128), np.arange(24), indexing="ij")
    body = ((i - 80) / 72) ** 2 + ((j - 64) / 52) ** 2 < 1
    organ = ((i - 58) / 30) ** 2 + ((j - 58) / 24) ** 2 + ((k - 12) / 9) ** 2 < 1
    bone = ((i - 80) / 10) ** 2 + ((j - 100) / 9) ** 2 < 1
    hu = np.where(body, 0.0, -1000.0) + 70 * organ + 700 * bone
    hu += np.random.default_rng(0).normal(0, 12, hu.shape)
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    out.mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(hu.astype(np.int16), affine), out / "ct.nii.gz")
    nib.save(nib.Nifti1Image(organ.astype(np.uint8), affine), out / "truth" / "ct.nii.gz")
    print(
        f"{out / 'ct.nii.gz'}: organ voxels i {i[organ].min()}..{i[organ].max()}, "
        f"j {j[organ].min()}..{j[organ].max()}, k {k[organ].min()}..{k[organ].max()}"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "example"))
