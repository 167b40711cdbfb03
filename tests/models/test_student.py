"""The student: the 256x64x64 contract at every input size, saving/loading, and independent heads."""

from __future__ import annotations

from copy import deepcopy

import pytest
import torch
from segment_anything.modeling import Sam

from kdsam.errors import KdsamError
from kdsam.models.loading import load_model, save_model
from kdsam.models.student import build_student

EMBEDDING = (1, 256, 64, 64)


@torch.no_grad()
def embedding_shape(backbone: str, size: int) -> tuple[int, ...]:
    model = build_student(None, backbone, size).eval()
    return tuple(model.image_encoder(torch.zeros(1, 3, size, size)).shape)


@pytest.mark.parametrize("size", [128, 256, 512])
def test_every_input_size_gives_the_embedding_contract(size: int) -> None:
    assert embedding_shape("resnet18", size) == EMBEDDING


def test_resnet50_at_512_gives_the_embedding_contract() -> None:
    assert embedding_shape("resnet50", 512) == EMBEDDING


def test_input_size_not_a_multiple_of_32_is_refused() -> None:
    with pytest.raises(KdsamError, match="multiple of 32"):
        build_student(None, "resnet18", 200)


def test_unknown_backbone_is_refused() -> None:
    with pytest.raises(KdsamError, match="no_such_net"):
        build_student(None, "no_such_net", 128)


@torch.no_grad()
def test_save_and_load_round_trip_gives_identical_outputs(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_student(None, "resnet18", 128, resize_mode="squash").eval()
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(str(tmp_path / "model.pt"))
    assert loaded.card == model.card and loaded.resize_mode == "squash"
    x = torch.rand(1, 3, 128, 128)
    embedding = model.image_encoder(x)
    assert torch.equal(loaded.image_encoder(x), embedding)
    box = torch.tensor([[10.0, 20.0, 90.0, 100.0]])
    for want, got in zip(model.decode(embedding, box), loaded.decode(embedding, box), strict=True):
        assert torch.equal(want, got)
    from_folder = load_model(str(tmp_path)).state_dict()  # a run folder holding model.pt
    assert all(torch.equal(v, from_folder[k]) for k, v in model.state_dict().items())


def test_model_files_written_before_the_card_was_named_still_load(tmp_path) -> None:
    """model.pt files from before 2026-12 keep the card under "spec"; trained runs must not be orphaned."""
    model = build_student(None, "resnet18", 64).eval()
    torch.save({"spec": model.card, "state_dict": model.state_dict()}, tmp_path / "model.pt")
    loaded = load_model(str(tmp_path / "model.pt"))
    assert loaded.card == model.card
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_student_heads_are_copies_of_the_teacher(tiny: Sam) -> None:
    teacher = deepcopy(tiny)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = build_student(teacher, "resnet18", 128)
    heads = ("prompt_encoder", "mask_decoder")
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items() if k.startswith(heads))
    assert student.prompt_encoder.input_image_size == (128, 128)
    with torch.no_grad():
        for p in [*student.prompt_encoder.parameters(), *student.mask_decoder.parameters()]:
            p.add_(1.0)
    assert teacher.prompt_encoder.input_image_size == (256, 256)
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_backbone_weights_come_from_a_local_file(tmp_path) -> None:
    import timm

    reference = timm.create_model("resnet18", pretrained=False)
    with torch.no_grad():
        reference.conv1.weight.fill_(0.25)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)  # a classifier checkpoint: the fc head is not used
    student = build_student(None, "resnet18", 128, weights=path)
    assert torch.equal(student.image_encoder.backbone.conv1.weight, reference.conv1.weight)
    assert str(path) in student.card["backbone_init"]
    assert build_student(None, "resnet18", 128).card["backbone_init"] == "scratch"


def test_backbone_weights_of_another_model_are_refused(tmp_path) -> None:
    path = tmp_path / "not_resnet.pth"
    torch.save({"something.weight": torch.zeros(3)}, path)
    with pytest.raises(KdsamError, match=r"not_resnet\.pth"):
        build_student(None, "resnet18", 128, weights=path)


def test_truncated_model_file_is_one_line_without_torch_advice(tmp_path) -> None:
    model = build_student(None, "resnet18", 64)
    save_model(model, tmp_path / "model.pt")
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(KdsamError) as err:
        load_model(str(tmp_path / "model.pt"))
    message = str(err.value)
    assert "model.pt" in message and "truncated" in message and "\n" not in message
    assert "weights_only" not in message
