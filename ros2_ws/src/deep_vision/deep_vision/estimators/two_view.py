"""Two-view geometry from tracked points: the classical monocular VO step.

Correspondences come from one of three front ends:

- :class:`FeatureTracker`: Shi–Tomasi corners in the previous frame tracked into
  the current one with pyramidal Lucas–Kanade, forward–backward checked (the
  classical baseline);
- :class:`DenseFlowTracker`: dense optical flow (OpenCV DIS) both ways; in each
  cell of a grid the pixel with the strongest image gradient among those whose
  forward and backward flows agree, refined at full resolution (as DF-VO, Zhan
  et al., ICRA 2020, takes forward–backward consistent flow points spread over
  the image; here with a classical flow in place of a learned one);
- :class:`DescriptorMatcher`: ORB keypoints in both frames, matched by their ORB
  or learned patch descriptors.

Then the essential matrix is estimated with RANSAC and decomposed
(``cv2.findEssentialMat`` / ``cv2.recoverPose``, Nistér's five-point solver).
The translation comes out as a unit direction: monocular geometry has no scale.
Where the camera stands still or only turns, the direction is not determined at
all, and the five-point solver often fails: before it, the tracks are tried
against a rotation alone (:func:`rotation_from_bearings`, Wahba's problem on
the tracked rays, exact for a rotating camera). Where that explains them to
``rotation_only_px`` in median, the step is a rotation with an unobservable
translation (``t_dir`` zero). ``TwoViewMotion.translation_parallax_px`` is the
median displacement left once the rotation is undone (the points mapped
through the infinite homography K R K⁻¹).

With a motion prior (e.g. the VO network's step), ``motion(..., prior=)``
checks it against the tracks: its rotation is refined on the tracks it explains
(Sampson distance under ``prior_inlier_px``; the distance is minimised over the
rotation, robust loss, the prior's translation direction held); if the refined
prior then explains at least ``prior_support`` times as many tracks as the
RANSAC solution at RANSAC's threshold, it is kept: refined rotation, the
prior's direction. This breaks the ties of
near-degenerate geometry (repetitive texture, a dominant plane, small
baselines) that RANSAC resolves wrongly, while a prior the images contradict
is ignored.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from deep_vision.errors import ConfigError
from deep_vision.geometry.transforms import skew
from deep_vision.models.vo_input import DIS_PRESETS


@dataclass
class TwoViewMotion:
    """Motion of the current camera relative to the previous one (T_prev_curr), translation unit-length."""

    R: np.ndarray  # [3 x 3] rotation of the current camera in the previous camera's frame
    t_dir: np.ndarray  # [3] unit translation direction, previous camera frame; zero: no translation observable
    inliers: int
    tracked: int
    parallax_px: float  # median feature displacement (low parallax: direction unreliable)
    source: str = "geometry"  # geometry | prior (rotation re-estimated on the prior's tracks, prior direction)
    prior_support: float | None = None  # tracks the prior explains / tracks the RANSAC solution explains
    R_geometry: np.ndarray | None = None  # RANSAC's rotation (R itself when source is geometry)
    # RANSAC's inlier correspondences ([N x 2] full-size pixels in the previous / current frame)
    p0: np.ndarray | None = field(default=None, repr=False)
    p1: np.ndarray | None = field(default=None, repr=False)
    # median displacement of the inliers once the rotation is undone: under ~1 px the direction is undetermined
    translation_parallax_px: float = float("inf")

    def __post_init__(self) -> None:
        if self.R_geometry is None:
            self.R_geometry = self.R


def bearings(K: np.ndarray, p: np.ndarray) -> np.ndarray:
    """[N x 3] unit rays of pixels ``p`` [N x 2]."""
    rays = np.c_[np.asarray(p, np.float64), np.ones(len(p))] @ np.linalg.inv(K).T
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def rotation_from_bearings(K: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """R_pc (the current camera's rotation in the previous one's frame) that best maps the rays of ``p1`` onto
    those of ``p0`` (Kabsch / Wahba: the least-squares rotation; exact when the camera only turns)."""
    b0, b1 = bearings(K, p0), bearings(K, p1)
    U, _, Vt = np.linalg.svd(b0.T @ b1)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    return U @ D @ Vt


def rotated_residuals(R_pc: np.ndarray, K: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """[N] pixel distances between ``p1`` and ``p0`` carried by the rotation alone (K R_pcᵀ K⁻¹ p0)."""
    H = K @ np.asarray(R_pc, np.float64).T @ np.linalg.inv(K)
    q = np.c_[np.asarray(p0, np.float64), np.ones(len(p0))] @ H.T
    with np.errstate(divide="ignore", invalid="ignore"):
        q = q[:, :2] / q[:, 2:3]
    d = np.linalg.norm(np.asarray(p1, np.float64) - q, axis=1)
    return np.where(np.isfinite(d), d, np.inf)


def triangulate(R_pc: np.ndarray, t_pc: np.ndarray, K: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """[N x 3] points of the correspondences ``p0`` → ``p1`` in the previous camera's frame, for the step
    (R_pc, t_pc: the current camera in the previous one's frame; lengths in units of t_pc); non-finite where the
    rays do not meet."""
    R_cp = np.asarray(R_pc, np.float64).T
    t_cp = -R_cp @ np.asarray(t_pc, np.float64).reshape(3)
    K = np.asarray(K, np.float64)
    Xh = cv2.triangulatePoints(K @ np.c_[np.eye(3), np.zeros(3)], K @ np.c_[R_cp, t_cp],
                               np.asarray(p0, np.float64).T, np.asarray(p1, np.float64).T)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (Xh[:3] / Xh[3]).T


def derotated_parallax(R_pc: np.ndarray, K: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> float:
    """Median pixel displacement between ``p1`` and ``p0`` left once the rotation is undone."""
    return float(np.median(rotated_residuals(R_pc, K, p0, p1))) if len(p0) else 0.0


def fundamental_from_motion(R_pc: np.ndarray, t_pc: np.ndarray, K: np.ndarray,
                            K_inv: np.ndarray | None = None) -> np.ndarray:
    """F with x_currᵀ F x_prev = 0 (pixels) for the current camera at (R_pc, t_pc) in the previous frame
    (``K_inv``: K's inverse, when the caller has it)."""
    R = R_pc.T
    t = -R_pc.T @ np.asarray(t_pc, dtype=np.float64).reshape(3)
    K_inv = np.linalg.inv(K) if K_inv is None else K_inv
    return K_inv.T @ skew(t) @ R @ K_inv


def sampson_error(F: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Signed first-order geometric error of each match (p0[i] → p1[i], [N x 2]) to the epipolar geometry
    x1ᵀ F x0 = 0, in the points' units (pixels for a fundamental matrix, normalised coordinates for an
    essential matrix); its absolute value is the Sampson distance."""
    return sampson_homogeneous(F, np.c_[p0, np.ones(len(p0))], np.c_[p1, np.ones(len(p1))])


def sampson_homogeneous(F: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """:func:`sampson_error` of homogeneous points ([N x 3], last coordinate 1)."""
    Fx0 = x0 @ F.T
    Ftx1 = x1 @ F
    den = np.sqrt(Fx0[:, 0] ** 2 + Fx0[:, 1] ** 2 + Ftx1[:, 0] ** 2 + Ftx1[:, 1] ** 2) + 1e-15
    return np.sum(x1 * Fx0, axis=1) / den


def refine_rotation(R_pc: np.ndarray, t_pc: np.ndarray, K: np.ndarray, p0: np.ndarray, p1: np.ndarray,
                    scale_px: float = 2.0) -> np.ndarray:
    """Rotation near ``R_pc`` minimising the Sampson distances of the tracks with the direction ``t_pc`` held
    (scipy least squares, soft-L1 loss of scale ``scale_px``); ``R_pc`` itself if the solver fails."""
    from scipy.optimize import least_squares
    from scipy.spatial.transform import Rotation

    def residuals(w: np.ndarray) -> np.ndarray:
        R = R_pc @ Rotation.from_rotvec(w).as_matrix()
        return sampson_error(fundamental_from_motion(R, t_pc, K), p0, p1)

    sol = least_squares(residuals, np.zeros(3), loss="soft_l1", f_scale=scale_px, x_scale=1e-3, max_nfev=30)
    if not sol.success or not np.all(np.isfinite(sol.x)):
        return R_pc
    return R_pc @ Rotation.from_rotvec(sol.x).as_matrix()


def refine_motion(R_pc: np.ndarray, t_pc: np.ndarray, K: np.ndarray, p0: np.ndarray, p1: np.ndarray,
                  scale_px: float = 1.0, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(R, unit t) near (``R_pc``, ``t_pc``) minimising the tracks' Sampson distances over all five degrees of
    freedom (rotation, translation direction): the non-linear refinement that follows RANSAC in classical
    pipelines. Damped Gauss-Newton with a soft-L1 loss of scale ``scale_px`` (iteratively reweighted), a
    forward-difference Jacobian; a step is kept only if it lowers the robust cost."""
    t0 = np.asarray(t_pc, np.float64).reshape(3)
    t0 = t0 / np.linalg.norm(t0)
    x0 = np.c_[np.asarray(p0, np.float64), np.ones(len(p0))]
    x1 = np.c_[np.asarray(p1, np.float64), np.ones(len(p1))]
    K_inv = np.linalg.inv(K)

    def residuals(R_pc: np.ndarray, t: np.ndarray) -> np.ndarray:
        # Homogeneous points and K⁻¹ computed once: this runs ~70 times per frame.
        return sampson_homogeneous(fundamental_from_motion(R_pc, t, K, K_inv), x0, x1)

    def cost(r: np.ndarray) -> float:
        return float(np.sum(2.0 * (np.sqrt(1.0 + (r / scale_px) ** 2) - 1.0)))

    R, t = np.asarray(R_pc, np.float64), t0
    r = residuals(R, t)
    c, damping, eps = cost(r), 1e-3, 1e-6
    for _ in range(iterations):
        # Two unit vectors orthogonal to t: the direction moves on the sphere's tangent plane.
        b1 = np.cross(t, np.eye(3)[int(np.argmin(np.abs(t)))])
        b1 /= np.linalg.norm(b1)
        basis = np.stack([b1, np.cross(t, b1)])

        def unpack(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            tn = t + x[3:] @ basis
            return R @ cv2.Rodrigues(x[:3])[0], tn / np.linalg.norm(tn)

        J = np.empty((len(r), 5))
        for k in range(5):
            dx = np.zeros(5)
            dx[k] = eps
            J[:, k] = (residuals(*unpack(dx)) - r) / eps
        w = 1.0 / np.sqrt(1.0 + (r / scale_px) ** 2)
        A, g = (J * w[:, None]).T @ J, (J * w[:, None]).T @ r
        while damping < 1e6:
            step = np.linalg.solve(A + damping * np.diag(np.diag(A) + 1e-12), -g)
            R_new, t_new = unpack(step)
            r_new = residuals(R_new, t_new)
            c_new = cost(r_new)
            if np.isfinite(c_new) and c_new < c:
                R, t, r, damping = R_new, t_new, r_new, max(damping / 10, 1e-7)
                break
            damping *= 10
        else:
            break
        converged = c - c_new < 1e-9 * max(c, 1e-12)
        c = c_new
        if converged:
            break
    return R, t


def upscale_points(pts: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Pixel coordinates ([N x 2]: x, y) in a frame resized by ``scale`` (sx, sy; cv2.resize puts pixel centres
    at i + 0.5) → in the original frame."""
    if scale == (1.0, 1.0):
        return pts
    return ((pts + 0.5) / np.asarray(scale, np.float32) - 0.5).astype(np.float32)


@dataclass
class FeatureTracker:
    max_corners: int = 1500
    quality: float = 0.01
    min_distance: int = 8
    lk_window: int = 21
    lk_levels: int = 3
    fb_max_px: float = 1.0  # forward-backward tracking error allowed
    ransac_px: float = 1.0  # essential-matrix RANSAC threshold (full-size pixels, also when tracking downscaled)
    min_inliers: int = 30
    prior_inlier_px: float = 2.0  # Sampson distance under which a track supports a hypothesis (prior check)
    prior_support: float = 0.8  # the refined prior is used when it explains this fraction of RANSAC's support
    width: int | None = None  # wider frames are tracked downscaled to this width (points and K stay full-size)
    estimator: str = "ransac"  # essential-matrix robust estimator: ransac (OpenCV RANSAC) or magsac (USAC MAGSAC++)
    refine: bool = False  # refine rotation and direction on RANSAC's inliers (Sampson distance, 5 DoF)
    rotation_only_px: float = 1.0  # a rotation alone explaining the tracks to this median (px): no translation
    _small: tuple | None = field(default=None, init=False, repr=False, compare=False)  # (frame, its downscaled copy)

    def __post_init__(self) -> None:
        if self.estimator not in ("ransac", "magsac"):
            raise ConfigError(f"estimator must be ransac or magsac, got {self.estimator!r}")

    def downscaled(self, prev: np.ndarray, curr: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        """(prev, curr) at most ``width`` wide and the scale factors (sx, sy: the height is rounded); the current
        frame's copy is kept, so a stream downscales each frame once."""
        h, w = prev.shape[:2]
        if self.width is None or w <= self.width:
            return prev, curr, (1.0, 1.0)
        size = (int(self.width), max(8, round(h * self.width / w)))
        cached = self._small
        small_prev = cached[1] if cached is not None and cached[0] is prev else \
            cv2.resize(prev, size, interpolation=cv2.INTER_AREA)
        small_curr = cv2.resize(curr, size, interpolation=cv2.INTER_AREA)
        self._small = (curr, small_curr)
        return small_prev, small_curr, (size[0] / w, size[1] / h)

    def track(self, prev: np.ndarray, curr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Matched points ([N x 2] in prev, [N x 2] in curr, full-size pixels), grey uint8 frames."""
        prev, curr, s = self.downscaled(prev, curr)
        pts = cv2.goodFeaturesToTrack(prev, self.max_corners, self.quality, self.min_distance, blockSize=7)
        if pts is None or len(pts) < 8:
            return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
        lk = dict(winSize=(self.lk_window, self.lk_window), maxLevel=self.lk_levels,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
        nxt, st, _ = cv2.calcOpticalFlowPyrLK(prev, curr, pts, None, **lk)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(curr, prev, nxt, None, **lk)
        ok = (st[:, 0] == 1) & (st2[:, 0] == 1) & (np.linalg.norm(back - pts, axis=2)[:, 0] < self.fb_max_px)
        return upscale_points(pts[ok, 0], s), upscale_points(nxt[ok, 0], s)

    def motion(self, prev: np.ndarray, curr: np.ndarray, K: np.ndarray,
               prior: tuple[np.ndarray, np.ndarray] | None = None) -> TwoViewMotion | None:
        """Relative rotation and translation direction, or None when the geometry is not determined.

        ``prior``: (R_pc, t_pc), a guess of the same motion (see the module docstring).
        """
        p0, p1 = self.track(prev, curr)
        if len(p0) < max(8, self.min_inliers):
            return None
        parallax = float(np.median(np.linalg.norm(p1 - p0, axis=1)))
        rotation = self._rotation_only(K, p0, p1, parallax)
        if rotation is not None:
            return rotation
        method = cv2.USAC_MAGSAC if self.estimator == "magsac" else cv2.RANSAC
        E, mask = cv2.findEssentialMat(p0, p1, K, method=method, prob=0.999, threshold=self.ransac_px)
        if E is None or E.shape != (3, 3) or mask is None:
            return None
        n, R, t, mask = cv2.recoverPose(E, p0, p1, K, mask=mask)
        if n < self.min_inliers:
            return None
        # recoverPose gives x_curr = R x_prev + t; the current camera in the previous frame is (Rᵀ, -Rᵀ t).
        R_pc = R.T
        t_pc = (-R.T @ t).reshape(3)
        norm = np.linalg.norm(t_pc)
        if norm == 0:
            return None
        t_pc = t_pc / norm
        inl = mask.ravel() > 0
        if self.refine:
            R_pc, t_pc = refine_motion(R_pc, t_pc, K, p0[inl], p1[inl], self.ransac_px)
        geometry = TwoViewMotion(R_pc, t_pc, n, len(p0), parallax, p0=p0[inl], p1=p1[inl],
                                 translation_parallax_px=derotated_parallax(R_pc, K, p0[inl], p1[inl]))
        if prior is None or np.linalg.norm(prior[1]) < 1e-9:
            return geometry
        return self._check_prior(geometry, p0, p1, K, prior)

    def _rotation_only(self, K: np.ndarray, p0: np.ndarray, p1: np.ndarray, parallax: float) -> TwoViewMotion | None:
        """The step as a rotation without translation when one explains the tracks (standing still, turning on
        the spot): fitted to all tracks, then to those it explains within 2 ``rotation_only_px``."""
        R = rotation_from_bearings(K, p0, p1)
        keep = rotated_residuals(R, K, p0, p1) < 2 * self.rotation_only_px
        if keep.sum() < max(8, self.min_inliers):
            return None
        R = rotation_from_bearings(K, p0[keep], p1[keep])
        residual = derotated_parallax(R, K, p0, p1)
        if residual >= self.rotation_only_px:
            return None
        keep = rotated_residuals(R, K, p0, p1) < 2 * self.rotation_only_px
        return TwoViewMotion(R, np.zeros(3), int(keep.sum()), len(p0), parallax, p0=p0[keep], p1=p1[keep],
                             translation_parallax_px=residual)

    def _check_prior(self, geometry: TwoViewMotion, p0: np.ndarray, p1: np.ndarray, K: np.ndarray,
                     prior: tuple[np.ndarray, np.ndarray]) -> TwoViewMotion:
        R_prior, t_prior = np.asarray(prior[0], np.float64), np.asarray(prior[1], np.float64).reshape(3)
        t_dir = t_prior / np.linalg.norm(t_prior)

        def support(R: np.ndarray, t: np.ndarray, px: float) -> np.ndarray:
            return np.abs(sampson_error(fundamental_from_motion(R, t, K), p0, p1)) < px

        # Stage 1, loose: the tracks the prior explains, on which its rotation is refined (direction held).
        prior_in = support(R_prior, t_dir, self.prior_inlier_px)
        if prior_in.sum() < self.min_inliers:
            geometry.prior_support = 0.0
            return geometry
        R = refine_rotation(R_prior, t_dir, K, p0[prior_in], p1[prior_in], self.prior_inlier_px)
        # Stage 2, at RANSAC's threshold: the refined prior must explain the tracks about as well as RANSAC's
        # solution — a wrong direction cannot be absorbed by the rotation.
        ratio = float(support(R, t_dir, self.ransac_px).sum()) / max(1, int(support(geometry.R, geometry.t_dir,
                                                                                     self.ransac_px).sum()))
        geometry.prior_support = ratio
        if ratio < self.prior_support:
            return geometry
        return TwoViewMotion(R, t_dir, int(prior_in.sum()), geometry.tracked, geometry.parallax_px, "prior", ratio,
                             geometry.R, p0[prior_in], p1[prior_in], geometry.translation_parallax_px)



@dataclass
class DescriptorMatcher(FeatureTracker):
    """A front end that matches descriptors instead of tracking: ORB keypoints in both frames, described by
    ORB (``descriptor="orb"``) or by a learned patch descriptor (``"learned"``, ``patch``: a
    :class:`~deep_vision.estimators.patch.PatchDescriptor`, over each keypoint's ORB region), matched by
    mutual nearest neighbours passing Lowe's ratio test. The current frame's features are kept for the next
    pair. Rotation, direction and the prior check are :class:`FeatureTracker`'s."""

    descriptor: str = "orb"
    patch: object = None
    ratio: float = 0.8
    _features: tuple | None = field(default=None, init=False, repr=False, compare=False)  # (frame, kps, desc)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.descriptor not in ("orb", "learned"):
            raise ConfigError(f"descriptor must be orb or learned, got {self.descriptor!r}")
        if self.descriptor == "learned" and self.patch is None:
            raise ConfigError("descriptor 'learned' needs a patch descriptor (PatchDescriptor.from_model)")
        self._orb = cv2.ORB_create(nfeatures=int(self.max_corners), fastThreshold=10)
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING if self.descriptor == "orb" else cv2.NORM_L2)

    def _describe(self, frame: np.ndarray, small: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        cached = self._features
        if cached is not None and cached[0] is frame:
            return cached[1], cached[2]
        if self.descriptor == "orb":
            kps, desc = self._orb.detectAndCompute(small, None)
        else:
            kps = self._orb.detect(small, None)
            desc = None
            if kps:
                sizes = np.array([k.size for k in kps]) / self.patch.magnification
                desc = self.patch.describe(small, np.array([k.pt for k in kps]), sizes)
        pts = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
        self._features = (frame, pts, desc)
        return pts, desc

    def track(self, prev: np.ndarray, curr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Matched points ([N x 2] in prev, [N x 2] in curr, full-size pixels), grey uint8 frames."""
        small_prev, small_curr, s = self.downscaled(prev, curr)
        pa, da = self._describe(prev, small_prev)
        pb, db = self._describe(curr, small_curr)
        empty = np.zeros((0, 2), np.float32)
        if da is None or db is None or len(pa) < 2 or len(pb) < 2:
            return empty, empty
        forward = self._matcher.knnMatch(da, db, k=2)
        backward = {m[0].queryIdx: m[0].trainIdx for m in self._matcher.knnMatch(db, da, k=1) if m}
        pairs = [(m[0].queryIdx, m[0].trainIdx) for m in forward
                 if len(m) == 2 and m[0].distance < self.ratio * m[1].distance
                 and backward.get(m[0].trainIdx) == m[0].queryIdx]
        if not pairs:
            return empty, empty
        i, j = np.array(pairs).T
        return upscale_points(pa[i], s), upscale_points(pb[j], s)


@dataclass
class DenseFlowTracker(FeatureTracker):
    """Correspondences from dense DIS optical flow (see the module docstring): the flow is computed at most
    ``width`` pixels wide, at most one point is kept per ``cell_px`` × ``cell_px`` cell there (forward–backward
    disagreement under ``fb_max_px``), then each point is refined at full resolution by Lucas–Kanade started
    from the flow (``refine_window``; 0: no refinement), again forward–backward checked. The essential-matrix
    step and the prior check are :class:`FeatureTracker`'s. Keeps DIS buffers: one instance per stream."""

    fb_max_px: float = 0.5
    width: int | None = 400
    flow_preset: str = "medium"
    refine_iterations: int = 0  # DIS variational refinement (the preset's 5 cost a third of the time, no gain measured)
    cell_px: int = 10
    refine_window: int = 11
    _dis: list = field(default_factory=list, init=False, repr=False, compare=False)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.flow_preset not in DIS_PRESETS:
            raise ConfigError(f"flow_preset must be one of {sorted(DIS_PRESETS)}, got {self.flow_preset!r}")
        if self.cell_px < 2:
            raise ConfigError(f"cell_px must be at least 2, got {self.cell_px}")
        if self.refine_window and self.refine_window < 3:
            raise ConfigError(f"refine_window must be 0 (off) or at least 3, got {self.refine_window}")
        self._dis = [cv2.DISOpticalFlow_create(DIS_PRESETS[self.flow_preset]) for _ in range(2)]
        for dis in self._dis:
            dis.setVariationalRefinementIterations(int(self.refine_iterations))

    def track(self, prev: np.ndarray, curr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Matched points ([N x 2] in prev, [N x 2] in curr, full-size pixels), grey uint8 frames of one size."""
        prev, curr = np.ascontiguousarray(prev), np.ascontiguousarray(curr)
        small_prev, small_curr, s = self.downscaled(prev, curr)
        p0, p1 = self._flow_points(small_prev, small_curr)
        p0, p1 = upscale_points(p0, s), upscale_points(p1, s)
        if s == (1.0, 1.0) or not self.refine_window or len(p0) == 0:
            return p0, p1
        lk = dict(winSize=(self.refine_window, self.refine_window), maxLevel=1, flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.01))
        q0, q1 = p0.reshape(-1, 1, 2), p1.reshape(-1, 1, 2)
        r1, st, _ = cv2.calcOpticalFlowPyrLK(prev, curr, q0, q1.copy(), **lk)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(curr, prev, r1, q0.copy(), **lk)
        ok = (st[:, 0] == 1) & (st2[:, 0] == 1) & (np.linalg.norm(back - q0, axis=2)[:, 0] < self.fb_max_px)
        return p0[ok], r1[ok, 0]

    def _flow_points(self, prev: np.ndarray, curr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dense flow both ways at this size; per cell, the strongest-gradient pixel among the consistent ones."""
        h, w = prev.shape
        c = self.cell_px
        if h < c or w < c:
            return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="dis_backward")
        backward = self._pool.submit(self._dis[1].calc, curr, prev, None)  # OpenCV releases the GIL
        fwd = self._dis[0].calc(prev, curr, None)
        bwd = backward.result()
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        x1, y1 = xs + fwd[..., 0], ys + fwd[..., 1]
        fb = fwd + cv2.remap(bwd, x1, y1, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        ok = ((fb[..., 0] ** 2 + fb[..., 1] ** 2) < self.fb_max_px ** 2) & (x1 >= 0) & (x1 <= w - 1) & \
            (y1 >= 0) & (y1 <= h - 1)
        gx = cv2.Sobel(prev, cv2.CV_32F, 1, 0)
        gy = cv2.Sobel(prev, cv2.CV_32F, 0, 1)
        score = np.where(ok, gx * gx + gy * gy, 0.0)
        hc, wc = h // c, w // c
        cells = score[:hc * c, :wc * c].reshape(hc, c, wc, c).transpose(0, 2, 1, 3).reshape(hc, wc, c * c)
        best = cells.argmax(axis=2)
        keep = np.take_along_axis(cells, best[..., None], axis=2)[..., 0] > 0
        dy, dx = np.divmod(best, c)
        rows = (np.arange(hc)[:, None] * c + dy)[keep]
        cols = (np.arange(wc)[None, :] * c + dx)[keep]
        p0 = np.stack([xs[rows, cols], ys[rows, cols]], axis=1)
        p1 = np.stack([x1[rows, cols], y1[rows, cols]], axis=1)
        return p0.astype(np.float32), p1.astype(np.float32)
