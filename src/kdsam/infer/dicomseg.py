"""Label maps as DICOM Segmentations (highdicom), so clinical viewers show them beside the study.

A SEG built here sits in the source's study, references each source instance frame by frame, holds
one BINARY segment per label (1..N) and names kdsam, its version and the model as the algorithm. It
gets a new series and new instance UIDs every time: a rerun never overwrites an earlier result.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdsam.errors import KdsamError, one_line

if TYPE_CHECKING:
    from highdicom.seg import Segmentation
    from pydicom import Dataset

SEG_SUFFIX = ".dcm"
SERIES_NUMBER = 9100  # high, so viewers list the SEG after the scanner's own series


def is_seg_output(path: Path) -> bool:
    """Does this --out ask for a DICOM SEG (a .dcm file)?"""
    return path.name.lower().endswith(SEG_SUFFIX)


def segment_names(count: int, names: list[str] | None) -> list[str]:
    """One name per label 1..count: the given names in order, then "label K" for the rest."""
    names = list(names or [])
    if len(names) > count:
        raise KdsamError(f"{len(names)} segment names (--label-name) for {count} label(s); give at most one per label")
    return names + [f"label {k}" for k in range(len(names) + 1, count + 1)]


def dataset_label_names(path: Path) -> list[str]:
    """Names for labels 1..N from a dataset's dataset.json (nnU-Net v2 or MSD `labels`); a value the
    file does not name is "label K"."""
    import json

    from kdsam.data.volumes.layouts import label_names

    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise KdsamError(f"--labels {path}: not a readable dataset.json ({one_line(err)})") from err
    names = label_names(meta) if isinstance(meta, dict) else {}
    if not names:
        raise KdsamError(f'--labels {path}: no "labels" naming values 1, 2, ... (nnU-Net or MSD dataset.json)')
    return [names.get(k, f"label {k}") for k in range(1, max(names) + 1)]


def read_sources(path: Path) -> list[Dataset]:
    """The one dataset of a single DICOM file read as a 2D image (a SEG needs its UIDs and geometry)."""
    import pydicom

    try:
        return [pydicom.dcmread(str(path), stop_before_pixels=True)]
    except (OSError, pydicom.errors.InvalidDicomError, ValueError, EOFError) as err:
        raise KdsamError(f"{path}: unreadable DICOM ({one_line(err)})") from err


def build_seg(sources: list[Dataset], labels: np.ndarray, names: list[str], model: str) -> Segmentation:
    """A BINARY SEG of `labels` (frames x rows x columns, frame f on sources[f]; value k = segment k).

    Segments are 'semiautomatic': a person gave the boxes or points, the model drew the outlines.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from kdsam import __version__

    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels[None]
    if labels.shape[0] != len(sources):
        raise ValueError(f"{labels.shape[0]} label frames for {len(sources)} source images")
    top = int(labels.max(initial=0))
    if top > len(names):
        raise ValueError(f"label {top} has no segment name ({len(names)} given)")
    algorithm = hd.AlgorithmIdentificationSequence(
        name="kdsam", family=codes.cid7162.ArtificialIntelligence, version=__version__, parameters={"model": model}
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=name,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=algorithm,
        )
        for k, name in enumerate(names, start=1)
    ]
    dtype = np.uint8 if len(names) < 256 else np.uint16
    try:
        return hd.seg.Segmentation(
            source_images=sources,
            pixel_array=labels.astype(dtype),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="kdsam",
            manufacturer_model_name=model[:64],
            software_versions=__version__,
            device_serial_number="-",
            omit_empty_frames=bool(labels.any()),  # an empty result keeps its frames (a SEG needs one)
            series_description=f"kdsam {model}"[:64],
            content_label="KDSAM",
            content_description=f"kdsam {__version__}, model {model}"[:64],
        )
    except (ValueError, TypeError, AttributeError) as err:
        # highdicom refuses sources a SEG cannot reference (e.g. missing geometry or duplicate UIDs).
        raise KdsamError(f"cannot build a DICOM SEG on this series: {one_line(err)}") from err


def write_seg(path: Path, seg: Segmentation) -> None:
    """Write the SEG atomically (a reader never sees half a file)."""
    from kdsam.utils.atomic import atomic_path

    with atomic_path(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)


def read_seg_labels(path: Path, sources: list[Dataset]) -> np.ndarray:
    """The SEG's segments as one label map, frame f on sources[f] (for checks and tests)."""
    import highdicom as hd

    seg = hd.seg.segread(str(path))
    return seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[str(ds.SOPInstanceUID) for ds in sources], combine_segments=True
    )


def check_source(path: Path) -> None:
    """A SEG describes DICOM images: refuse other inputs before any work is done."""
    from kdsam.data.medical import is_dicom

    if not (is_dicom(path) or (path.is_dir() and any(is_dicom(p) for p in path.iterdir()))):
        raise KdsamError(
            f"{path}: a DICOM SEG (--out *.dcm) needs DICOM input (a series folder or a DICOM file); "
            "write .nii.gz or .png for this one"
        )


def save_seg(
    path: Path, sources: list[Dataset], labels: np.ndarray, count: int, names: list[str] | None, model: str
) -> dict[str, object]:
    """Build and write the SEG of `labels` with `count` segments; what the sidecar records of it."""
    segments = segment_names(count, names)
    seg = build_seg(sources, labels, segments, model)
    write_seg(path, seg)
    return {
        "format": "DICOM SEG",
        "segments": segments,
        "study_instance_uid": str(seg.StudyInstanceUID),
        "series_instance_uid": str(seg.SeriesInstanceUID),
        "sop_instance_uid": str(seg.SOPInstanceUID),
    }
