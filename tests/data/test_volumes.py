"""Volume datasets (nnU-Net, MSD, npz, unlabelled trees): cases, slices, splits by case, the slice
store, and the bad input each layout meets in practice."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import kdsam.data.registry as registry
import kdsam.data.volumes.slices as slices_module
from kdsam.data import dataset_splits, open_dataset
from kdsam.data.volumes.slices import VolumeOptions
from kdsam.data.volumes.synthetic import write_synthetic_ct
from kdsam.errors import KdsamError

SHAPE = (32, 32, 6)  # x, y, z


@pytest.fixture(autouse=True)
def fresh_sets(monkeypatch):
    """Each test lists its datasets anew (the registry keeps one VolumeSet per process and location)."""
    monkeypatch.setattr(registry, "_VOLUME_SETS", {})


@pytest.fixture
def opts(tmp_path) -> VolumeOptions:
    return VolumeOptions(cache_dir=tmp_path / "cache")


@pytest.fixture
def ct(tmp_path) -> Path:
    return write_synthetic_ct(tmp_path / "Dataset001_CT", n_cases=10, shape=SHAPE)


def test_nnunet_cases_become_slices_split_by_case(ct, opts):
    location = f"nnunet:{ct}"
    splits = dataset_splits(location, volume=opts)
    assert sorted(n for s in splits.values() for n in s) == [f"ct_{i:03d}" for i in range(10)]
    seen: dict[str, str] = {}
    for split in ("train", "val", "test"):
        for record in open_dataset(location, split, volume=opts).records:
            case = record.meta["case"]
            assert seen.setdefault(case, split) == split, f"{case} has slices in {seen[case]} and {split}"
            assert case in splits[split]
    assert len(seen) == 10
    dataset = open_dataset(location, volume=opts)
    assert len(dataset) == 10 * SHAPE[2]
    fg = next(r for r in dataset.records if r.meta["foreground"])
    sample = dataset.decode(fg)
    assert sample.image.shape == (SHAPE[1], SHAPE[0], 3) and sample.image.dtype == np.uint8
    truth = nib.load(str(ct / "labelsTr" / f"{fg.meta['case']}.nii.gz")).get_fdata()[:, :, fg.meta["z"]].T
    np.testing.assert_array_equal(sample.target if sample.labels is not None else sample.mask, truth.astype(int))


def test_slices_carry_the_predict_window(ct, opts):
    """CT by dataset.json gets the soft-tissue window: the same pixels `kdsam predict` would make."""
    from kdsam.data.intensity import window_to_uint8

    record = open_dataset(f"nnunet:{ct}", volume=opts).records[3]
    sample = open_dataset(f"nnunet:{ct}", volume=opts).decode(record)
    hu = nib.load(str(ct / "imagesTr" / f"{record.meta['case']}_0000.nii.gz")).get_fdata()[:, :, record.meta["z"]].T
    np.testing.assert_array_equal(sample.image[..., 0], window_to_uint8(hu, 40, 400))


def test_store_is_built_once_and_keyed_by_mapping(ct, opts, monkeypatch):
    open_dataset(f"nnunet:{ct}", volume=opts)
    assert not list((opts.cache_dir / "slices").glob(".*"))  # no temporaries left
    n_entries = len(list((opts.cache_dir / "slices").iterdir()))

    def must_not_read(*_args, **_kwargs):
        raise AssertionError("a stored case was read again")

    monkeypatch.setattr(registry, "_VOLUME_SETS", {})
    monkeypatch.setattr(slices_module, "read_case", must_not_read)
    open_dataset(f"nnunet:{ct}", volume=opts)  # reuses every case
    with pytest.raises(AssertionError, match="read again"):
        open_dataset(f"nnunet:{ct}", volume=VolumeOptions(window="lung", cache_dir=opts.cache_dir))
    assert len(list((opts.cache_dir / "slices").iterdir())) == n_entries


def test_torn_store_entry_is_rebuilt(ct, opts):
    open_dataset(f"nnunet:{ct}", volume=opts)
    entry = next((opts.cache_dir / "slices").iterdir())
    (entry / "slices.npy").write_bytes(b"torn")
    registry._VOLUME_SETS.clear()
    dataset = open_dataset(f"nnunet:{ct}", volume=opts)
    assert len(dataset) == 10 * SHAPE[2]
    assert np.load(entry / "slices.npy").shape[0] == SHAPE[2]


def test_split_file_names_cases(ct, opts, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["ct_000", "ct_001"], "val": ["ct_002"], "test": ["ct_003"]}))
    test = open_dataset(f"nnunet:{ct}", "test", split_file=split, volume=opts)
    assert {r.meta["case"] for r in test.records} == {"ct_003"} and len(test) == SHAPE[2]


def test_missing_dataset_json_says_what_is_expected(ct, opts):
    (ct / "dataset.json").unlink()
    with pytest.raises(KdsamError, match=r"dataset\.json.*channel_names"):
        open_dataset(f"nnunet:{ct}", volume=opts)


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def test_bad_cases_are_named_and_the_rest_goes_on(ct, opts, caplog):
    labels = ct / "labelsTr"
    _nifti(labels / "ct_001.nii.gz", np.zeros((16, 16, 6), np.uint8), np.diag([0.8, 0.8, 2.5, 1]))  # shape
    _nifti(labels / "ct_002.nii.gz", np.zeros(SHAPE, np.uint8))  # affine
    _nifti(labels / "ct_003.nii.gz", np.zeros((*SHAPE, 2), np.uint8), np.diag([0.8, 0.8, 2.5, 1]))  # 4D
    odd = np.asarray(nib.load(str(labels / "ct_004.nii.gz")).dataobj).copy()
    odd[0, 0, 0] = 7
    _nifti(labels / "ct_004.nii.gz", odd, np.diag([0.8, 0.8, 2.5, 1]))  # a label dataset.json lacks
    _nifti(labels / "ct_005.nii.gz", np.zeros(SHAPE, np.uint8), np.diag([0.8, 0.8, 2.5, 1]))  # empty
    image = ct / "imagesTr" / "ct_006_0000.nii.gz"
    hu = np.asarray(nib.load(str(image)).dataobj).astype(np.float32)
    hu[1, 1, 1] = np.nan
    _nifti(image, hu, np.diag([0.8, 0.8, 2.5, 1]))
    with caplog.at_level(logging.WARNING, logger="kdsam"):
        vs = registry.volume_set(f"nnunet:{ct}", opts, progress=False)
    problems = {p["name"]: p["error"] for p in vs.problems}
    assert set(problems) == {"ct_001", "ct_002", "ct_003"}
    assert "differs from its image" in problems["ct_001"] and "affine" in problems["ct_002"]
    assert "4D" in problems["ct_003"]
    text = caplog.text
    assert "ct_004: label value(s) [7] not listed in dataset.json" in text
    assert "1 voxel(s) not finite" in text and "ct_006" in text
    by_name = {c.name: c for c in vs.cases}
    assert not any(by_name["ct_005"].meta["foreground"])  # kept, for stage 1's background slices
    assert 7 not in by_name["ct_004"].meta["label_values"]
    assert by_name["ct_006"].slices().max() > 0  # one NaN did not blank the volume


def test_nnunet_file_ending_mha_lists_and_reads_its_cases(tmp_path, opts):
    """nnU-Net's SimpleITK datasets: the NIfTI set converted by SimpleITK gives the same slices and labels."""
    nifti = write_synthetic_ct(tmp_path / "Dataset001_CT", n_cases=2, shape=SHAPE)
    root = tmp_path / "Dataset002_MHA"
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
        for path in (nifti / folder).iterdir():
            out = root / folder / path.name.replace(".nii.gz", ".mha")
            sitk.WriteImage(sitk.ReadImage(str(path)), str(out), useCompression=True)
    meta = json.loads((nifti / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".mha"}))
    mha = registry.volume_set(f"nnunet:{root}", opts, progress=False)
    reference = registry.volume_set(f"nnunet:{nifti}", opts, progress=False)
    assert [c.name for c in mha.cases] == ["ct_000", "ct_001"] and not mha.problems
    for case, truth in zip(mha.cases, reference.cases, strict=True):
        assert case.dir != truth.dir  # stored from the .mha files, not found under the NIfTI's key
        np.testing.assert_array_equal(case.slices(), truth.slices())
        np.testing.assert_array_equal(case.labels(), truth.labels())
    (root / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".png"}))
    with pytest.raises(KdsamError, match=r"file_ending '\.png'"):
        registry.volume_set(f"nnunet:{root}", VolumeOptions(window="lung", cache_dir=opts.cache_dir))


def test_msd_picks_a_channel_of_4d_images(tmp_path, opts):
    root = tmp_path / "Task01_BrainTumour"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    image = np.stack([np.full((8, 8, 3), 10.0 * (c + 1)) for c in range(2)], axis=-1)
    image[2:6, 2:6, :, :] += 50
    _nifti(root / "imagesTr" / "BRATS_001.nii.gz", image.astype(np.float32))
    label = np.zeros((8, 8, 3), np.uint8)
    label[2:6, 2:6, 1] = 1
    _nifti(root / "labelsTr" / "BRATS_001.nii.gz", label)
    meta = {
        "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "tumour"},
        "training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    first = registry.volume_set(f"msd:{root}", opts, progress=False).cases[0]
    second = registry.volume_set(f"msd:{root}", VolumeOptions(1, "minmax", opts.cache_dir), progress=False).cases[0]
    assert first.depth == 3 and first.meta["foreground"] == [False, True, False]
    assert first.dir != second.dir
    with pytest.raises(KdsamError, match="--channel"):
        registry.volume_set(f"msd:{root}", VolumeOptions(channel=5, cache_dir=opts.cache_dir))


def test_npz_cases_3d_by_shape_2d_and_refusals(tmp_path, opts):
    root = tmp_path / "npz"
    (root / "CT").mkdir(parents=True)
    vol = np.zeros((4, 16, 16), np.uint8)
    vol[1:3, 4:12, 4:12] = 200
    gts = (vol > 0).astype(np.uint8)
    boxes = np.array([{"z_min": 1, "z_max": 2}], dtype=object)  # a CVPR25 file: its prompts are never read here
    np.savez(root / "CT" / "CT_Abd_case1.npz", imgs=vol, gts=gts, spacing=np.array([2.0, 0.7, 0.7]), boxes=boxes)
    rgb = np.zeros((16, 16, 3), np.uint8)
    np.savez(root / "2D_case.npz", imgs=rgb, gts=np.ones((16, 16), np.uint8))
    vs = registry.volume_set(f"npz:{root}", opts, progress=False)
    by_name = {c.name: c for c in vs.cases}
    assert by_name["CT/CT_Abd_case1"].depth == 4 and by_name["CT/CT_Abd_case1"].meta["spacing"] == [2.0, 0.7, 0.7]
    assert by_name["2D_case"].depth == 1 and list(by_name["2D_case"].slices().shape) == [1, 16, 16, 3]

    registry._VOLUME_SETS.clear()
    np.savez(root / "no_imgs.npz", gts=gts)
    with pytest.raises(KdsamError, match="no 'imgs' array"):
        registry.volume_set(f"npz:{root}", opts, progress=False)
    (root / "no_imgs.npz").unlink()
    registry._VOLUME_SETS.clear()
    np.savez(root / "objects.npz", imgs=np.array([{"evil": 1}], dtype=object), gts=gts)
    with pytest.raises(KdsamError, match="object arrays"):
        registry.volume_set(f"npz:{root}", opts, progress=False)


def test_images_tree_is_unlabelled_and_refused_for_masks(tmp_path, opts):
    from PIL import Image

    root = tmp_path / "archive"
    (root / "photos").mkdir(parents=True)
    Image.fromarray(np.full((12, 20, 3), 90, np.uint8)).save(root / "photos" / "a.png")
    _nifti(root / "scan.nii.gz", np.random.default_rng(0).normal(size=(10, 10, 3)).astype(np.float32))
    vs = registry.volume_set(f"images:{root}", opts, progress=False)
    assert sorted(c.name for c in vs.cases) == ["photos/a", "scan"]
    assert not any(c.labelled for c in vs.cases)
    records = (
        open_dataset(f"images:{root}", "train", volume=opts).records
        + open_dataset(f"images:{root}", "test", volume=opts).records
    )
    assert all(r.meta["unlabeled"] for r in records)
    with pytest.raises(KdsamError, match="no masks"):
        registry.require_labelled(f"images:{root}", "kdsam finetune")


def test_inspect_reports_cases_slices_labels_spacing_and_problems(ct, tmp_path, capsys):
    from kdsam.cli import main

    (ct / "labelsTr" / "ct_009.nii.gz").unlink()
    out = tmp_path / "report.json"
    assert main(["data", "inspect", f"nnunet:{ct}", "--cache-dir", str(tmp_path / "c"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["n_cases"] == 9 and report["n_slices"] == 9 * SHAPE[2]
    assert 0 < report["n_slices_with_foreground"] < report["n_slices"]
    assert report["labels"] == {"kidney": 9, "liver": 9} and report["modality"] == "CT"
    assert report["spacing_mm"]["min"] == pytest.approx([2.5, 0.8, 0.8]) == report["spacing_mm"]["max"]
    assert [p["name"] for p in report["problems"]] == ["ct_009"]
    text = capsys.readouterr().out
    assert "cases     9" in text and "ct_009" in text


def test_predict_maps_a_volume_as_training_did():
    """A student trained on a CT dataset keeps its mapping: a NIfTI (no modality) gets soft tissue under
    auto, not MedSAM's percentiles; an explicit --window still wins."""
    from kdsam.data.volumes.cases import as_trained

    card = {"intensity": {"window": "auto", "channel": 0, "modality": "CT"}}
    assert as_trained("auto", card) == ("auto", "CT")
    assert as_trained("auto", {"intensity": {"window": "lung", "modality": "CT"}}) == ((-600.0, 1500.0), "CT")
    assert as_trained((40.0, 80.0), {"intensity": {"window": "lung"}})[0] == (40.0, 80.0)
    assert as_trained("auto", {}) == ("auto", None)


def test_ranks_starting_together_convert_each_case_once(ct, opts, monkeypatch, tmp_path):
    """Two ranks filling the same store: each case is read once between them, both share the work,
    and both get every case."""
    import multiprocessing
    import os
    import time

    log = tmp_path / "reads.log"
    read = slices_module.read_case

    def logged_read(case, *args, **kwargs):
        with log.open("a") as f:
            f.write(f"{os.environ['RANK']} {case.name}\n")
        time.sleep(0.2)  # a real case takes seconds: long enough for the other rank to be converting too
        return read(case, *args, **kwargs)

    monkeypatch.setattr(slices_module, "read_case", logged_read)  # forked ranks inherit it
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(2)
    ranks = [ctx.Process(target=_fill_as_rank, args=(rank, f"nnunet:{ct}", opts, tmp_path, start)) for rank in (0, 1)]
    for p in ranks:
        p.start()
    for p in ranks:
        p.join(120)
        assert p.exitcode == 0
    reads = [line.split() for line in log.read_text().splitlines()]
    assert sorted(name for _, name in reads) == [f"ct_{i:03d}" for i in range(10)], "a case read twice, or never"
    assert {rank for rank, _ in reads} == {"0", "1"}, "one rank converted everything"
    assert all((tmp_path / f"rank{r}.txt").read_text() == "10" for r in (0, 1))


def _fill_as_rank(rank: int, location: str, opts: VolumeOptions, out: Path, start) -> None:
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE="2")
    start.wait(30)
    (out / f"rank{rank}.txt").write_text(str(len(registry.volume_set(location, opts, progress=False).cases)))
