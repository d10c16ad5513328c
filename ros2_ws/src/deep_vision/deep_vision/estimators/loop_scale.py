"""Metric loop-closure constraints: a verified revisit measured on the ground, in base_link frames.

A monocular loop closure (essential matrix) knows the relative rotation and
the *direction* between the two cameras, not the distance, and at revisit
baselines (a lane's width) even the direction is poor. A camera at a known
pose above a flat ground knows more: every pixel below the horizon is a known
metric point of the ground. :class:`GroundView` resamples the ground in front
of the robot into a top view (``base_link`` x forward, y left, ``resolution_m``
per pixel), stored with each keyframe. Two top views of the same place differ
by the robot's motion, in metres: :func:`align_ground` finds it (a coarse
search over the translations that agree with the essential matrix's direction,
at its yaw, then Gauss-Newton over yaw, x, y, the query's pitch and roll
against the match's ground, and a gain and offset for the lighting, coarse to
fine, with the essential matrix's yaw as a prior), dense over the road surface
where sparse features find little to match. The tilt matters: a body pitch of
0.2° moves a top-view point 13 m ahead by 0.36 m (d² tilt / h; bench/results/metric-loops-2026-12-06.md).

The covariance of (x, y, yaw, pitch, roll) is the inverse Gauss-Newton
information of the photometric residuals, scaled by their variance and by
``pixel_correlation`` (neighbouring residuals of a resampled image are not
independent), plus what the match view's own tilt against the ground, which
the alignment cannot see, moves (``tilt_sigma_rad``; chosen on a training
route, see the results file). z is the ground-vehicle model's (both keyframes
on the same flat ground), ``planar_sigma_m``. :func:`planar_constraint` turns
the result into what the message carries: ``T_query_match`` (the match
keyframe's base_link in the query keyframe's base_link, REP 103) with a 6×6
covariance about the query base_link's axes (left perturbation), ordered
x y z rx ry rz.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from deep_vision.errors import ConfigError
from deep_vision.geometry.transforms import adjoint, invert_transform, rotation_from_euler_zyx


@dataclass(frozen=True)
class GroundView:
    """The ground in front of the robot as a top view (see the module docstring).

    ``T_base_cam``: the camera's pose on the robot (base_link on the ground, z up).
    """

    T_base_cam: np.ndarray
    forward_m: tuple[float, float] = (3.0, 20.0)
    lateral_m: float = 5.0
    resolution_m: float = 0.08

    def __post_init__(self) -> None:
        T = np.asarray(self.T_base_cam, float)
        if not T[2, 3] > 0.2:
            raise ConfigError(f"the camera is {T[2, 3]:.2f} m above base_link: the ground cannot give a loop "
                              "closure's scale (base_link on the ground, the camera above it)")
        # align_ground's coarse search needs scipy.fft (about 0.5 s to import): load it with the view, at start-up,
        # not on the first alignment (in real time the VO's first frames were late and dropped)
        import scipy.fft  # noqa: F401

    @property
    def shape(self) -> tuple[int, int]:
        """(rows: lateral, left to right... y from +lateral to -lateral; columns: x forward)."""
        return (int(round(2 * self.lateral_m / self.resolution_m)),
                int(round((self.forward_m[1] - self.forward_m[0]) / self.resolution_m)))

    def ground_points(self, shape: tuple[int, int] | None = None, resolution: float | None = None) -> np.ndarray:
        """[rows x cols x 2] (x, y) metres of each top-view pixel centre."""
        res = resolution or self.resolution_m
        rows, cols = shape or self.shape
        x = self.forward_m[0] + (np.arange(cols) + 0.5) * res
        y = self.lateral_m - (np.arange(rows) + 0.5) * res
        return np.stack(np.meshgrid(x, y), axis=-1)

    def render(self, grey: np.ndarray, K: np.ndarray) -> np.ndarray:
        """The top view (uint8) of an undistorted grey frame with intrinsics ``K``; 0 where the camera does not
        see the ground."""
        T = np.asarray(self.T_base_cam, float)
        T_cb = invert_transform(T)
        rows, cols = self.shape
        res = self.resolution_m
        # top-view pixel (u, v) -> ground (x, y, 0) in base_link -> camera -> image: one homography.
        A = np.array([[res, 0.0, self.forward_m[0] + 0.5 * res], [0.0, -res, self.lateral_m - 0.5 * res],
                      [0.0, 0.0, 1.0]])
        G = np.c_[T_cb[:3, 0], T_cb[:3, 1], T_cb[:3, 3]]  # (x, y, 1) on the ground -> camera point
        H = np.asarray(K, float) @ G @ A
        top = cv2.warpPerspective(grey, H, (cols, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        # Pixels behind the camera or off the image stay 0; keep 0 as "unseen" (a real 0 becomes 1).
        inside = cv2.warpPerspective(np.ones_like(grey), H, (cols, rows),
                                     flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderValue=0)
        depth = (G @ A @ np.stack([*np.meshgrid(np.arange(cols), np.arange(rows)), np.ones((rows, cols))],
                                  axis=0).reshape(3, -1))[2].reshape(rows, cols)
        return np.where((inside > 0) & (depth > 0.1), np.maximum(top, 1), 0).astype(np.uint8)


@dataclass
class GroundAlignment:
    theta: float  # yaw of the query base_link in the match base_link (rad)
    t: np.ndarray  # query base_link origin in the match base_link frame (x, y metres)
    covariance: np.ndarray  # [5 x 5] over (x, y, yaw, pitch, roll)
    pitch: float  # the query's tilt against the match's ground plane (rad, REP 103: pitch nose down, roll
    roll: float  # left side up), from the distortion it gives the top view
    correlation: float  # normalised cross-correlation of the aligned views
    pixels: int  # pixels seen in both


def _rot2(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _sample(img: np.ndarray, pts_m: np.ndarray, view: GroundView, res: float) -> np.ndarray:
    """Bilinear samples of a top view at ground points (metres; NaN outside)."""
    u = (pts_m[..., 0] - view.forward_m[0]) / res - 0.5
    v = (view.lateral_m - pts_m[..., 1]) / res - 0.5
    return cv2.remap(img, u.astype(np.float32), v.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)


def _pyramid(top: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """(float image with NaN where unseen, downsampled by ``factor`` with area averaging of seen pixels)."""
    seen = (top > 0).astype(np.float32)
    img = top.astype(np.float32)
    if factor > 1:
        size = (top.shape[1] // factor, top.shape[0] // factor)
        s = cv2.resize(seen, size, interpolation=cv2.INTER_AREA)
        img = cv2.resize(img * seen, size, interpolation=cv2.INTER_AREA) / np.maximum(s, 1e-6)
        seen = (s > 0.99).astype(np.float32)
    img = cv2.GaussianBlur(img, (3, 3), 0.8)
    return np.where(seen > 0, img, np.nan).astype(np.float32), seen


def align_ground(query: np.ndarray, match: np.ndarray, view: GroundView, theta0: float, *,
                 search_m: float = 12.0, pixel_correlation: float = 4.0, tilt_sigma_rad: float = 0.003,
                 tilt_prior_rad: float = 0.03, min_correlation: float = 0.5, min_overlap: float = 0.15,
                 yaw_sigma: float | None = None, direction: np.ndarray | None = None,
                 cone_deg: float = 20.0, free_radius_m: float = 1.5,
                 max_points: int | None = None) -> GroundAlignment | None:
    """The pose of the query keyframe's base_link in the match keyframe's (see the module docstring).

    ``query``, ``match``: top views (:meth:`GroundView.render`); ``theta0``: the yaw from the essential matrix,
    with ``yaw_sigma`` (rad) its prior's standard deviation (None: no prior); ``direction``: the essential
    matrix's unit direction from the query camera to the match camera (query base_link axes), which the
    translation must agree with (:func:`_cone`); ``tilt_prior_rad``: the prior on the relative pitch and roll;
    ``tilt_sigma_rad``: the match view's own tilt, which the alignment cannot see (added to the covariance);
    ``max_points``: at most about this many of the query's seen cells per level (every k-th: a camera that sees
    the whole view then costs about what one that sees a part of it does), their residuals counted as k times less
    correlated. None when the views do not overlap enough, do not correlate after alignment or disagree with
    ``direction``.
    """
    h = float(view.T_base_cam[2, 3])
    x = np.array([float(theta0), 0.0, 0.0, 0.0, 0.0])  # yaw, x, y, query pitch, query roll (against the match)
    prior_mean = x.copy()
    prior_sigma = np.array([yaw_sigma if yaw_sigma is not None else np.inf, np.inf, np.inf,
                            tilt_prior_rad, tilt_prior_rad])
    best = None
    allowed = None
    if direction is not None:
        allowed = _cone(view, float(theta0), direction, cone_deg, free_radius_m)
    for factor in (4, 2, 1):
        res = view.resolution_m * factor
        q, _ = _pyramid(query, factor)
        m = _Level(_pyramid(match, factor)[0])
        pts = view.ground_points(q.shape, res)
        qv = np.isfinite(q)
        if qv.sum() < 50:
            return None
        if factor == 4:  # coarse: every translation within search_m at this resolution
            t = _search(q, m.image, pts, qv, view, res, x[0], search_m, allowed, min_overlap)
            if t is None:
                return None
            x[1:3] = t
        ql = _QueryLevel(q, pts, h, max_points)
        corr_px = pixel_correlation / ql.stride  # every k-th cell: neighbouring residuals k cells apart
        for _ in range(8 if factor > 1 else 15):
            step = _gauss_newton(ql, m, view, res, x, prior_mean, prior_sigma, corr_px)
            if step is None:
                return None
            delta, fit = step
            x = x + delta
            best = fit
            # converged: a step under 1/50 of a cell (0.6 mm at the VO's 3 cm; the lengths' error is centimetres)
            # and 8e-5 rad of yaw. 1/200 at full resolution moved no length by over 0.07 % and took a third more
            # steps there (bench/results/topview-speed-2026-12-07/)
            if abs(delta[0]) < 8e-5 and np.linalg.norm(delta[1:3]) < 0.02 * res:
                break
    query_f = q  # the last level is the full resolution
    step = _gauss_newton(ql, m, view, res, x, prior_mean, prior_sigma, corr_px)
    if step is None:
        return None
    _, best = step
    JtJ, sigma2, corr, n = best
    if n < min_overlap * len(ql.values) or corr < min_correlation:
        return None
    theta, t = float(x[0]), x[1:3].copy()
    if allowed is not None and not allowed(t[None])[0]:
        return None  # refined away from the essential matrix's direction
    cov = np.linalg.inv(JtJ + 1e-12 * np.eye(len(JtJ)))[:5, :5] * sigma2 * corr_px
    order = [1, 2, 0, 3, 4]  # (yaw, x, y, pitch, roll) -> (x, y, yaw, pitch, roll)
    cov = cov[np.ix_(order, order)]
    # The query's tilt against the match's is estimated; the match's own tilt against the ground (suspension,
    # slopes) distorts both views alike and is not: a ground point at distance d moves by about d² tilt / h, and
    # roll shears x by y·tilt·x/h (a yaw of about x·tilt/h). Added to the photometric fit's covariance.
    pts = view.ground_points()[np.isfinite(query_f)]
    bias_m = float(np.mean(np.sum(pts**2, axis=1))) * tilt_sigma_rad / h
    bias_rad = float(np.mean(pts[:, 0])) * tilt_sigma_rad / h
    cov += np.diag([bias_m**2, bias_m**2, bias_rad**2, tilt_sigma_rad**2, tilt_sigma_rad**2])
    return GroundAlignment(theta, t, cov, float(x[3]), float(x[4]), corr, n)


def _cone(view: GroundView, theta: float, direction: np.ndarray, cone_deg: float, free_radius_m: float):
    """Translations t (query base_link origin in the match base_link, [.. x 2]) that agree with the essential
    matrix's ``direction`` (unit, from the query camera to the match camera, query base_link axes): within
    ``cone_deg`` of it in the plane, or the two cameras within ``free_radius_m`` (too close for a direction)."""
    d = np.asarray(direction, float)[:2]
    d = d / max(float(np.linalg.norm(d)), 1e-12)
    c = np.asarray(view.T_base_cam, float)[:2, 3]  # the camera's lever arm in the plane
    R = _rot2(theta)
    cos_min = np.cos(np.radians(cone_deg))

    def allowed(t: np.ndarray) -> np.ndarray:
        disp = (c - R @ c - t) @ R  # query camera -> match camera, query base_link axes: Rᵀ (c - R c - t)
        norm = np.linalg.norm(disp, axis=-1)
        return (norm < free_radius_m) | (disp @ d >= cos_min * norm)

    return allowed


def _search(q, m, pts, qv, view, res, theta, search_m, allowed=None, min_overlap=0.3) -> np.ndarray | None:
    """The translation (x, y) with the highest zero-mean normalised correlation over a grid of ±search_m.

    The match view is resampled once, rotated by ``theta``, over the query's grid grown by ``search_m``; then
    every shift's masked correlation comes from six correlations (over the overlap: the count and the sums of q,
    q², m, m², qm), whose six images are each Fourier-transformed once.
    """
    from scipy import fft

    n = int(round(search_m / res))
    R = _rot2(theta)
    rows, cols = q.shape
    # grid u = p_q + s for shifts s of whole cells; the match is seen at R u (= R p_q + t with t = R s)
    grid = view.ground_points((rows + 2 * n, cols + 2 * n), res) + np.array([-n * res, n * res])
    big = _sample(m, grid @ R.T, view, res)
    bm = np.isfinite(big).astype(np.float64)
    b = np.nan_to_num(big).astype(np.float64)
    w = qv.astype(np.float64)
    a = np.where(qv, q, 0.0).astype(np.float64)

    # "valid" correlations of the grown match-side images with the query-side ones, each image transformed once
    shape = [fft.next_fast_len(bs + qs - 1, real=True) for bs, qs in zip(b.shape, a.shape)]
    valid = tuple(slice(qs - 1, bs) for bs, qs in zip(b.shape, a.shape))
    big_side = [fft.rfft2(x, shape) for x in (bm, b, b * b)]
    query_side = [fft.rfft2(x[::-1, ::-1], shape) for x in (w, a, a * a)]

    def corr(i, j):
        return fft.irfft2(big_side[i] * query_side[j], shape)[valid]

    count = corr(0, 0)
    sa, saa = corr(0, 1), corr(0, 2)
    sb, sbb = corr(1, 0), corr(2, 0)
    sab = corr(1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = sab - sa * sb / count
        var = (saa - sa**2 / count) * (sbb - sb**2 / count)
        score = cov / np.sqrt(np.maximum(var, 1e-12))
    score[(count < min_overlap * w.sum()) | ~np.isfinite(score)] = -np.inf
    if allowed is not None:  # t = R s of every shift s
        shifts = grid[: score.shape[0], : score.shape[1]] - pts[0, 0]
        score[~allowed(shifts @ R.T)] = -np.inf
    if not np.isfinite(score).any():
        return None
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    # offset (i, j) puts the query's first cell on big's cell (i, j): s = big's grid point there - query's
    s_shift = grid[i, j] - pts[0, 0]
    return R @ s_shift


class _Level:
    """A match view at one pyramid level with what every Gauss-Newton step samples from it: the image, its
    gradients and where they are valid, stacked so that one remap samples all four."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        filled = np.nan_to_num(image)
        gx = cv2.Sobel(filled, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(filled, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        # gradients next to unseen pixels mix in the zero fill: keep pixels whose 3x3 neighbourhood is seen
        seen = cv2.erode(np.isfinite(image).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
        self.stack = cv2.merge([image, gx, gy, seen])


class _QueryLevel:
    """A query view at one pyramid level: its seen pixels' values, ground points and tilt derivatives."""

    def __init__(self, q: np.ndarray, pts: np.ndarray, h: float, max_points: int | None = None) -> None:
        self.valid = np.isfinite(q)
        seen = int(self.valid.sum())
        self.stride = 1 if not max_points or seen <= max_points else -(-seen // int(max_points))
        if self.stride > 1:  # every k-th seen cell, row by row
            keep = np.zeros(q.size, dtype=bool)
            keep[np.flatnonzero(self.valid)[::self.stride]] = True
            self.valid = keep.reshape(q.shape)
        self.values = q[self.valid]
        # the seen cells' ground points and their derivatives, one contiguous array per coordinate
        self.px, self.py = (np.ascontiguousarray(c) for c in pts[self.valid].T)
        px, py = self.px, self.py
        self.Dp = (-(px**2 + h**2) / h, -px * py / h)  # d p' / d pitch (nose down): (x, y)
        self.Dr = (px * py / h, (py**2 + h**2) / h)  # d p' / d roll


def _sample_points(stack: np.ndarray, u: np.ndarray, v: np.ndarray, width: int = 16384) -> np.ndarray:
    """[n x channels]: ``stack`` bilinearly sampled at the n points (u, v) (pixels; NaN outside). cv2.remap takes
    maps under 32767 columns: the points go in rows of ``width`` (a view seen whole at 3 cm has 44,589)."""
    n = len(u)
    rows, cols = max(1, -(-n // width)), min(n, width)
    pad = rows * cols - n
    if pad:
        grid = [np.concatenate([a, np.full(pad, -1.0, np.float32)]).reshape(rows, cols) for a in (u, v)]
    else:
        grid = [a.reshape(rows, cols) for a in (u, v)]
    out = cv2.remap(stack, grid[0], grid[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                    borderValue=(np.nan,) * 4)
    return out.reshape(rows * cols, -1)[:n]


def _gauss_newton(ql: _QueryLevel, m: _Level, view, res, x, prior_mean, prior_sigma, pixel_correlation):
    """One Gauss-Newton step over x = (yaw, tx, ty, pitch, roll) and a gain and offset: residual
    gain * match(R p' + t) + offset - query(p), where p' is the ground point the query's top-view pixel p shows
    when the query camera is tilted by (pitch, roll) against the match's. Gaussian priors (``prior_mean``,
    ``prior_sigma``; inf: none, 0: held) in the residuals' units."""
    theta, t, tp, tr = x[0], x[1:3], x[3], x[4]
    R = _rot2(theta)
    px = ql.px + tp * ql.Dp[0] + tr * ql.Dr[0]  # p', the ground point the query pixel shows when tilted
    py = ql.py + tp * ql.Dp[1] + tr * ql.Dr[1]
    u = ((R[0, 0] * px + R[0, 1] * py + (t[0] - view.forward_m[0])) / res - 0.5).astype(np.float32)
    v = ((view.lateral_m - t[1] - (R[1, 0] * px + R[1, 1] * py)) / res - 0.5).astype(np.float32)
    s, gx, gy, seen = _sample_points(m.stack, u, v).T
    # d/dx (forward); d/dy (left: image rows grow to the right)
    ok = np.flatnonzero(np.isfinite(s) & np.isfinite(gx) & np.isfinite(gy) & (seen > 0.99))
    n = len(ok)
    if n < 50:
        return None
    sv, qv_, gxv, gyv = s[ok], ql.values[ok], gx[ok] / res, -gy[ok] / res
    # least squares for gain and offset first (at the current pose): the 2x2 normal equations
    s1, s2, q1, sq = sv.sum(), sv @ sv, qv_.sum(), sv @ qv_
    det = n * s2 - s1 * s1
    if not det > 1e-9 * n * s2:
        return None  # a flat match view: nothing to align
    gain, offset = (n * sq - s1 * q1) / det, (s2 * q1 - s1 * sq) / det
    r = gain * sv + offset - qv_
    # d residual / d parameter, for a displacement d (query ground frame) of the sample point: gain grad·(R d)
    gR0 = gain * (gxv * R[0, 0] + gyv * R[1, 0])  # gain grad^T R, per pixel
    gR1 = gain * (gxv * R[0, 1] + gyv * R[1, 1])
    J = np.empty((n, 7))
    J[:, 0] = gR1 * px[ok] - gR0 * py[ok]  # d(R p')/dθ = R [-y, x]
    J[:, 1] = gain * gxv
    J[:, 2] = gain * gyv
    J[:, 3] = gR0 * ql.Dp[0][ok] + gR1 * ql.Dp[1][ok]
    J[:, 4] = gR0 * ql.Dr[0][ok] + gR1 * ql.Dr[1][ok]
    J[:, 5] = sv
    J[:, 6] = 1.0
    JtJ = J.T @ J
    g = J.T @ r
    sigma2 = float(r @ r) / max(n - 7, 1)
    w = np.zeros(7)
    with np.errstate(divide="ignore"):
        w[:5] = np.where(np.isinf(prior_sigma), 0.0, sigma2 * pixel_correlation / np.maximum(prior_sigma, 1e-12)**2)
    JtJ = JtJ + np.diag(w)
    g = g.copy()
    g[:5] += w[:5] * (x - prior_mean)
    try:
        delta = -np.linalg.solve(JtJ + 1e-9 * np.eye(7), g)
    except np.linalg.LinAlgError:
        return None
    a, b = qv_ - qv_.mean(), sv - sv.mean()
    corr = float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9)
    return delta[:5], (JtJ, sigma2, corr, n)


def planar_constraint(alignment: GroundAlignment, planar_sigma_m: float = 0.015) -> tuple[np.ndarray, np.ndarray]:
    """(T_query_match, 6×6 covariance about the query base_link's axes, x y z rx ry rz) of a ground alignment.

    The alignment gives T_match_query: (x, y) on the ground, the yaw, and the query's pitch and roll against
    the match's ground plane; its covariance is carried to the inverse by a numerical Jacobian of the left
    perturbation; z gets the ground-vehicle model's ``planar_sigma_m`` (both keyframes on the same flat ground).
    """

    def T_qm(x: float, y: float, th: float, pitch: float, roll: float) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = rotation_from_euler_zyx([th, pitch, roll])
        T[:2, 3] = (x, y)
        return invert_transform(T)

    p0 = np.array([alignment.t[0], alignment.t[1], alignment.theta, alignment.pitch, alignment.roll])
    T0 = T_qm(*p0)
    J = np.zeros((6, 5))
    h = 1e-6
    for i in range(5):
        d = T_qm(*(p0 + h * np.eye(5)[i])) @ invert_transform(T0)  # left perturbation, small
        J[:3, i] = d[:3, 3] / h
        J[3:, i] = np.array([d[2, 1] - d[1, 2], d[0, 2] - d[2, 0], d[1, 0] - d[0, 1]]) / (2 * h)
    cov = J @ alignment.covariance @ J.T
    cov[2, 2] += planar_sigma_m**2
    return T0, 0.5 * (cov + cov.T)


def camera_constraint(R_mq: np.ndarray, c_mq: np.ndarray, cov_mq: np.ndarray,
                      T_base_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The essential matrix's pose in base_link frames, without scale: the rotation of the match keyframe's
    base_link in the query's, and as translation the unit direction from the query camera to the match camera
    in the query base_link's axes. ``R_mq``, ``c_mq``: the query camera's orientation and unit direction in the
    match camera's frame; ``cov_mq``: their covariance (left perturbation, match camera axes), carried by
    -Ad(X T⁻¹) with T = (R_mq, c_mq) and X = T_base_cam (its translation part describes the direction's
    uncertainty only roughly: the distance is unknown)."""
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R_mq, c_mq
    X = np.asarray(T_base_cam, float)
    T_qm = invert_transform(T)
    A = adjoint(X @ T_qm)
    cov = A @ np.asarray(cov_mq, float) @ A.T
    out = X @ T_qm @ invert_transform(X)
    direction = X[:3, :3] @ T_qm[:3, 3]
    out[:3, 3] = direction / max(float(np.linalg.norm(direction)), 1e-12)
    return out, 0.5 * (cov + cov.T)
