"""The student: a timm CNN backbone and a light neck that yields SAM's 256x64x64 embedding."""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from kdsam.errors import KdsamError
from kdsam.models.checkpoint import load_strict, read_state_dict
from kdsam.models.sam import KDSam, ResizeMode, sam_heads, with_prompt_frame

log = logging.getLogger(__name__)

EMBED_DIM = 256
EMBED_SIZE = 64


def _feature_levels(reductions: list[int], input_size: int) -> tuple[int, ...]:
    """Backbone stages whose stride is at least input_size/64: the finest of them is 64x64 when the
    backbone has such a stage (fine boundaries need it), and none is finer than the embedding."""
    target = input_size / EMBED_SIZE
    levels = tuple(i for i, r in enumerate(reductions) if r >= target - 1e-6)
    return levels or (len(reductions) - 1,)


class FPNNeck(nn.Module):
    """Top-down feature pyramid fused at the finest chosen level, resampled to 64x64, then SAM's
    own neck shape (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) so the output statistics match
    what SAM's mask decoder reads."""

    def __init__(self, in_channels: list[int], dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.head = nn.Sequential(
            nn.Conv2d(dim, dim, 1, bias=False),
            LayerNorm2d(dim),
            nn.Conv2d(dim, dim, 3, padding=1, bias=False),
            LayerNorm2d(dim),
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.lateral[-1](features[-1])
        for lateral, feat in zip(reversed(self.lateral[:-1]), reversed(features[:-1]), strict=True):
            x = lateral(feat) + F.interpolate(x, size=feat.shape[-2:], mode="nearest")
        if x.shape[-1] != EMBED_SIZE:
            x = F.interpolate(x, size=(EMBED_SIZE, EMBED_SIZE), mode="bilinear", align_corners=False)
        return self.head(x)


class StudentEncoder(nn.Module):
    """timm backbone (features_only) + FPNNeck: Bx3xSxS -> Bx256x64x64 for any input size S."""

    def __init__(self, backbone: str = "resnet50", img_size: int = 512, weights: str | Path | None = None) -> None:
        super().__init__()
        if img_size % 32:
            raise KdsamError(f"student input size {img_size} must be a multiple of 32")
        self.img_size = img_size
        self.backbone_name = backbone
        try:  # every stage is computed anyway (the last is always used), so ask timm for all of them
            self.backbone = timm.create_model(backbone, pretrained=False, features_only=True)
        except RuntimeError as err:
            raise KdsamError(f"unknown timm backbone {backbone!r} ({err})") from err
        self.levels = _feature_levels(self.backbone.feature_info.reduction(), img_size)
        self.weights = "scratch"
        if weights is not None:
            self._load_backbone(Path(weights).expanduser())
        channels = self.backbone.feature_info.channels()
        self.neck = FPNNeck([channels[i] for i in self.levels])

    def _load_backbone(self, path: Path) -> None:
        """ImageNet weights from a local timm/torchvision classifier state dict, matched strictly
        (timm's own loader tolerates missing keys, which would let a wrong file start from noise).
        Modules the feature extractor drops (the classifier head) are ignored; every backbone
        tensor must be there."""
        what = f"{self.backbone_name} ImageNet weights"
        state = read_state_dict(path, what)
        modules = {k.split(".", 1)[0] for k in self.backbone.state_dict()}
        state = {k: v for k, v in state.items() if k.split(".", 1)[0] in modules}
        load_strict(self.backbone, state, path, what)
        self.weights = f"ImageNet ({path})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        return self.neck([features[i] for i in self.levels])


def build_student(
    teacher: Sam | None = None,
    backbone: str = "resnet50",
    input_size: int = 512,
    weights: str | Path | None = None,
    teacher_name: str = "",
    resize_mode: ResizeMode | None = None,
) -> KDSam:
    """Student encoder joined to copies of the teacher's prompt encoder and mask decoder.

    The student reads ImageNet-normalised images resized longest-side to `input_size`; its box
    prompts live in that frame (the prompt encoder normalises coordinates by its input size).
    teacher=None gives randomly initialised heads (for timing, or to load a saved student into).
    The student resizes images the way its teacher does (default), so their embeddings align.
    """
    encoder = StudentEncoder(backbone, input_size, weights)
    log.info("student backbone %s at %d px starts from %s", backbone, input_size, encoder.weights)
    prompt_encoder, mask_decoder = sam_heads(input_size) if teacher is None else with_prompt_frame(teacher, input_size)
    sam = Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=mask_decoder)
    card = {
        "kind": "student",
        "backbone": backbone,
        "input_size": input_size,
        "backbone_init": encoder.weights,
        "teacher": teacher_name,
        "resize_mode": resize_mode or (teacher.resize_mode if isinstance(teacher, KDSam) else "longest"),
    }
    if isinstance(teacher, KDSam) and "prompts" in teacher.card:
        card["prompts"] = teacher.card["prompts"]  # its decoder is the teacher's until stage 2
    return KDSam(sam, name=f"student:{backbone}@{input_size}", resize_mode=card["resize_mode"], card=card)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
