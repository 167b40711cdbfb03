"""A small CT series built from pydicom's CT_small.dcm: non-square slices with a bright ball in them,
distinct instance UIDs, and files named out of position order (so a reader must sort)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

ROWS, COLUMNS, SLICES = 48, 64, 6


def ct_series(folder: Path, slices: int = SLICES, study: str | None = None) -> list[pydicom.Dataset]:
    """Write `slices` CT slices of ROWS x COLUMNS into `folder`, a new series in `study` (default: a
    new study too, so tests sharing a PACS do not meet); the datasets in position order."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study = generate_uid(), study or generate_uid()
    rows, cols = np.mgrid[:ROWS, :COLUMNS]
    datasets = []
    for k in range(slices):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        pixels = ds.pixel_array[:ROWS, :COLUMNS].copy()
        ball = (rows - 20) ** 2 / 12**2 + (cols - 36) ** 2 / 16**2 + (k - slices / 2) ** 2 / 3**2 < 1
        pixels[ball] += 400
        ds.PixelData = pixels.astype(ds.pixel_array.dtype).tobytes()
        ds.Rows, ds.Columns = ROWS, COLUMNS
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 2.5 * k]
        ds.SliceThickness = 2.5
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.save_as(folder / f"slice{slices - 1 - k:02d}.dcm")  # names out of position order
        datasets.append(ds)
    return datasets
