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


def test_wrong_shaped_entry_is_recomputed(tmp_path, tiny_teacher):
    image = np.full((32, 32, 3), 9, np.uint8)
    cache = EmbeddingCache(tiny_teacher, tmp_path)
    good = cache.get(image)
    torch.save(torch.zeros(256, 32, 32, dtype=torch.float16), cache.path(image))  # another tool's, or a bug's
    assert torch.equal(cache.get(image), good) and cache.n_computed == 2


def test_key_of_weights_without_a_checkpoint_hashes_the_weights(tmp_path):
    a, b, a_again = make_tiny_teacher(seed=0), make_tiny_teacher(seed=1), make_tiny_teacher(seed=0)
    for t in (a, b, a_again):
        t.card = {"kind": "teacher", "name": "tiny", "weights": "random"}  # as build_architecture makes them
    assert EmbeddingCache(a, tmp_path).dir == EmbeddingCache(a_again, tmp_path).dir
    assert EmbeddingCache(a, tmp_path).dir != EmbeddingCache(b, tmp_path).dir


def test_cache_command_fills_once_and_reports(tmp_path, synthetic_root, monkeypatch, capsys):
    import json

    import kdsam.commands.cache as command
    from kdsam.cli import main

    def random_tiny(name):
        teacher = make_tiny_teacher()
        teacher.card = {"kind": "teacher", "name": name, "weights": "random"}  # as build_architecture's
        return teacher

    monkeypatch.setattr(command, "build_architecture", random_tiny)
    args = ["cache", "--teacher", "litemedsam", "--random-weights", "--data", f"folder:{synthetic_root}",
            "--max-side", "128", "--cache-dir", str(tmp_path), "--batch-size", "3"]  # fmt: skip
    assert main([*args, "--json", str(tmp_path / "first.json")]) == 0
    first = json.loads((tmp_path / "first.json").read_text())
    assert first["images"] == first["computed"] > 0 and first["reused"] == 0
    assert first["weights"].startswith("RANDOM")
    assert main([*args, "--json", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert (again["computed"], again["reused"]) == (0, first["images"])
    entries = list((tmp_path / "embeddings").glob("*/*.pt"))
    assert len([p for p in entries if "-logits-" not in p.name]) == first["images"]
    assert not list((tmp_path / "embeddings").glob("*/.*.tmp"))
