"""Pairs of patches related by a known homography (DeTone et al. 2016's protocol).

From one image: crop (and resize) a ``crop`` window, pick a patch of side S at
least ρ from the border, move its four corners by uniform offsets in [−ρ, ρ],
and cut the *previous* patch from the image seen through the homography
``H`` that maps the corners to the moved corners. Then pixel ``x`` of the
previous patch shows the point ``H x`` of the current patch (patch
coordinates), so ``offsets = H(corners) − corners`` is the 4-point label —
the same convention as deep_vision's Homography message (source → current).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deep_vision.errors import DatasetError
from deep_vision.geometry.homography import four_point_to_homography, patch_corners

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff")


@dataclass
class PatchPair:
    prev: np.ndarray  # [S x S] uint8
    curr: np.ndarray  # [S x S] uint8
    offsets: np.ndarray  # [4 x 2] float64, corner displacements prev -> curr (pixels)
    H: np.ndarray  # [3 x 3] patch-coordinate homography prev -> curr


def list_images(root: str | Path, pattern: str = "**/*", first: int | None = None, last: int | None = None) -> list[Path]:
    """Sorted image files under ``root`` matching ``pattern``, optionally sliced to indices [first, last]."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder not found: {root}")
    files = sorted(p for p in root.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES)
    files = files[first : None if last is None else last + 1]
    if not files:
        raise DatasetError(f"Could not find any image in root: {root} (pattern {pattern!r}, first={first}, last={last})")
    return files


def load_grey(path: str | Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DatasetError(f"cannot read image: {path}")
    return image


def random_crop(image: np.ndarray, rng: np.random.Generator, size: tuple[int, int], max_zoom: float = 1.5) -> np.ndarray:
    """A random ``size`` = (W, H) window of ``image`` after a random downscale (never below ``size``)."""
    cw, ch = size
    h, w = image.shape[:2]
    base = max(cw / w, ch / h)
    scale = base * rng.uniform(1.0, max_zoom) if base < 1.0 else base
    scale = min(scale, 1.0) if base < 1.0 else scale
    if abs(scale - 1.0) > 1e-6:
        image = cv2.resize(image, (max(cw, round(w * scale)), max(ch, round(h * scale))),
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    h, w = image.shape[:2]
    x = int(rng.integers(0, w - cw + 1))
    y = int(rng.integers(0, h - ch + 1))
    return image[y : y + ch, x : x + cw]


def sample_pair(image: np.ndarray, rng: np.random.Generator, patch_size: int = 128, rho: float = 32.0,
                crop: tuple[int, int] = (320, 240), max_zoom: float = 1.5) -> PatchPair:
    """One pair with a random homography from a grey image (see the module docstring)."""
    S = patch_size
    if crop[0] < S + 2 * rho or crop[1] < S + 2 * rho:
        raise ValueError(f"crop {crop} too small for patch {S} with rho {rho}")
    window = random_crop(image, rng, crop, max_zoom)
    r = int(np.ceil(rho))
    px = int(rng.integers(r, crop[0] - r - S + 1))
    py = int(rng.integers(r, crop[1] - r - S + 1))
    corners = patch_corners(S)
    offsets = rng.uniform(-rho, rho, size=(4, 2))
    H = four_point_to_homography(corners, offsets)  # patch coordinates, prev -> curr
    T = np.array([[1.0, 0.0, px], [0.0, 1.0, py], [0.0, 0.0, 1.0]])
    # prev(x) = window(T H x): the window seen through H, cut at the same place.
    prev = cv2.warpPerspective(window, T @ H, (S, S), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT_101)
    curr = np.ascontiguousarray(window[py : py + S, px : px + S])
    return PatchPair(prev=prev, curr=curr, offsets=offsets, H=H)


def photometric(patch: np.ndarray, rng: np.random.Generator, brightness: float = 0.2, contrast: float = 0.2,
                gamma: float = 0.25, noise: float = 3.0, blur_prob: float = 0.15) -> np.ndarray:
    """Independent photometric changes (exposure, contrast, gamma, blur, sensor noise), uint8 in and out."""
    x = patch.astype(np.float32) / 255.0
    x = np.clip(x, 0, 1) ** np.float32(np.exp(rng.uniform(-gamma, gamma)))
    x = (x - 0.5) * np.float32(1 + rng.uniform(-contrast, contrast)) + 0.5 + np.float32(rng.uniform(-brightness, brightness))
    if rng.random() < blur_prob:
        x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.3, 1.2)))
    x = x * 255.0 + rng.normal(0.0, rng.uniform(0, noise), x.shape).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)
