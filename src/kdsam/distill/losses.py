"""Losses of both stages. Every projection between spaces is fixed; nothing is re-drawn per call."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdsam.models.sam import KDSam


def dice_loss_per_item(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice of each sample (B values); logits and target Bx1xHxW."""
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.flatten(1)
    return 1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)


def embedding_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student, teacher)


class DecoderPerceptualLoss(torch.nn.Module):
    """Offline perceptual loss from pretrained parts we have: the teacher's frozen prompt encoder and
    mask decoder read the student's and the teacher's embeddings with the same box, and the student's
    mask logits are pulled toward the teacher's probabilities (BCE; the teacher's logits are cached
    per image and box). It measures the embedding difference that matters for segmentation, through
    a network with real pretrained weights."""

    name = "decoder"

    def __init__(self, teacher: KDSam) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(
        self, student_emb: torch.Tensor, teacher_emb: torch.Tensor, boxes: torch.Tensor, teacher_logits: torch.Tensor
    ) -> torch.Tensor:
        logits, _ = self.teacher.decode(student_emb, boxes)
        return F.binary_cross_entropy_with_logits(logits, torch.sigmoid(teacher_logits))
