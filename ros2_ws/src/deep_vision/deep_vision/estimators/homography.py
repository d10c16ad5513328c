"""Frame-to-frame homography: HomographyNet, optionally refined (second network pass + ECC).

Pipeline for ``estimate(prev, curr)`` on full-resolution frames:

1. **Network (raw)**: both frames to grey, resized to the network's S×S
   input; one pass predicts the corner offsets → H at working resolution →
   conjugated to full resolution (:func:`conjugate_homography`).
2. **Refinement** (``refine=True``): ``network_passes − 1`` further passes on
   the previous frame re-warped by the current estimate (a cascade: each
   predicts the residual homography), then photometric refinement with
   OpenCV's ECC (Evangelidis & Psarakis 2008, ``cv2.findTransformECC``,
   homography motion) at ``refine_width``, initialised by the network. If ECC
   does not converge, or its correlation stays below ``min_correlation``, the
   network estimate is kept and the result is flagged by ``ecc_converged``.

Validity: the estimate must keep the image's corners in the same order (no
fold-over), not scale the area beyond ``max_area_change`` and, when refined,
reach ``min_correlation``. ``corner_uncertainty_px`` is the expected mean
corner error at full resolution: the model's held-out MACE (model card) for a
raw estimate, and for a converged refinement the corner movement of ECC's
final iterations, floored at ``min_uncertainty_px``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deep_vision.errors import ConfigError, ImageEncodingError
from deep_vision.geometry.homography import (
    conjugate_homography,
    four_point_to_homography,
    homography_to_four_point,
    patch_corners,
    resize_matrix,
)
from deep_vision.io.image import as_grey as to_grey
from deep_vision.models.homography_input import normalize

logger = logging.getLogger(__name__)


@dataclass
class _Frame:
    grey: np.ndarray  # [H x W] uint8, full resolution
    small: np.ndarray  # [S x S] network input size
    scale: float  # refine_width / W (at most 1)
    levels: int  # ECC pyramid levels wanted
    _pyramid: list[np.ndarray] | None = None

    @property
    def pyramid(self) -> list[np.ndarray]:
        """ECC levels: refine_width, then halvings; built on first use (never when refinement is off)."""
        if self._pyramid is None:
            h, w = self.grey.shape
            base = self.grey if self.scale >= 1.0 else cv2.resize(
                self.grey, (max(8, round(w * self.scale)), max(8, round(h * self.scale))), interpolation=cv2.INTER_AREA)
            self._pyramid = [base]
            for _ in range(self.levels - 1):
                if min(self._pyramid[-1].shape) < 32:
                    break
                self._pyramid.append(cv2.pyrDown(self._pyramid[-1]))
        return self._pyramid


@dataclass
class HomographyResult:
    """Homography mapping pixels of ``prev`` into ``curr`` (full resolution)."""

    matrix: np.ndarray  # [3 x 3], H[2, 2] = 1
    valid: bool
    corner_uncertainty_px: float
    raw_matrix: np.ndarray  # [3 x 3] the first network pass alone, full resolution
    refined: bool  # refinement ran
    ecc_converged: bool | None = None  # None when ECC did not run
    ecc_correlation: float | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


def homography_is_sane(H: np.ndarray, width: int, height: int, max_area_change: float) -> bool:
    """True when H keeps the image corners in order (convex, same orientation) and the area within bounds."""
    if not np.all(np.isfinite(H)):
        return False
    c = patch_corners(width, height)
    m = homography_to_four_point(H, c) + c
    homog = np.concatenate([c, np.ones((4, 1))], axis=1) @ H.T
    if np.any(homog[:, 2] <= 0):  # a corner mapped through infinity
        return False
    def cross(u: np.ndarray, v: np.ndarray) -> float:
        return float(u[0] * v[1] - u[1] * v[0])

    cross = [cross(m[(i + 1) % 4] - m[i], m[(i + 2) % 4] - m[(i + 1) % 4]) for i in range(4)]
    if not (all(x > 0 for x in cross) or all(x < 0 for x in cross)):
        return False
    area = 0.5 * abs(sum(m[i, 0] * m[(i + 1) % 4, 1] - m[(i + 1) % 4, 0] * m[i, 1] for i in range(4)))
    ratio = area / float((width - 1) * (height - 1))
    return 1.0 / max_area_change <= ratio <= max_area_change


class HomographyEstimator:
    """Homography between consecutive frames (see the module docstring)."""

    def __init__(self, backend: Any, *, patch_size: int = 128, refine: bool = True, network_passes: int = 1,
                 refine_width: int = 256, ecc_iterations: int = 30, ecc_epsilon: float = 1e-3, ecc_levels: int = 3,
                 max_refine_shift: float = 0.25, fallback_identity: bool = True,
                 min_correlation: float = 0.6, max_area_change: float = 4.0, raw_uncertainty_px: float = 10.0,
                 min_uncertainty_px: float = 0.5, input_name: str = "patches", output_name: str = "offsets") -> None:
        if network_passes < 1:
            raise ConfigError(f"network_passes must be at least 1, got {network_passes}")
        if refine_width < 32:
            raise ConfigError(f"refine_width must be at least 32 pixels, got {refine_width}")
        self.backend = backend
        self.patch_size = int(patch_size)
        self.refine = bool(refine)
        self.network_passes = int(network_passes)
        self.refine_width = int(refine_width)
        self.ecc_criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, int(ecc_iterations), float(ecc_epsilon))
        self.ecc_levels = max(1, int(ecc_levels))
        self.fallback_identity = bool(fallback_identity)
        self.max_refine_shift = float(max_refine_shift)
        self.min_correlation = float(min_correlation)
        self.max_area_change = float(max_area_change)
        self.raw_uncertainty_px = float(raw_uncertainty_px)  # held-out MACE at S×S
        self.min_uncertainty_px = float(min_uncertainty_px)
        self.input_name = input_name
        self.output_name = output_name
        self._corners = patch_corners(self.patch_size)
        self._cache: list[tuple[np.ndarray, _Frame]] = []

    @classmethod
    def from_model(cls, path: str | Path, backend: str = "auto", refine: bool = True, **kwargs: Any) -> "HomographyEstimator":
        """Load a HomographyNet (ONNX + model card, or a PyTorch checkpoint) on ``backend``.

        The patch size, input/output names and the raw uncertainty come from the
        model card when it has them.
        """
        from deep_vision.inference import load_backend
        from deep_vision.inference.modelcard import ModelCard, card_path_for

        net = load_backend(path, backend, threads=kwargs.pop("threads", None))
        defaults: dict[str, Any] = {}
        card_path = card_path_for(Path(path))
        if card_path.is_file():
            card = ModelCard.load(card_path)
            spec = card.inputs[0]
            defaults["patch_size"] = int(spec.shape[-1])
            defaults["input_name"] = spec.name
            defaults["output_name"] = card.outputs[0].name
            mace = (card.metrics or {}).get("validation_mace_px")
            if mace:
                defaults["raw_uncertainty_px"] = float(mace)
        elif net.inputs:
            defaults["patch_size"] = int(net.inputs[0].shape[-1])
            defaults["input_name"] = net.inputs[0].name
            defaults["output_name"] = net.outputs[0].name
        defaults.update(kwargs)
        logger.info("homography estimator: %s, refine=%s", net.describe(), refine)
        return cls(net, refine=refine, **defaults)

    # ------------------------------------------------------------------ frames
    def _frame(self, image: np.ndarray) -> _Frame:
        """Grey frame, its network-size copy and (on demand) its ECC pyramid; the last two frames are cached.

        The cache is keyed by the array object itself (kept referenced, so its id cannot
        be reused): in a stream, the previous frame of a pair is the current frame of the
        pair before, and is not resized twice. Arrays must not be modified in place after use.
        """
        for key, frame in self._cache:
            if key is image:
                return frame
        grey = to_grey(image)
        h, w = grey.shape
        S = self.patch_size
        small = cv2.resize(grey, (S, S), interpolation=cv2.INTER_AREA if (w > S or h > S) else cv2.INTER_LINEAR)
        frame = _Frame(grey, small, min(1.0, self.refine_width / w), self.ecc_levels)
        self._cache = [(image, frame)] + self._cache[:1]
        return frame

    # ------------------------------------------------------------------ network
    def _offsets(self, prev_small: np.ndarray, curr_small: np.ndarray) -> np.ndarray:
        x = normalize(np.stack([prev_small, curr_small]))[None]
        out = self.backend.run({self.input_name: x})[self.output_name]
        return np.asarray(out, dtype=np.float64).reshape(4, 2)

    def network_homography(self, prev: np.ndarray, curr: np.ndarray, passes: int = 1) -> np.ndarray:
        """H (full resolution) from ``passes`` cascaded network passes (grey or RGB uint8 frames)."""
        return self._network(self._frame(prev), self._frame(curr), passes)

    def _network(self, prev: _Frame, curr: _Frame, passes: int) -> np.ndarray:
        h, w = prev.grey.shape
        S = self.patch_size
        H_s = four_point_to_homography(self._corners, self._offsets(prev.small, curr.small))
        for _ in range(passes - 1):
            # Re-warp the previous patch by the estimate; the network then sees the residual motion.
            warped = cv2.warpPerspective(prev.small, H_s, (S, S), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REFLECT_101)
            H_res = four_point_to_homography(self._corners, self._offsets(warped, curr.small))
            H_s = H_res @ H_s
            H_s /= H_s[2, 2]
        return conjugate_homography(H_s, resize_matrix(S / w, S / h))

    # ------------------------------------------------------------------ ECC
    def ecc_refine(self, prev: np.ndarray, curr: np.ndarray, H_init: np.ndarray) -> tuple[np.ndarray, bool, float, float]:
        """Coarse-to-fine ECC at ``refine_width``: (H full-res, converged, correlation, last-level corner move px).

        Each pyramid level halves the resolution; ECC runs from the coarsest level
        to the finest, each initialised by the previous one. If a level fails, or
        the corners end further than ``max_refine_shift`` (fraction of the image
        diagonal) from the initial estimate, the refinement is rejected.
        """
        return self._ecc(self._frame(prev), self._frame(curr), H_init)

    def _ecc(self, prev: _Frame, curr: _Frame, H_init: np.ndarray) -> tuple[np.ndarray, bool, float, float]:
        base = resize_matrix(prev.scale, prev.scale)
        fine = prev.pyramid[0]
        c_r = patch_corners(fine.shape[1], fine.shape[0])
        H_r0 = conjugate_homography(H_init, np.linalg.inv(base))  # full -> refine resolution
        H_r = H_r0
        corr = float("nan")
        move = float("inf")
        for level in range(len(prev.pyramid) - 1, -1, -1):
            a, b = prev.pyramid[level], curr.pyramid[level]
            f = 0.5**level
            S_l = resize_matrix(f, f)
            H_l = conjugate_homography(H_r, np.linalg.inv(S_l))
            try:
                # ECC finds W with curr(W x) ≈ prev(x): W maps prev pixels into curr, our H.
                corr, warp = cv2.findTransformECC(a, b, H_l.astype(np.float32), cv2.MOTION_HOMOGRAPHY,
                                                  self.ecc_criteria, None, 3)
            except cv2.error:
                return H_init, False, float("nan"), float("inf")
            H_new = conjugate_homography(warp.astype(np.float64), S_l)
            if not np.all(np.isfinite(H_new)):
                return H_init, False, float("nan"), float("inf")
            move = float(np.linalg.norm(homography_to_four_point(H_new, c_r) - homography_to_four_point(H_r, c_r),
                                        axis=1).mean())
            H_r = H_new
        shift = np.linalg.norm(homography_to_four_point(H_r, c_r) - homography_to_four_point(H_r0, c_r), axis=1).max()
        if shift > self.max_refine_shift * np.hypot(*fine.shape):
            return H_init, False, float(corr), float("inf")
        return conjugate_homography(H_r, base), True, float(corr), move / prev.scale

    # ------------------------------------------------------------------ public
    def estimate(self, prev: np.ndarray, curr: np.ndarray) -> HomographyResult:
        """Homography mapping pixels of ``prev`` into ``curr`` (both full-resolution, grey or RGB uint8)."""
        t0 = time.perf_counter()
        a, b = self._frame(prev), self._frame(curr)
        if a.grey.shape != b.grey.shape:
            raise ImageEncodingError(f"frames differ in size: {a.grey.shape[::-1]} vs {b.grey.shape[::-1]}")
        h, w = a.grey.shape
        raw = self._network(a, b, 1)
        t1 = time.perf_counter()
        timings = {"network_ms": (t1 - t0) * 1e3}
        scale_to_full = float(np.hypot(w, h) / np.hypot(self.patch_size, self.patch_size))
        if not self.refine:
            valid = homography_is_sane(raw, w, h, self.max_area_change)
            timings["total_ms"] = timings["network_ms"]
            return HomographyResult(raw, valid, self.raw_uncertainty_px * scale_to_full, raw, False, timings_ms=timings)
        H = self._network(a, b, self.network_passes) if self.network_passes > 1 else raw
        t2 = time.perf_counter()
        H_ref, converged, corr, move = self._ecc(a, b, H)
        if self.fallback_identity and not (converged and corr >= self.min_correlation):
            # The network can be far off on unusual content: ECC from "no motion" is the other natural start.
            H_id, conv_id, corr_id, move_id = self._ecc(a, b, np.eye(3))
            if conv_id and corr_id > (corr if converged else -1.0):
                H_ref, converged, corr, move = H_id, conv_id, corr_id, move_id
        t3 = time.perf_counter()
        timings.update(cascade_ms=(t2 - t1) * 1e3, ecc_ms=(t3 - t2) * 1e3, total_ms=(t3 - t0) * 1e3)
        ok = converged and corr >= self.min_correlation
        final = H_ref if ok else H
        uncertainty = max(self.min_uncertainty_px, move) if ok else self.raw_uncertainty_px * scale_to_full
        valid = ok and homography_is_sane(final, w, h, self.max_area_change)
        return HomographyResult(final, valid, float(uncertainty), raw, True, converged, corr if converged else None, timings)
