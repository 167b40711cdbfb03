"""Synthetic medical-looking images with known masks, written in the folder layout.

Real data cannot ship (licences), so the demo and the tests use these: four modalities whose
appearance follows the real ones closely enough for a SAM-family teacher to segment them from a box.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from kdsam.data.imageio import write_png
from kdsam.utils.atomic import write_json

MODALITIES = ("polyp", "skin", "fetal_head", "breast_lesion")


def _blob(shape: tuple[int, int], rng: np.random.Generator, radius: float, wobble: float) -> np.ndarray:
    """An irregular star-convex region: a circle whose radius varies smoothly with angle."""
    h, w = shape
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    yy, xx = np.mgrid[:h, :w]
    ang = np.arctan2(yy - cy, xx - cx)
    r = np.full_like(ang, radius)
    for k in range(2, 6):
        r += radius * wobble / k * np.sin(k * ang + rng.uniform(0, 2 * np.pi))
    sx, sy = rng.uniform(0.75, 1.25, 2)
    return (((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2) ** 0.5 < r


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return n / (np.abs(n).max() + 1e-8)


def _polyp(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    mask = _blob(shape, rng, rng.uniform(0.12, 0.22) * min(h, w), 0.25)
    yy, xx = np.mgrid[:h, :w]
    vignette = 1 - 0.6 * (((yy - h / 2) / h) ** 2 + ((xx - w / 2) / w) ** 2) * 2
    tissue = np.stack([0.75, 0.38, 0.33]) * (0.85 + 0.15 * _smooth_noise(shape, rng, 6)[..., None])
    img = tissue * vignette[..., None]
    dist = ndimage.distance_transform_edt(mask)
    dome = np.clip(dist / (dist.max() + 1e-8), 0, 1) ** 0.5
    polyp = np.stack([0.9, 0.55, 0.45]) * (0.8 + 0.2 * dome[..., None])
    img = np.where(mask[..., None], polyp * vignette[..., None] * 1.1, img)
    img = ndimage.gaussian_filter(img, (1.2, 1.2, 0))
    glints = (rng.random(shape) > 0.9993) & mask
    img[ndimage.binary_dilation(glints, iterations=2)] = 1.0
    return img, mask


def _skin(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    mask = _blob(shape, rng, rng.uniform(0.18, 0.3) * min(shape), 0.35)
    skin = np.stack([0.88, 0.7, 0.6]) * (0.92 + 0.08 * _smooth_noise(shape, rng, 10)[..., None])
    soft = ndimage.gaussian_filter(mask.astype(float), 3)
    lesion = np.stack([0.42, 0.26, 0.18]) * (0.8 + 0.3 * _smooth_noise(shape, rng, 4)[..., None])
    img = skin * (1 - soft[..., None]) + lesion * soft[..., None]
    for _ in range(rng.integers(0, 4)):  # hairs
        y0, x0 = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        t = np.linspace(0, 1, 400)
        ys = np.clip(y0 + t * rng.uniform(-1, 1) * shape[0], 0, shape[0] - 1).astype(int)
        xs = np.clip(x0 + t * rng.uniform(-1, 1) * shape[1], 0, shape[1] - 1).astype(int)
        img[ys, xs] = 0.15
    return img, mask


def _speckle(shape: tuple[int, int], rng: np.random.Generator, brightness: np.ndarray) -> np.ndarray:
    """Ultrasound-like: Rayleigh speckle over an echogenicity map, inside a sector."""
    h, w = shape
    speckle = rng.rayleigh(0.5, shape)
    img = ndimage.gaussian_filter(brightness * speckle, 0.8)
    yy, xx = np.mgrid[:h, :w]
    angle = np.abs(np.arctan2(xx - w / 2, yy + 0.15 * h))
    return np.where(angle < 0.75, img, 0.0)


def _fetal_head(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.45, 0.6) * h, rng.uniform(0.4, 0.6) * w
    a, b = rng.uniform(0.2, 0.3) * w, rng.uniform(0.16, 0.24) * h
    t = rng.uniform(0, np.pi)
    u = ((xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)) / a
    v = (-(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)) / b
    rho = np.sqrt(u**2 + v**2)
    mask = rho <= 1.0
    echo = 0.35 + 0.15 * _smooth_noise(shape, rng, 12)
    echo = np.where(mask, 0.25, echo) + 1.2 * np.exp(-(((rho - 1.0) / 0.04) ** 2))
    grey = _speckle(shape, rng, echo)
    return np.repeat(grey[..., None], 3, axis=2), mask


def _breast_lesion(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    mask = _blob(shape, rng, rng.uniform(0.1, 0.2) * min(shape), 0.3)
    echo = 0.55 + 0.25 * _smooth_noise(shape, rng, 8)
    soft = ndimage.gaussian_filter(mask.astype(float), 1.5)
    echo = echo * (1 - 0.8 * soft)
    grey = _speckle(shape, rng, echo)
    return np.repeat(grey[..., None], 3, axis=2), mask


GENERATORS: dict[str, Callable[[tuple[int, int], np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "polyp": _polyp,
    "skin": _skin,
    "fetal_head": _fetal_head,
    "breast_lesion": _breast_lesion,
}


def synthesize(modality: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One (HxWx3 uint8 image, HxW bool mask) pair; the same seed always gives the same pair."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(240, 320)), int(rng.integers(300, 400))
    img, mask = GENERATORS[modality]((h, w), rng)
    img = np.clip(img * 255 + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    return img, mask


def write_synthetic(root: str | Path, n: int = 64, modalities: tuple[str, ...] = MODALITIES, seed: int = 0) -> Path:
    """Write `n` images, cycling through `modalities`, as root/images/NAME.png + root/masks/NAME.png."""
    root = Path(root)
    meta = {}
    for i in tqdm(range(n), desc="synthetic data", unit="img", leave=False):
        modality = modalities[i % len(modalities)]
        name = f"{modality}_{i:04d}"
        img, mask = synthesize(modality, seed * 100_003 + i)
        write_png(root / "images" / f"{name}.png", img)
        write_png(root / "masks" / f"{name}.png", mask)
        meta[name] = {"modality": modality}
    write_json(root / "synthetic.json", {"seed": seed, "n": n, "samples": meta})
    return root
