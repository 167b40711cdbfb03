"""The KD SAM paper's published Dice scores, kept as data with their source, to compare like with like."""

from __future__ import annotations

SOURCE = (
    'Patil, Palani, Krishnamurthi, "Efficient Knowledge Distillation of SAM for Medical Image Segmentation", '
    "arXiv 2501.16740 (2025); mean Dice per test set computed from the per-image scores in "
    "github.com/KunalPatil8020/M.S.-Thesis, Chapter_4/all_dsc_scores.csv"
)
CAVEATS = (
    "Test sets are small subsets whose images were not recorded; Dice was scored on 512x512 resized masks; "
    "in the saved stage-1 run of the reference notebooks the optimiser held the decoder, "
    "so the published student's encoder never learned from the teacher."
)

METHODS = ["KD SAM", "SAM ViT-H, decoder fine-tuned", "DeepLabV3+", "U-Net"]

# dataset -> (number of test images, {method: mean Dice})
PUBLISHED_DICE: dict[str, tuple[int, dict[str, float]]] = {
    "Kvasir-SEG": (50, {"KD SAM": 0.859, "SAM ViT-H, decoder fine-tuned": 0.872, "DeepLabV3+": 0.866, "U-Net": 0.572}),
    "ISIC 2017": (100, {"KD SAM": 0.911, "SAM ViT-H, decoder fine-tuned": 0.909, "DeepLabV3+": 0.931, "U-Net": 0.757}),
    "HC18": (95, {"KD SAM": 0.977, "SAM ViT-H, decoder fine-tuned": 0.976, "DeepLabV3+": 0.974, "U-Net": 0.762}),
    "BUSI": (50, {"KD SAM": 0.822, "SAM ViT-H, decoder fine-tuned": 0.905, "DeepLabV3+": 0.782, "U-Net": 0.628}),
}


def published_table() -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the published Dice table: one row per dataset, one column per method."""
    header = ["dataset (test images)", *METHODS]
    rows = [[f"{name} ({n})", *(f"{scores[m]:.3f}" for m in METHODS)] for name, (n, scores) in PUBLISHED_DICE.items()]
    return header, rows
