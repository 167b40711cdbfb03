"""The paper's VGG16 perceptual loss, with real ImageNet weights from a local file.

VGG reads 3-channel images, embeddings have 256 channels. The paper mapped them with fresh random
1x1 convolutions on every call (noise); here the map is fixed once: the first three principal
components of the teacher embeddings of the training set.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.models import vgg16

from kdsam.errors import KdsamError
from kdsam.models.checkpoint import load_strict, read_state_dict

VGG16_FILE = "vgg16-397923af.pth"
RELU_LAYERS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3


def find_vgg16_weights(path: str | Path | None) -> Path:
    """The given file, or torchvision's cached download; else say where to get it."""
    if path is not None:
        return Path(path).expanduser()
    cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    if cached.is_file():
        return cached
    raise KdsamError(
        f"the vgg16 perceptual loss needs ImageNet VGG16 weights: download {VGG16_FILE} "
        f"(torchvision's VGG16_Weights.IMAGENET1K_V1) and pass --vgg-weights PATH, "
        f"or choose --perceptual decoder (no download needed)"
    )


class VGGPerceptualLoss(torch.nn.Module):
    name = "vgg16"

    def __init__(self, weights: str | Path | None, teacher_embeddings: torch.Tensor) -> None:
        super().__init__()
        path = find_vgg16_weights(weights)
        net = vgg16()
        load_strict(net, read_state_dict(path, "torchvision vgg16"), path, "torchvision vgg16")
        self.features = net.features[: RELU_LAYERS[-1] + 1].eval().requires_grad_(False)
        flat = teacher_embeddings.float().permute(1, 0, 2, 3).flatten(1)  # 256 x N
        mean = flat.mean(1, keepdim=True)
        _, _, v = torch.pca_lowrank((flat - mean).T, q=3, center=False)
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("components", v.T.contiguous())  # 3 x 256, fixed

    def _project(self, emb: torch.Tensor) -> torch.Tensor:
        x = torch.einsum("kc,bchw->bkhw", self.components, emb - self.mean)
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in RELU_LAYERS:
                out.append(x)
        return out

    def forward(
        self,
        student_emb: torch.Tensor,
        teacher_emb: torch.Tensor,
        boxes: torch.Tensor,
        teacher_logits: torch.Tensor | None,
    ) -> torch.Tensor:
        """Prompts are not used: VGG compares the embeddings as images."""
        with torch.no_grad():
            target = self._features(self._project(teacher_emb))
        feats = self._features(self._project(student_emb))
        return sum(F.mse_loss(f, t) for f, t in zip(feats, target, strict=True)) / len(feats)
