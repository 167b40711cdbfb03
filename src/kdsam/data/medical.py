"""Volumes as clinicians store them: DICOM files and series, NIfTI, MetaImage (.mha/.mhd) and NRRD
(.nrrd/.nhdr); read with pydicom, nibabel and SimpleITK (kdsam.data.itk_io).

Every volume is held the NIfTI way: `array[i, j, k]` in the file's own units (Hounsfield units for
CT, after the DICOM rescale), with the 4x4 affine that maps voxel indices to RAS+ millimetres. For a
DICOM series i is the column, j the row and k the slice in position order, so a DICOM series written
out as NIfTI lands where the scanner put it. `slices()` gives the (k, j, i) stack that 2D models
read: one row-major image per slice.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdsam.data.volume import Volume, check_size, mask_array
from kdsam.errors import BadFileError, one_line, reading

if TYPE_CHECKING:
    from pydicom import Dataset

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# MetaImage and NRRD (grand-challenge, 3D Slicer), one file or a header beside its data file(s).
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
VOLUME_SUFFIXES = (*NIFTI_SUFFIXES, *ITK_SUFFIXES)
VOLUME_FORMATS = "NIfTI .nii/.nii.gz, MetaImage .mha/.mhd, NRRD .nrrd/.nhdr"
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
POSITION_TOLERANCE = 0.05  # relative deviation of a slice gap before a series counts as having holes


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def drop_suffix(name: str, suffixes: Iterable[str]) -> str:
    """`name` without the first of `suffixes` it ends with, case-insensitively (list .nii.gz before
    any shorter suffix it ends in); unchanged when it ends with none."""
    for suffix in suffixes:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_volume_file(path: Path) -> bool:
    """A 3D image file kdsam reads, by suffix: NIfTI, MetaImage or NRRD (a DICOM file is a slice)."""
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def is_dicom(path: Path) -> bool:
    """A DICOM file by suffix or by its 'DICM' marker at byte 128 (many exports have no suffix)."""
    if not path.is_file():
        return False
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_volume(path: Path) -> bool:
    """Does `path` hold a 3D image (a volume file, or a folder of DICOM slices)?"""
    return is_volume_file(path) or (path.is_dir() and any(is_dicom(p) for p in path.iterdir()))


def read_volume(path: str | Path) -> Volume:
    """A NIfTI, MetaImage or NRRD file, a DICOM series folder, or a single DICOM file (a one-slice
    volume).

    Whatever goes wrong inside the readers (nibabel, zlib, pydicom, SimpleITK raise many exception
    types on damaged files) is a BadFileError naming the file: callers skip it or print one line."""
    from kdsam.data import itk_io

    path = Path(path)
    if not path.exists():
        raise BadFileError(f"{path}: file not found")
    if not (path.is_dir() or is_volume_file(path) or is_dicom(path)):
        raise BadFileError(
            f"{path}: not a volume kdsam reads ({VOLUME_FORMATS}, a DICOM file or a DICOM series folder)"
        )
    with reading(path, "volume"):
        if path.is_dir():
            return read_dicom_series(path)
        if is_nifti(path):
            return read_nifti(path)
        return itk_io.read_itk(path) if is_volume_file(path) else read_dicom_series([path], path)


def volume_shape(path: Path) -> tuple[int, ...]:
    """The array shape a NIfTI, MetaImage or NRRD file's header claims, (x, y, z, ...), without
    reading its voxels: for refusing a 4D or over-large file before it is read."""
    import nibabel as nib

    from kdsam.data import itk_io

    return tuple(nib.load(str(path)).shape) if is_nifti(path) else itk_io.header_size(path)


def read_nifti(path: Path) -> Volume:
    """A 3D NIfTI (a 2D one gains a slice axis; a 4D one is refused: which volume is meant?)."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        shape = img.shape
        check_size(path, shape)
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except (OSError, ValueError, EOFError, zlib.error, nib.filebasedimages.ImageFileError) as err:
        raise BadFileError(f"{path}: unreadable NIfTI ({one_line(err)})") from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise BadFileError(
            f"{path}: a {len(shape)}D NIfTI of shape {tuple(shape)}; give one 3D volume "
            "(e.g. one time point: nibabel's img.slicer[..., 0], or fslroi)"
        )
    return Volume(path, data, np.asarray(img.affine, dtype=np.float64), header=img.header)


def _numbers(path: Path, ds: Dataset, keyword: str, n: int, exact: bool = True) -> np.ndarray | None:
    """A numeric DICOM attribute as finite floats (n of them, or at least n), None when absent; a
    malformed one is a BadFileError naming the attribute."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        values = np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel()
    except (TypeError, ValueError):
        values = np.zeros(0)
    if (values.size != n if exact else values.size < n) or not np.isfinite(values).all():
        shown = " ".join(str(value).split())[:60]
        raise BadFileError(f"{path}: malformed DICOM {keyword} {shown!r}: expected {n} finite numbers")
    return values


def _dataset(path: Path) -> Dataset:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
    except (OSError, pydicom.errors.InvalidDicomError, ValueError, EOFError) as err:
        raise BadFileError(f"{path}: unreadable DICOM ({one_line(err)})") from err
    if "PixelData" not in ds:
        raise BadFileError(f"{path}: DICOM without pixel data (a report or structure set, not an image)")
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if not isinstance(rows, int) or not isinstance(columns, int) or rows < 1 or columns < 1:
        raise BadFileError(f"{path}: DICOM without a valid image size (Rows {rows!r}, Columns {columns!r})")
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        _numbers(path, ds, keyword, 1)
    return ds


def _pixels(path: Path, ds: Dataset) -> np.ndarray:
    """Rows x columns in the modality's units (RescaleSlope/Intercept applied: HU for CT)."""
    from pydicom.pixels import apply_modality_lut

    try:
        arr = ds.pixel_array
    except (RuntimeError, ValueError, NotImplementedError, AttributeError) as err:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise BadFileError(
            f"{path}: cannot decode its pixel data ({name}); install a pydicom plugin for it "
            f"(pylibjpeg, pylibjpeg-openjpeg or gdcm) ({one_line(err)})"
        ) from err
    if arr.ndim != 2:
        raise BadFileError(f"{path}: pixel data of shape {arr.shape}; kdsam reads single-frame greyscale DICOM")
    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)


def _window(path: Path, ds: Dataset) -> tuple[float, float] | None:
    """The file's own display window (the first, when several are given); None without one or
    with a width of 0 or less."""
    centre, width = _numbers(path, ds, "WindowCenter", 1, False), _numbers(path, ds, "WindowWidth", 1, False)
    if centre is None or width is None:
        return None
    return (float(centre[0]), float(width[0])) if width[0] > 0 else None


def _frame(path: Path, ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row direction, column direction, position) in LPS mm; identity-like when the file omits them.
    Directions that are not two independent vectors give no slice normal, so they are refused."""
    orient = _numbers(path, ds, "ImageOrientationPatient", 6)
    orient = np.array([1.0, 0, 0, 0, 1, 0]) if orient is None else orient
    if np.linalg.norm(np.cross(orient[:3], orient[3:])) < 1e-3:
        raise BadFileError(
            f"{path}: malformed DICOM ImageOrientationPatient {orient.tolist()}: the row and column directions "
            "must be two perpendicular unit vectors"
        )
    position = _numbers(path, ds, "ImagePositionPatient", 3)
    return orient[:3], orient[3:], np.zeros(3) if position is None else position


def read_dicom_series(files: Path | list[Path], name: Path | None = None) -> Volume:
    """Slices of one series (a folder, or a list of files) sorted along the slice normal by
    ImagePositionPatient, rescaled to the modality's units. Refused: mixed sizes, several series,
    missing or duplicated slices."""
    if isinstance(files, Path):
        folder = files
        files = sorted(p for p in folder.iterdir() if is_dicom(p))
        if not files:
            raise BadFileError(f"{folder}: no DICOM files in this folder")
    name = name or files[0].parent
    datasets = [(p, _dataset(p)) for p in files]
    first = datasets[0][1]
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in datasets}
    if len(sizes) > 1:
        raise BadFileError(f"{name}: slices of different sizes {sorted(sizes)}; give one series per folder")
    series = {ds.get("SeriesInstanceUID") for _, ds in datasets}
    if len(series) > 1:
        raise BadFileError(f"{name}: {len(series)} series mixed in one folder; give one series per folder")
    row_dir, col_dir, _ = _frame(name, first)
    normal = np.cross(row_dir, col_dir)
    positions = [float(_frame(p, ds)[2] @ normal) for p, ds in datasets]
    order = np.argsort(positions, kind="stable")
    datasets = [datasets[i] for i in order]
    positions = [positions[i] for i in order]
    step = _slice_step(name, positions, first)
    pixels = np.stack([_pixels(p, ds) for p, ds in datasets], axis=-1)  # rows, cols, slices
    spacing = _numbers(name, first, "PixelSpacing", 2)
    dr, dc = (1.0, 1.0) if spacing is None else (float(spacing[0]), float(spacing[1]))
    if dr <= 0 or dc <= 0:
        raise BadFileError(f"{name}: malformed DICOM PixelSpacing {[dr, dc]}: spacings are positive")
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc  # along i (columns): the row direction, column spacing
    lps[:3, 1] = col_dir * dr  # along j (rows)
    lps[:3, 2] = normal * step
    lps[:3, 3] = _frame(*datasets[0])[2]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS (DICOM) -> RAS (NIfTI)
    return Volume(
        Path(name),
        np.ascontiguousarray(pixels.transpose(1, 0, 2)),
        affine,
        modality=str(first.get("Modality", "")) or None,
        window=_window(name, first),
        sources=[ds for _, ds in datasets],
    )


def _slice_step(name: Path, positions: list[float], first: Dataset) -> float:
    """The gap between slices: from the positions of a series (which must be evenly spaced), or the
    file's SpacingBetweenSlices / SliceThickness for a single slice."""
    if len(positions) == 1:
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            value = _numbers(name, first, keyword, 1)
            if value is not None and value[0] > 0:
                return float(value[0])
        return 1.0
    gaps = np.diff(positions)
    step = float(np.median(gaps))
    if step <= 0 or np.any(gaps <= step * POSITION_TOLERANCE):
        raise BadFileError(f"{name}: two slices share a position; is one slice duplicated, or two series mixed?")
    if np.any(np.abs(gaps - step) > step * POSITION_TOLERANCE):
        where = int(np.argmax(np.abs(gaps - step)))
        raise BadFileError(
            f"{name}: slices are not evenly spaced (gap of {gaps[where]:.2f} mm after slice {where + 1}, "
            f"usually {step:.2f} mm): missing slices; give the complete series"
        )
    return step


def mask_suffix(path: Path) -> str:
    """The format a volume's mask is written in: a MetaImage or NRRD input's own (as one file: .mhd
    gives .mha, .nhdr gives .nrrd), NIfTI for the rest (DICOM in, NIfTI out)."""
    from kdsam.data import itk_io

    return itk_io.MASK_SUFFIXES.get(path.suffix.lower(), ".nii.gz")


def write_mask(path: str | Path, labels: np.ndarray, reference: Volume) -> None:
    """Labels (I, J, K) on the reference's grid in the format `path` names: .mha or .nrrd through
    SimpleITK, NIfTI otherwise."""
    from kdsam.data import itk_io

    if Path(path).suffix.lower() in itk_io.WRITTEN_SUFFIXES:
        itk_io.write_itk(path, labels, reference)
    else:
        write_nifti(path, labels, reference)


def write_nifti(path: str | Path, labels: np.ndarray, reference: Volume) -> None:
    """Labels (I, J, K) as a uint8 NIfTI on the reference's grid (its affine, and its header where it
    had one); atomic, gzipped when the name ends in .gz."""
    import nibabel as nib

    from kdsam.utils.atomic import atomic_path

    header = reference.header.copy() if reference.header is not None else None
    img = nib.Nifti1Image(mask_array(labels, reference), reference.affine, header)
    img.set_data_dtype(np.uint8)
    img.header.set_slope_inter(1.0, 0.0)
    img.set_qform(reference.affine, code=1)
    img.set_sform(reference.affine, code=1)
    data = img.to_bytes()
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(data, compresslevel=6) if str(path).endswith(".gz") else data)
