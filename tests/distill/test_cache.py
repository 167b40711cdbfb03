"""The teacher runs once per image, across epochs and across runs."""

from __future__ import annotations

import numpy as np
import torch

from kdsam.distill.cache import EmbeddingCache
from kdsam.distill.stage1 import distill
from tests.distill.tiny import FAST, STUDENT, make_tiny_teacher


def test_each_image_embedded_once_across_instances(tmp_path, tiny_teacher):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(3)]
    first = EmbeddingCache(tiny_teacher, tmp_path)
    embs = [first.get(im) for im in images]
    again = EmbeddingCache(tiny_teacher, tmp_path)  # a later run
    assert all(torch.equal(a, again.get(im)) for a, im in zip(embs, images, strict=True))
    assert tiny_teacher.image_encoder.calls == 3
    assert (first.n_computed, again.n_computed, again.n_reused) == (3, 0, 3)
    assert embs[0].dtype == torch.float16 and embs[0].shape == (256, 64, 64)


def test_key_changes_with_image_and_weights(tmp_path, tiny_teacher):
    image = np.zeros((32, 32, 3), np.uint8)
    cache = EmbeddingCache(tiny_teacher, tmp_path)
    changed = image.copy()
    changed[0, 0, 0] = 1
    assert cache.path(image) != cache.path(changed)
    other = EmbeddingCache(make_tiny_teacher(seed=1), tmp_path)
    assert other.dir != cache.dir


def test_torn_cache_file_is_recomputed(tmp_path, tiny_teacher):
    image = np.full((32, 32, 3), 7, np.uint8)
    cache = EmbeddingCache(tiny_teacher, tmp_path)
    cache.get(image)
    cache.path(image).write_bytes(b"torn")
    cache.get(image)
    assert cache.n_computed == 2


def test_distillation_runs_the_teacher_once_per_image(tmp_path, tiny_teacher, splits):
    n_images = len(splits["train"]) + len(splits["val"])
    args = {"cache_dir": tmp_path, "cfg": FAST, "perceptual": "none", **STUDENT}
    distill(tiny_teacher, splits["train"], splits["val"], tmp_path / "a", **args)
    assert tiny_teacher.image_encoder.calls == n_images  # two epochs, one teacher pass per image
    distill(tiny_teacher, splits["train"], splits["val"], tmp_path / "b", **args)
    assert tiny_teacher.image_encoder.calls == n_images  # a second run reuses every embedding
