"""Patches around keypoints for the patch descriptor, without torch (run time needs only numpy and OpenCV).

The same function cuts the training patches (``training/make_patches.py``), the evaluation's patch sets
(``deep_vision.eval.patch_sets``) and :class:`deep_vision.estimators.PatchDescriptor`'s feeds, so that a
network sees at run time exactly what it was trained on.

A patch is a ``size``×``size`` grey square (32 by default) resampled from the image through an affine map:
patch pixel (i, j) (centre at ``(size − 1) / 2``) shows image point ``centre + A · (j − c, i − c)``. For a
keypoint of diameter ``d`` (OpenCV's ``KeyPoint.size``) the patch spans ``magnification · d`` pixels, upright
unless an angle is given. Large regions are sampled from a Gaussian pyramid level of about the patch's
resolution (anti-aliasing), small ones from the image with bilinear interpolation; outside the image the
border is replicated.
"""

from __future__ import annotations

import cv2
import numpy as np

PATCH_SIZE = 32
#: Patch span per keypoint diameter: OpenCV's SIFT describes a 4×4 grid of 3σ cells, 12σ = 6 × KeyPoint.size.
MAGNIFICATION = 6.0


def keypoint_affines(keypoints: np.ndarray, sizes: np.ndarray | float, angles_deg: np.ndarray | None = None,
                     magnification: float = MAGNIFICATION, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """[N x 2 x 3] maps from patch pixels to image pixels for keypoints ([N x 2] x, y) of diameters ``sizes``
    (pixels) and optional angles (degrees, OpenCV's ``KeyPoint.angle``: the patch's x axis along it)."""
    kp = np.asarray(keypoints, np.float64).reshape(-1, 2)
    n = len(kp)
    scale = magnification * np.broadcast_to(np.asarray(sizes, np.float64), (n,)) / patch_size
    theta = np.zeros(n) if angles_deg is None else np.radians(np.asarray(angles_deg, np.float64).reshape(n))
    c, s = np.cos(theta) * scale, np.sin(theta) * scale
    A = np.empty((n, 2, 3))
    A[:, 0, 0], A[:, 0, 1], A[:, 1, 0], A[:, 1, 1] = c, -s, s, c
    A[:, :, 2] = kp
    return A


def extract_patches(grey: np.ndarray, affines: np.ndarray, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """[N x S x S] uint8 patches of a grey uint8 image through [N x 2 x 3] affine maps (see the module
    docstring: columns 0-1 the linear part per patch pixel, column 2 the image point of the patch centre)."""
    grey = np.asarray(grey)
    if grey.dtype != np.uint8 or grey.ndim != 2:
        raise ValueError(f"expected an [H x W] uint8 grey image, got {grey.dtype} {list(grey.shape)}")
    A = np.asarray(affines, np.float64).reshape(-1, 2, 3)
    n, S = len(A), int(patch_size)
    out = np.empty((n, S, S), np.uint8)
    if n == 0:
        return out
    offs = np.arange(S, dtype=np.float64) - (S - 1) / 2.0
    gx, gy = np.meshgrid(offs, offs)  # patch pixel offsets from the centre
    # image pixels per patch pixel (the larger singular value of the linear part): which pyramid level to use
    lin = A[:, :, :2]
    step = np.sqrt(np.maximum(np.linalg.eigvalsh(np.einsum("nij,nik->njk", lin, lin))[:, -1], 1e-12))
    level = np.clip(np.floor(np.log2(np.maximum(step, 1.0))).astype(int), 0, 8)
    pyramid = [grey]
    while len(pyramid) <= level.max() and min(pyramid[-1].shape) >= 16:
        pyramid.append(cv2.pyrDown(pyramid[-1]))
    level = np.minimum(level, len(pyramid) - 1)
    for lv in np.unique(level):
        idx = np.flatnonzero(level == lv)
        f = 2.0 ** lv
        a = A[idx]
        # image point -> level point: p / f (pyrDown centres its kernel on the even pixels)
        x = (a[:, 0, 0, None, None] * gx + a[:, 0, 1, None, None] * gy + a[:, 0, 2, None, None]) / f
        y = (a[:, 1, 0, None, None] * gx + a[:, 1, 1, None, None] * gy + a[:, 1, 2, None, None]) / f
        x, y = x.reshape(-1, S).astype(np.float32), y.reshape(-1, S).astype(np.float32)
        rows = (32767 // S) * S  # OpenCV's maps hold at most 32767 rows: 1023 patches of 32 per call
        sampled = np.concatenate([cv2.remap(pyramid[lv], x[r:r + rows], y[r:r + rows], cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REPLICATE) for r in range(0, len(x), rows)])
        out[idx] = sampled.reshape(len(idx), S, S)
    return out


def to_network(patches: np.ndarray) -> np.ndarray:
    """[N x S x S] uint8 patches → [N x 1 x S x S] float32 network input in [0, 1] (the network normalises
    each patch itself)."""
    p = np.asarray(patches)
    if p.dtype != np.uint8 or p.ndim != 3:
        raise ValueError(f"expected [N x S x S] uint8 patches, got {p.dtype} {list(p.shape)}")
    return np.ascontiguousarray(p[:, None].astype(np.float32) * np.float32(1.0 / 255.0))
