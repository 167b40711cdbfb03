"""The volume layouts users hold, listed as cases: nnU-Net v2 raw, the Medical Segmentation Decathlon,
MedSAM/CVPR challenge npz trees, and unlabelled image archives.

Listing reads only `dataset.json` and file names; voxels are read once, later, by the slice store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdsam.data.medical import VOLUME_FORMATS, VOLUME_SUFFIXES, drop_suffix, is_dicom, is_volume_file
from kdsam.data.volumes.cases import Case
from kdsam.errors import KdsamError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class CaseList:
    """A dataset's cases with what its dataset.json says: label names by value (0 excluded) and the
    modality of the channel used. `problems` are cases left out at listing, one line each."""

    cases: list[Case]
    label_names: dict[int, str] = field(default_factory=dict)
    modality: str | None = None
    problems: list[dict[str, str]] = field(default_factory=list)


def read_dataset_json(root: Path, layout: str, expected: str) -> dict[str, Any]:
    path = root / "dataset.json"
    if not path.is_file():
        raise KdsamError(f"{path}: missing; an {layout} folder holds dataset.json with {expected}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise KdsamError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(data, dict):
        raise KdsamError(f"{path}: expected a JSON object with {expected}")
    return data


def label_names(meta: dict[str, Any]) -> dict[int, str]:
    """A dataset.json's `labels` as {value: name}, 0 (background) left out, in either convention:
    nnU-Net v2's {"liver": 1} (region lists are not single labels: left out) or MSD's {"1": "liver"}."""
    labels = meta.get("labels", {})
    if not isinstance(labels, dict):
        return {}
    nnunet = {int(v): str(k) for k, v in labels.items() if isinstance(v, int) and not isinstance(v, bool) and v > 0}
    msd = {int(k): str(v) for k, v in labels.items() if str(k).isdigit() and int(k) > 0}
    return nnunet or msd


def _channel_name(names: Any, channel: int, path: Path) -> str | None:
    if not isinstance(names, dict) or not names:
        return None
    if str(channel) not in names:
        raise KdsamError(f"{path}: no channel {channel} (channels: {', '.join(map(str, names))}); choose --channel")
    return str(names[str(channel)])


def _modality(name: str | None) -> str | None:
    """'CT', 'MR' or 'MRI' style names -> the DICOM modality the intensity mapping keys on."""
    if name is None:
        return None
    return "CT" if name.strip().upper() == "CT" else name.strip()


def nnunet_cases(root: Path, channel: int = 0) -> CaseList:
    """nnU-Net v2 raw: imagesTr/<case>_<4-digit channel><ending>, labelsTr/<case><ending>, the ending
    being dataset.json's `file_ending` (.nii.gz by default; nnU-Net's SimpleITK datasets use .mha or
    .nrrd); dataset.json `labels` maps names to values (region lists are not single labels: left out)."""
    meta = read_dataset_json(root, "nnU-Net raw", '"channel_names", "labels" and "file_ending"')
    ending = str(meta.get("file_ending", ".nii.gz"))
    if ending not in VOLUME_SUFFIXES:
        raise KdsamError(f"{root / 'dataset.json'}: file_ending {ending!r}; kdsam reads volumes ({VOLUME_FORMATS})")
    modality = _modality(
        _channel_name(meta.get("channel_names") or meta.get("modality"), channel, root / "dataset.json")
    )
    labels = label_names(meta)
    images = root / "imagesTr"
    if not images.is_dir():
        raise KdsamError(f"{images}: missing; an nnU-Net raw dataset has imagesTr/ and labelsTr/")
    suffix = f"_{channel:04d}{ending}"
    cases, problems = [], []
    for image in sorted(images.glob(f"*{suffix}")):
        name = image.name[: -len(suffix)]
        label = root / "labelsTr" / f"{name}{ending}"
        if not label.is_file():
            problems.append({"name": name, "file": str(label), "error": f"{label}: label file missing"})
            continue
        cases.append(Case(name, image, label, modality))
    return CaseList(cases, labels, modality, problems)


def msd_cases(root: Path, channel: int = 0) -> CaseList:
    """Medical Segmentation Decathlon task: dataset.json `training` [{image, label}] (paths relative
    to the task folder), `modality` {"0": "CT"} and `labels` {"0": "background", "1": ...}."""
    meta = read_dataset_json(root, "MSD task", '"training", "modality" and "labels"')
    training = meta.get("training")
    if not isinstance(training, list):
        raise KdsamError(f"{root / 'dataset.json'}: no 'training' list of {{image, label}} pairs")
    modality = _modality(_channel_name(meta.get("modality"), channel, root / "dataset.json"))
    labels = label_names(meta)
    cases, problems = [], []
    for item in training:
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            problems.append({"name": str(item), "file": str(root / "dataset.json"), "error": "not {image, label}"})
            continue
        image, label = root / str(item["image"]), root / str(item["label"])
        name = image.name.removesuffix(".gz").removesuffix(".nii")
        missing = next((p for p in (image, label) if not p.is_file()), None)
        if missing is not None:
            problems.append({"name": name, "file": str(missing), "error": f"{missing}: file missing"})
            continue
        cases.append(Case(name, image, label, modality))
    return CaseList(cases, labels, modality, problems)


def npz_cases(root: Path, channel: int = 0) -> CaseList:
    """Every .npz below root, named by its path relative to root (without .npz)."""
    files = sorted(root.rglob("*.npz"))
    return CaseList([Case(_relative_name(root, p), p) for p in files])


def image_cases(root: Path, channel: int = 0) -> CaseList:
    """`images:`: any tree of 2D images, DICOM series (a folder of DICOM files is one case) and volume
    files (NIfTI, MHA, NRRD), without masks; each file or series is a case."""
    cases = []
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            dicoms = tuple(sorted(p for p in path.iterdir() if is_dicom(p)))
            if dicoms:
                cases.append(Case(_relative_name(root, path) or path.name, path, None, None, False, dicoms))
        elif is_volume_file(path) or path.suffix.lower() in IMAGE_SUFFIXES:
            cases.append(Case(_relative_name(root, path), path, None, None, False))
    return CaseList(cases)


def _relative_name(root: Path, path: Path) -> str:
    return drop_suffix(path.relative_to(root).as_posix(), (*VOLUME_SUFFIXES, ".npz", *IMAGE_SUFFIXES))


def check_labels(labels: np.ndarray | None, names: dict[int, str], where: str) -> list[str]:
    """Label values the dataset.json does not list: named in a note and set to background."""
    if labels is None or not names:
        return []
    present = {int(v) for v in np.unique(labels) if v}
    unknown = sorted(present - set(names))
    if not unknown:
        return []
    labels[np.isin(labels, unknown)] = 0
    return [f"{where}: label value(s) {unknown} not listed in dataset.json; set to background"]
