"""MetaImage (.mha, .mhd) and NRRD (.nrrd, .nhdr) volumes through SimpleITK: the formats of
grand-challenge and 3D Slicer, read into kdsam's `Volume` and written back as label maps on their grid.

ITK keeps geometry in LPS: voxel index v lies at Origin + Direction @ diag(Spacing) @ v. kdsam's
affine is RAS+, so the matrix and the origin flip in x and y. SimpleITK's arrays are (z, y, x);
kdsam holds (x, y, z), the NIfTI way.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdsam.data.volume import Volume, check_size, mask_array
from kdsam.errors import BadFileError, KdsamError, one_line

if TYPE_CHECKING:
    import SimpleITK as sitk

FORMATS = {".mha": "MetaImage", ".mhd": "MetaImage", ".nrrd": "NRRD", ".nhdr": "NRRD"}
MASK_SUFFIXES = {".mha": ".mha", ".mhd": ".mha", ".nrrd": ".nrrd", ".nhdr": ".nrrd"}
WRITTEN_SUFFIXES = (".mha", ".nrrd")  # one file each, so a mask replaces its target in one rename
LPS = np.diag([-1.0, -1.0, 1.0])  # LPS <-> RAS: x and y change sign
# Where a detached header names the file of its voxels: MetaImage's ElementDataFile, NRRD's data file.
DATA_FILE = {
    ".mhd": re.compile(r"^ElementDataFile\s*=\s*(.+?)\s*$", re.MULTILINE),
    ".nhdr": re.compile(r"^data ?file:\s*(.+?)\s*$", re.MULTILINE),
}


def data_files(path: Path) -> tuple[Path, ...]:
    """The file a detached header (.mhd, .nhdr) keeps its voxels in, so that a missing one is named
    and a cache keyed on a case's bytes sees it change; () for single files, and for headers naming
    their data by a list or a pattern."""
    pattern = DATA_FILE.get(path.suffix.lower())
    if pattern is None:
        return ()
    try:
        with path.open("rb") as f:
            match = pattern.search(f.read(1 << 16).decode("latin-1"))
    except OSError:
        return ()
    name = match.group(1) if match else ""
    if not name or name.upper() in ("LOCAL", "LIST") or " " in name or "%" in name:
        return ()
    return (path.parent / name,)


def _reason(err: RuntimeError) -> str:
    """ITK's own words on one line, without the C++ source location and object address heading them;
    of a chain of messages (NRRD's), the first and the last, which says what was wrong."""
    lines = [line for line in str(err).splitlines()[1:] if line.strip()] or [str(err)]
    text = one_line(" ".join(lines) if len(lines) <= 2 else f"{lines[0]} ... {lines[-1]}")
    text = re.sub(r"^(sitk::|ITK )ERROR: (\w+\(0x[0-9a-fA-F]+\): )?", "", text)
    return textwrap.shorten(text, 200, placeholder=" ...")


@contextmanager
def _itk_errors(path: Path) -> Iterator[None]:
    """SimpleITK's RuntimeError (lines of ITK text) as one line naming the file and what to do."""
    try:
        yield
    except RuntimeError as err:
        kind = FORMATS.get(path.suffix.lower(), "image")
        raise BadFileError(
            f"{path}: unreadable {kind} ({_reason(err)}); is it truncated or damaged? export it again"
        ) from err


def _information(path: Path) -> sitk.ImageFileReader:
    """A reader that has read `path`'s header and no voxel."""
    import SimpleITK as sitk

    for data in data_files(path):
        if not data.is_file():
            raise BadFileError(f"{path}: its data file {data.name} is missing; keep it beside the header")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with _itk_errors(path):
        reader.ReadImageInformation()
    return reader


def header_size(path: Path) -> tuple[int, ...]:
    """(x, y, z, ...) as the header claims it, without reading the voxels."""
    return tuple(_information(path).GetSize())


def read_itk(path: Path) -> Volume:
    """A MetaImage or NRRD volume as (x, y, z) float32 in the file's units, with its RAS+ affine; a 2D
    image gains a slice axis. The header is checked before any voxel is read: an empty, over-large,
    4D or multi-component image is refused in one line."""
    import SimpleITK as sitk

    reader = _information(path)
    size = tuple(reader.GetSize())
    check_size(path, size)
    while len(size) > 3 and size[-1] == 1:
        size = size[:-1]
    if len(size) > 3:
        raise BadFileError(
            f"{path}: a {len(size)}D image of size {size}; give one 3D volume "
            "(e.g. one time point: SimpleITK's image[:, :, :, 0])"
        )
    components = reader.GetNumberOfComponents()
    if components > 1:
        raise BadFileError(
            f"{path}: {components} values per voxel (a vector or RGB image); give one greyscale volume "
            "(e.g. SimpleITK.VectorIndexSelectionCast(image, 0))"
        )
    with _itk_errors(path):
        image = reader.Execute()
    data = sitk.GetArrayViewFromImage(image).astype(np.float32).T  # (z, y, x) -> (x, y, z)
    data = data.reshape(size + (1,) * (3 - len(size)))
    return Volume(path, data, ras_affine(reader.GetDirection(), reader.GetSpacing(), reader.GetOrigin()))


def ras_affine(direction: Sequence[float], spacing: Sequence[float], origin: Sequence[float]) -> np.ndarray:
    """ITK's LPS geometry (of any dimension) as kdsam's 4x4 RAS+ affine: a 2D image's slice axis is
    1 mm along z, the axes past the third are dropped."""
    n = len(spacing)
    d = min(n, 3)
    matrix, scale, offset = np.eye(3), np.ones(3), np.zeros(3)
    matrix[:d, :d] = np.reshape(direction, (n, n))[:d, :d]
    scale[:d], offset[:d] = spacing[:d], origin[:d]
    affine = np.eye(4)
    affine[:3, :3] = LPS @ matrix @ np.diag(scale)
    affine[:3, 3] = LPS @ offset
    return affine


def lps_geometry(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """The inverse of `ras_affine` for a 3D image: (direction, row by row; spacing; origin) in LPS."""
    matrix = LPS @ affine[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    direction = matrix / spacing
    return tuple(map(float, direction.ravel())), tuple(map(float, spacing)), tuple(map(float, LPS @ affine[:3, 3]))


def write_itk(path: str | Path, labels: np.ndarray, reference: Volume) -> None:
    """Labels (I, J, K) as a compressed uint8 MetaImage (.mha) or NRRD (.nrrd) on the reference's grid
    (its spacing, origin and direction); atomic, through a temporary file of the same suffix, since
    SimpleITK picks the format by it."""
    import SimpleITK as sitk

    from kdsam.utils.atomic import atomic_path

    path = Path(path)
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask_array(labels, reference).transpose(2, 1, 0)))
    direction, spacing, origin = lps_geometry(reference.affine)
    image.SetDirection(direction)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    with atomic_path(path, suffix=path.suffix) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=True)
        except RuntimeError as err:
            raise KdsamError(f"{path}: cannot write ({_reason(err)}); choose another path") from err
