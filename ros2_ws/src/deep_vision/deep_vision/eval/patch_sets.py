"""Patch sets in the HPatches layout, made from images with exact correspondences.

HPatches (Balntas et al., CVPR 2017) cuts, for each image sequence, one set of reference patches around
keypoints of a reference image and, for every other image of the sequence, the "same" patches found through
the ground-truth geometry, disturbed by an affine jitter that imitates a detector's error: a little for the
"easy" patches, more for the "hard" ones. Row k of every array shows the same scene point.

Here the geometry is a homography (``homography_sequence``: real images warped by random homographies, the
Oxford graf pairs) or a depth map (``deep_vision.synthetic.patches``: the synthetic world from two
viewpoints), and the patches come from :func:`deep_vision.models.patch_input.extract_patches`, the function
that feeds the network at run time. The same code makes the training data (``training/make_patches.py``)
and the held-out sets (``deep-vision evaluate patches``).

The jitter magnitudes are ours, in the spirit of HPatches' easy and hard levels (its exact values are not
reproduced): a random rotation, isotropic scale, anisotropy and shift of the target patch's affine map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from deep_vision.models.patch_input import MAGNIFICATION, PATCH_SIZE, extract_patches, keypoint_affines

#: Affine jitter per level: rotation (deg), log2 scale, log2 anisotropy, shift (fraction of the patch span);
#: each drawn uniformly within ±.
JITTER: dict[str, dict[str, float]] = {
    "easy": {"rotation_deg": 7.5, "log2_scale": 0.1, "log2_aniso": 0.05, "shift": 0.04},
    "hard": {"rotation_deg": 15.0, "log2_scale": 0.25, "log2_aniso": 0.1, "shift": 0.08},
}
LEVELS = tuple(JITTER)


@dataclass
class PatchSequence:
    """One reference image's patches and their correspondences in T target images (HPatches' layout)."""

    name: str
    kind: str  # "viewpoint" | "illumination"
    ref: np.ndarray  # [K x S x S] uint8
    targets: dict[str, np.ndarray] = field(default_factory=dict)  # level -> [T x K x S x S] uint8

    def __post_init__(self) -> None:
        if self.kind not in ("viewpoint", "illumination"):
            raise ValueError(f"kind must be viewpoint or illumination, got {self.kind!r}")
        for level, t in self.targets.items():
            if t.ndim != 4 or t.shape[1:] != self.ref.shape:
                raise ValueError(f"{self.name}: {level} patches {list(t.shape)} do not match the reference "
                                 f"{list(self.ref.shape)}")

    def __len__(self) -> int:
        return len(self.ref)

    def save(self, path) -> None:
        np.savez_compressed(path, name=self.name, kind=self.kind, ref=self.ref,
                            **{f"targets_{k}": v for k, v in self.targets.items()})

    @classmethod
    def load(cls, path) -> PatchSequence:
        with np.load(path, allow_pickle=False) as z:
            targets = {k[len("targets_"):]: z[k] for k in z.files if k.startswith("targets_")}
            return cls(str(z["name"]), str(z["kind"]), z["ref"], targets)


def detect(grey: np.ndarray, count: int, *, min_size: float = 2.0, max_size: float = 40.0,
           border: float = 0.0, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` DoG (SIFT detector) keypoints of a grey image, strongest first, one per location:
    ([K x 2] x, y, [K] sizes). ``rng`` picks ``count`` at random among the strongest 3×count instead."""
    sift = cv2.SIFT_create(nfeatures=3 * count if rng is not None else 2 * count)
    kps = sorted(sift.detect(grey, None), key=lambda k: -k.response)
    seen: set[tuple[int, int]] = set()
    pts, sizes = [], []
    h, w = grey.shape
    for k in kps:
        x, y = k.pt
        key = (int(x // 2), int(y // 2))
        if key in seen or not (min_size <= k.size <= max_size):
            continue
        if not (border <= x < w - border and border <= y < h - border):
            continue
        seen.add(key)
        pts.append(k.pt)
        sizes.append(k.size)
    pts_a, sizes_a = np.asarray(pts, np.float64).reshape(-1, 2), np.asarray(sizes, np.float64)
    if rng is not None and len(pts_a) > count:
        pick = np.sort(rng.choice(len(pts_a), count, replace=False))
        pts_a, sizes_a = pts_a[pick], sizes_a[pick]
    return pts_a[:count], sizes_a[:count]


def jitter_affines(n: int, level: str, rng: np.random.Generator) -> np.ndarray:
    """[n x 2 x 3] random affine maps of patch coordinates (HPatches-style detector noise, see ``JITTER``);
    the shift is in patch pixels, a fraction of the patch."""
    j = JITTER[level]
    u = lambda a: rng.uniform(-a, a, n)  # noqa: E731
    th, s, an = np.radians(u(j["rotation_deg"])), 2.0 ** u(j["log2_scale"]), 2.0 ** u(j["log2_aniso"])
    c, si = np.cos(th), np.sin(th)
    J = np.zeros((n, 2, 3))
    J[:, 0, 0], J[:, 0, 1] = c * s * an, -si * s / an
    J[:, 1, 0], J[:, 1, 1] = si * s * an, c * s / an
    J[:, :, 2] = np.c_[u(j["shift"]), u(j["shift"])] * PATCH_SIZE
    return J


def compose(A: np.ndarray, J: np.ndarray) -> np.ndarray:
    """A ∘ J for [n x 2 x 3] affine maps (patch → image after patch → patch)."""
    out = np.empty_like(A)
    out[:, :, :2] = A[:, :, :2] @ J[:, :, :2]
    out[:, :, 2] = np.einsum("nij,nj->ni", A[:, :, :2], J[:, :, 2]) + A[:, :, 2]
    return out


def warp_affines(H: np.ndarray, A: np.ndarray) -> np.ndarray:
    """The affine maps ([n x 2 x 3], patch → target image) that follow reference maps ``A`` through the
    homography ``H`` (reference → target), linearised at each patch centre."""
    H = np.asarray(H, np.float64)
    c = A[:, :, 2]
    ph = np.c_[c, np.ones(len(c))] @ H.T
    w = ph[:, 2]
    p = ph[:, :2] / w[:, None]
    # Jacobian of the projective map at c: (H[:2,:2] - p H[2,:2]) / w
    Jh = (H[None, :2, :2] - p[:, :, None] * H[None, 2, :2][:, None, :]) / w[:, None, None]
    out = np.empty_like(A)
    out[:, :, :2] = Jh @ A[:, :, :2]
    out[:, :, 2] = p
    return out


def visible(A: np.ndarray, shape: tuple[int, int], patch_size: int = PATCH_SIZE) -> np.ndarray:
    """[n] bool: the whole patch of each affine map lies inside an image of ``shape`` (rows, cols)."""
    r = (patch_size - 1) / 2.0
    corners = np.array([[-r, -r], [r, -r], [r, r], [-r, r]])
    pts = np.einsum("nij,kj->nki", A[:, :, :2], corners) + A[:, None, :, 2]
    h, w = shape
    return ((pts[..., 0] >= 0) & (pts[..., 0] <= w - 1) & (pts[..., 1] >= 0) & (pts[..., 1] <= h - 1)).all(axis=1)


def homography_sequence(name: str, kind: str, ref: np.ndarray, targets: list[tuple[np.ndarray, np.ndarray]],
                        count: int, rng: np.random.Generator, *, levels: tuple[str, ...] = LEVELS,
                        magnification: float = MAGNIFICATION, min_size: float = 2.0,
                        max_size: float = 40.0) -> PatchSequence:
    """Patches of ``ref`` (grey uint8) around up to ``count`` keypoints and their correspondences in each
    ``(target grey image, H reference→target)``; only keypoints whose patches lie inside every image are
    kept (``max_size``: the largest keypoint diameter, in reference pixels)."""
    pts, sizes = detect(ref, 2 * count, min_size=min_size, max_size=max_size)
    A = keypoint_affines(pts, sizes, magnification=magnification)
    keep = visible(A, ref.shape)
    warped = [warp_affines(H, A) for _, H in targets]
    for (img, _), W in zip(targets, warped):
        keep &= visible(W, img.shape[:2])
    idx = np.flatnonzero(keep)[:count]
    A = A[idx]
    out = {}
    for level in levels:
        out[level] = np.stack([
            extract_patches(img, compose(W[idx], jitter_affines(len(idx), level, rng)))
            for (img, _), W in zip(targets, warped)])
    return PatchSequence(name, kind, extract_patches(ref, A), out)
