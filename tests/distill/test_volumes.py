"""Both stages on volume datasets: slices with foreground carry objects, a seeded share of the slices
without foreground trains the embedding term only, unlabelled images get random boxes, and the
run records the cases of each split."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import kdsam.data.registry as registry
from kdsam.data import open_dataset
from kdsam.data.volumes.slices import VolumeOptions
from kdsam.data.volumes.synthetic import write_synthetic_ct
from kdsam.distill.cache import EmbeddingCache
from kdsam.distill.items import TrainingSet, index_dataset
from kdsam.distill.process import TrainingProcess
from kdsam.distill.prompting import parse_mix
from kdsam.distill.stage1 import distill, perceptual_rows
from kdsam.distill.stage2 import finetune
from kdsam.models.loading import load_saved_student
from kdsam.models.student import build_student
from tests.distill.tiny import FAST, STUDENT

CPU = TrainingProcess(torch.device("cpu"))


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    return write_synthetic_ct(tmp_path_factory.mktemp("ct"), n_cases=5, shape=(32, 32, 8))


@pytest.fixture
def volume(tmp_path, monkeypatch) -> VolumeOptions:
    monkeypatch.setattr(registry, "_VOLUME_SETS", {})
    return VolumeOptions(cache_dir=tmp_path / "store")


def test_background_slices_are_drawn_and_get_no_decoder_term(ct, volume, tiny_teacher, tmp_path):
    train = open_dataset(f"nnunet:{ct}", "train", volume=volume)
    n_background = sum(not r.meta["foreground"] for r in train.records)
    none = index_dataset(train, CPU)
    assert {e.kind for e in none.entries} == {"object"} and none.background_left_out == n_background
    cache = EmbeddingCache(tiny_teacher, tmp_path)
    index = index_dataset(train, CPU, cache, logits=True, background=0.5, seed=3)
    kinds = [e.kind for e in index.entries]
    assert 0 < kinds.count("background") < n_background
    assert kinds.count("background") + index.background_left_out == n_background
    again = index_dataset(train, CPU, background=0.5, seed=3)
    assert [e.name for e in again.entries] == [e.name for e in index.entries]  # seeded, not drawn anew

    student = build_student(tiny_teacher, **STUDENT)
    items = TrainingSet(train, index, student, teacher=tiny_teacher, teacher_cache=cache.dir, logits=True)
    batch = torch.utils.data.default_collate([items[i] for i in range(len(items))])
    assert batch["has_box"].tolist() == [k == "object" for k in kinds]
    rows = perceptual_rows(batch, torch.nn.Module(), None)
    assert len(rows) == len(kinds)  # other terms read every item
    decoder = type("L", (torch.nn.Module,), {"name": "decoder"})()
    assert all(kinds[i] == "object" for i in perceptual_rows(batch, decoder, None).tolist())


def test_both_stages_train_on_a_ct_set_and_record_cases(ct, volume, tiny_teacher, tmp_path):
    location = f"nnunet:{ct}"
    train, val = (open_dataset(location, s, volume=volume) for s in ("train", "val"))
    splits = registry.dataset_splits(location, volume=volume)
    run, once = tmp_path / "run", replace(FAST, epochs=1)
    distill(tiny_teacher, train, val, run, cache_dir=tmp_path, cfg=once, splits=splits, background=0.3,
            perceptual="none", **STUDENT)  # fmt: skip
    config = json.loads((run / "config.json").read_text())["distill"]
    assert config["train"]["n_by_kind"]["background"] > 0 and config["train"]["n_by_kind"]["object"] > 0
    saved = json.loads((run / "split.json").read_text())["distill"]
    assert saved["test"] and set(saved["test"]) <= {f"ct_{i:03d}" for i in range(5)}
    finetune(run, train, val, cfg=once, cache_dir=tmp_path, splits=splits, prompt_mix=parse_mix("box", 0))
    assert load_saved_student(run).card["prompts"] == ["box"]


def test_unlabelled_images_distil_with_seeded_random_boxes(tmp_path, volume, tiny_teacher):
    import nibabel as nib

    root = tmp_path / "archive"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        nib.save(nib.Nifti1Image(rng.normal(0, 100, (40, 40, 2)).astype(np.float32), np.eye(4)), root / f"{i}.nii.gz")
    train, val = (open_dataset(f"images:{root}", s, volume=volume) for s in ("train", "val"))
    index = index_dataset(train, CPU)
    assert {e.kind for e in index.entries} == {"unlabeled"} and len(index.entries) == len(train)
    boxes = index.entries[0].boxes
    assert boxes.shape == (3, 4) and np.all(boxes[:, 2:] > boxes[:, :2]) and boxes.max() <= 40
    np.testing.assert_array_equal(index_dataset(train, CPU).entries[0].boxes, boxes)  # the same on every pass
    once = replace(FAST, epochs=1)
    student = distill(tiny_teacher, train, val, tmp_path / "run", cache_dir=tmp_path, cfg=once, **STUDENT)
    assert student is not None and (tmp_path / "run" / "model.pt").is_file()
