"""Metric scale for monocular VO from the ground plane and the camera's known height.

Two-view geometry gives the step's translation only up to scale. A camera at a
known height above a flat ground (a car's camera: KITTI's is 1.65 m up) can
measure it: triangulate the step's inlier correspondences with a unit-length
translation, fit the ground plane among the points below the horizon, and the
plane's distance from the camera, ``h`` (in units of the step), gives the
step's length as ``height_m / h`` metres. This is the classical scale recovery
of monocular driving VO (e.g. Kitt et al., IROS 2011; Song & Chandraker,
CVPR 2014), here on the hybrid mode's dense-flow inliers.

The plane is found by RANSAC over triplets of points (a fixed number of
hypotheses, vectorised, seeded: the same frames give the same result): a
hypothesis must tilt at most ``max_tilt_deg`` from the expected ground (the
camera's ``up`` axis, from its mounting), and its inliers lie within
``inlier_tol`` × its distance of it. The best plane is refitted to its inliers
by least squares. No estimate (``None``) when too few points lie below the
horizon, or the plane has fewer than ``min_inliers`` inliers: the caller falls
back to another scale source.

With ``max_lateral_m`` > 0 the plane is first fitted to the candidates at most
that far to the side of the camera where their rays meet the ground (a ray's
sideways component over its downward one is x / height, so the test needs no
scale): the road around the vehicle, not the verges, kerbs, pavements and
parked cars beside it. Where those leave no plane, all candidates are used. On
the KITTI training ranges a 4 m bound cut the per-frame length error (KITTI 03
frames 0-549: 6.5 -> 5.6 % RMS) and the drift, but not on the held-out
sequences, so it is off by default
(``bench/results/vo-ground-lateral-2026-12-07/``).

With ``topview`` (:class:`GroundTopView`) the length is also measured a second way, by aligning top views of
the road a few metres ahead in the two frames (the loop closures' photometric ground alignment,
:func:`~deep_vision.estimators.loop_scale.align_ground`, with the step's yaw as its prior): about as accurate per
frame, but its errors are nearly independent from one frame to the next, where the triangulated plane's persist
over several frames (the same road points stay in view) and so drift. Where the two agree within a factor
``exp(gate)`` the step length is their geometric mean; otherwise the plane's alone
(``bench/results/vo-topview-2026-12-07/``).

Assumes what the method needs: the ground near the vehicle is roughly planar
and visible in the lower image, and the camera's height above it is known and
stays about the same (a car's pitch and bounce change it by a few
centimetres). A robot whose camera sees no floor, or whose height changes,
needs another source (``VisualOdometry(scale_source="external")``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from deep_vision.errors import ConfigError
from deep_vision.estimators.loop_scale import GroundView, align_ground
from deep_vision.estimators.two_view import triangulate
from deep_vision.geometry.transforms import invert_transform


@dataclass
class GroundEstimate:
    scale_m: float  # metres per unit of translation: the step's length for a unit-length step
    height: float  # the plane's distance from the previous camera, in units of the step
    inliers: int  # points on the plane
    candidates: int  # triangulated points below the horizon
    normal: np.ndarray | None = None  # the plane's unit normal in the previous camera's frame, pointing down


@dataclass
class GroundTopView:
    """The step length from aligning the two frames' top views of the road (see the module docstring).

    ``T_base_cam``: the camera's pose on the robot (base_link on the ground); ``forward_m``, ``lateral_m``,
    ``resolution_m``: the top view (the road from 3 to 8 m ahead, 4 m to either side, 3 cm cells, chosen on
    the training ranges); ``gate``: the largest |log| ratio of the two lengths that are averaged.

    ``pitch_frames`` > 0: the view is levelled to the road the car drives on rather than drawn from the mounting
    alone. A car pitches on its suspension (braking, accelerating: a degree or so over seconds) and a mounting's
    pitch is rarely known to a degree; a top view drawn with the wrong pitch reads distances ahead wrong by several
    per cent per degree, for as long as the pitch lasts, which drifts. The step's direction of travel, measured
    by the two-view geometry, runs along the road: its angle above the mounting's forward axis is the camera's
    pitch against the road. The view is drawn with the mounting turned by the median of that angle over the last
    ``pitch_frames`` steps (steps more than ``max_pitch_deg`` off are left out). With ``pitch_reference_frames``
    > 0, by that median less the median over the last ``pitch_reference_frames`` steps: only the change of pitch
    (braking, accelerating) is corrected and the mounting's mean pitch kept, so that a bias of the estimated
    direction cannot move the metric scale. ``pitch_deadband_deg``: the angle moved that much towards 0 (0 where
    smaller), so that a camera that does not pitch keeps its mounting rather than the estimate's noise (the
    rendered worlds' direction of travel, smoothed, varies by 0.03-0.04 degrees; KITTI's by 0.3-0.5). None is on by
    default: held out, the levelling lowered the drift on KITTI but lost on a rendered route
    (``bench/results/vo-topview-pitch-2026-12-07/``); with the dead band the rendered routes held, but KITTI 03's
    metric scale got worse (``bench/results/vo-topview-pitch-deadband-2026-12-07/``)."""

    T_base_cam: np.ndarray
    forward_m: tuple[float, float] = (3.0, 8.0)
    lateral_m: float = 4.0
    resolution_m: float = 0.03
    gate: float = 0.2
    search_m: float = 3.0  # the coarse search's reach: a step of up to 3 m (30 m/s at 10 Hz)
    yaw_sigma: float = 0.002  # the two-view step's yaw as the alignment's prior (rad)
    # the alignment uses at most about this many seen cells: KITTI's cameras see 15,753 (00) and 18,690 (03) of the
    # view's 44,589 (first frames), a 640 x 480 camera 62 degrees high 41,011, which unbounded took about twice as long
    max_points: int = 20000
    pitch_frames: int = 0  # level the view to the median pitch of the last N steps' direction of travel (0: off)
    pitch_reference_frames: int = 0  # less the median pitch of the last M steps (0: the absolute pitch)
    pitch_deadband_deg: float = 0.0  # levelling angles within this of 0 are 0, larger ones moved towards 0 by it
    max_pitch_deg: float = 10.0  # a step whose direction is further above or below the mounting's is left out
    view: GroundView = field(init=False, repr=False)
    _last: tuple | None = field(default=None, init=False, repr=False)  # (grey, K, mounting, its view)
    _pitches: deque = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.T_base_cam = np.asarray(self.T_base_cam, np.float64)
        if not self.gate > 0:
            raise ConfigError(f"ground top view: gate must be positive, got {self.gate}")
        if not 0 < self.resolution_m <= 0.5:
            raise ConfigError(f"ground top view: the cell must be in (0, 0.5] m, got {self.resolution_m}")
        if not self.T_base_cam[2, 3] > 0.2:
            raise ConfigError(f"ground top view: the camera is {self.T_base_cam[2, 3]:.2f} m above the ground; a top "
                              "view of the road needs it higher than 0.2 m")
        for name in ("pitch_frames", "pitch_reference_frames"):
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and value >= 0):
                raise ConfigError(f"ground top view: {name} must be a whole number >= 0, got {value}")
        if not (np.isfinite(self.pitch_deadband_deg) and 0 <= self.pitch_deadband_deg < self.max_pitch_deg):
            raise ConfigError(f"ground top view: pitch_deadband_deg must be in [0, {self.max_pitch_deg:g}), got "
                              f"{self.pitch_deadband_deg}")
        self.view = GroundView(self.T_base_cam, forward_m=tuple(self.forward_m), lateral_m=self.lateral_m,
                               resolution_m=self.resolution_m)
        self._pitches = deque(maxlen=max(int(self.pitch_frames), int(self.pitch_reference_frames), 1))

    def mounting(self, t_pc: np.ndarray | None = None) -> np.ndarray:
        """The mounting the views are drawn with: ``T_base_cam``, or with ``pitch_frames`` turned about its
        sideways axis to the median pitch of the recent steps' direction of travel (less the longer median with
        ``pitch_reference_frames``), this step's (the current camera's unit direction in the previous one's frame,
        either sign) included."""
        if not self.pitch_frames:
            return self.T_base_cam
        fwd, side, up = self.T_base_cam[:3, :3]  # the base's axes in the camera frame
        if t_pc is not None:
            t = np.asarray(t_pc, np.float64).reshape(3)
            along = float(t @ fwd)
            if np.isfinite(t).all() and abs(along) > 0.5 * np.linalg.norm(t):  # mostly forward or backward
                a = float(np.arctan(float(t @ up) / along))
                if abs(a) <= np.radians(self.max_pitch_deg):
                    self._pitches.append(a)
        if not self._pitches:
            return self.T_base_cam
        recent = list(self._pitches)
        a = float(np.median(recent[-self.pitch_frames:]))
        if self.pitch_reference_frames:
            a -= float(np.median(recent[-self.pitch_reference_frames:]))
        a = float(np.sign(a)) * max(abs(a) - np.radians(self.pitch_deadband_deg), 0.0)
        if a == 0.0:
            return self.T_base_cam
        X = self.T_base_cam.copy()
        X[:3, :3] = np.stack([np.cos(a) * fwd + np.sin(a) * up, side, np.cos(a) * up - np.sin(a) * fwd])
        return X

    def length(self, R_pc: np.ndarray, K: np.ndarray, prev_grey: np.ndarray, grey: np.ndarray,
               t_pc: np.ndarray | None = None) -> float | None:
        """The camera's step length (m) between two grey frames whose rotation is ``R_pc`` (and unit direction
        ``t_pc``: with ``pitch_frames``, it levels the views); None where the views do not align."""
        X = self.mounting(t_pc)
        view = self.view if X is self.T_base_cam else replace(self.view, T_base_cam=X)
        R_base = X[:3, :3] @ np.asarray(R_pc, np.float64) @ X[:3, :3].T
        last = self._last
        prev_top = last[3] if last is not None and last[0] is prev_grey and np.array_equal(last[1], K) and \
            np.array_equal(last[2], X) else view.render(prev_grey, K)  # the previous current frame: not again
        top = view.render(grey, K)
        self._last = (grey, np.array(K, dtype=np.float64), X, top)
        a = align_ground(top, prev_top, view, float(np.arctan2(R_base[1, 0], R_base[0, 0])),
                         search_m=self.search_m, yaw_sigma=self.yaw_sigma, max_points=self.max_points)
        if a is None:
            return None
        T = np.eye(4)  # the current base_link in the previous one, then the cameras on it
        c, s = np.cos(a.theta), np.sin(a.theta)
        T[:2, :2], T[:2, 3] = [[c, -s], [s, c]], a.t
        return float(np.linalg.norm((invert_transform(X) @ T @ X)[:3, 3]))

    def fused(self, plane_m: float, topview_m: float | None) -> float:
        """The geometric mean of the two lengths where they agree within ``exp(gate)``, else the plane's."""
        if topview_m is None or not topview_m > 0 or abs(np.log(topview_m / plane_m)) >= self.gate:
            return plane_m
        return float(np.sqrt(plane_m * topview_m))


@dataclass
class GroundPlaneScale:
    """Step length from the ground plane (see the module docstring).

    ``height_m``: the camera centre's height above the ground; ``up``: the
    world's up direction in the camera frame (optical frame, x right, y down,
    z forward: a level camera has up = (0, -1, 0)).
    """

    height_m: float = 1.65
    up: tuple[float, float, float] | np.ndarray = (0.0, -1.0, 0.0)
    min_below_deg: float = 6.0  # only rays at least this far below the horizon are ground candidates
    max_tilt_deg: float = 5.0  # plane normal within this angle of up (odometry_node: ground_max_tilt_deg)
    inlier_tol: float = 0.04  # point-to-plane distance for an inlier, fraction of the plane's distance
    min_inliers: int = 15
    iterations: int = 200
    seed: int = 0
    max_lateral_m: float = 0.0  # fit first to the ground this close to the side (0: no bound; ground_max_lateral_m)
    topview: GroundTopView | None = None  # fuse the top views' length (odometry_node: ground_topview)
    _up: np.ndarray = field(init=False, repr=False)
    _right: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.height_m > 0:
            raise ConfigError(f"ground plane scale: camera height must be positive, got {self.height_m} m")
        up = np.asarray(self.up, dtype=np.float64).reshape(3)
        if not np.isfinite(up).all() or np.linalg.norm(up) < 1e-9:
            raise ConfigError(f"ground plane scale: up must be a non-zero 3-vector, got {self.up}")
        if not 0 < self.inlier_tol < 1:
            raise ConfigError(f"ground plane scale: inlier_tol must be in (0, 1), got {self.inlier_tol}")
        if self.min_inliers < 3 or self.iterations < 1:
            raise ConfigError("ground plane scale: min_inliers must be at least 3 and iterations at least 1")
        if not self.max_lateral_m >= 0:
            raise ConfigError(f"ground plane scale: max_lateral_m must be 0 (no bound) or positive, got "
                              f"{self.max_lateral_m}")
        self._up = up / np.linalg.norm(up)
        down = -self._up
        forward = np.array([0.0, 0.0, 1.0]) - down * down[2]  # the optical axis along the ground
        if np.linalg.norm(forward) < 1e-6:  # looking straight down: sideways is the image's x axis
            self._right = np.array([1.0, 0.0, 0.0]) - down * down[0]
        else:
            self._right = np.cross(down, forward)
        self._right /= np.linalg.norm(self._right)

    @classmethod
    def from_extrinsic(cls, T_base_cam: np.ndarray, height_m: float | None = None, topview_cell_m: float = 0.0,
                       topview_pitch_frames: int = 0, topview_pitch_reference_frames: int = 0,
                       topview_pitch_deadband_deg: float = 0.0, **kwargs) -> GroundPlaneScale:
        """From the camera's pose on the robot (``T_base_cam``, base_link z up): up = the base's z axis in the
        camera frame; the height is the camera's z above base_link (base_link on the ground, as the default
        camera_pose assumes) unless ``height_m`` > 0 is given. ``topview_cell_m`` > 0: fuse the top views' length
        (:class:`GroundTopView` at that height, cells of that many metres, levelled over ``topview_pitch_frames``
        steps less ``topview_pitch_reference_frames``, with a dead band of ``topview_pitch_deadband_deg``; 0: no top
        views)."""
        T = np.asarray(T_base_cam, dtype=np.float64)
        h = float(T[2, 3]) if height_m is None or height_m <= 0 else float(height_m)
        ground = cls(height_m=h, up=T[:3, :3].T @ np.array([0.0, 0.0, 1.0]), **kwargs)  # checks the height first
        if topview_cell_m:
            T_top = T.copy()
            T_top[2, 3] = h
            ground.topview = GroundTopView(T_top, resolution_m=float(topview_cell_m),
                                           pitch_frames=int(topview_pitch_frames),
                                           pitch_reference_frames=int(topview_pitch_reference_frames),
                                           pitch_deadband_deg=float(topview_pitch_deadband_deg))
        return ground

    def estimate(self, R_pc: np.ndarray, t_pc: np.ndarray, K: np.ndarray, p0: np.ndarray,
                 p1: np.ndarray, images: tuple[np.ndarray, np.ndarray] | None = None) -> GroundEstimate | None:
        """Scale of the step (R_pc, unit t_pc: the current camera in the previous one's frame) from the
        correspondences ``p0`` → ``p1`` (the step's inliers, pixels, [N x 2]); with ``topview`` and ``images``
        (the previous and the current grey frame, undistorted), fused with the top views' length."""
        found = self._plane(R_pc, t_pc, K, p0, p1)
        if found is None or self.topview is None or images is None:
            return found
        top = self.topview.length(R_pc, K, *images, t_pc=t_pc)
        return replace(found, scale_m=self.topview.fused(found.scale_m, top))

    def _plane(self, R_pc: np.ndarray, t_pc: np.ndarray, K: np.ndarray, p0: np.ndarray,
               p1: np.ndarray) -> GroundEstimate | None:
        if p0 is None or len(p0) < self.min_inliers:
            return None
        R_pc, t_pc = np.asarray(R_pc, np.float64), np.asarray(t_pc, np.float64).reshape(3)
        n_t = np.linalg.norm(t_pc)
        if n_t < 1e-12:
            return None
        t_pc = t_pc / n_t
        down = -self._up
        rays = np.c_[np.asarray(p0, np.float64), np.ones(len(p0))] @ np.linalg.inv(K).T
        below = rays @ down > np.sin(np.radians(self.min_below_deg)) * np.linalg.norm(rays, axis=1)
        if below.sum() < self.min_inliers:
            return None
        if self.max_lateral_m > 0:
            near = below & (np.abs(rays @ self._right) < self.max_lateral_m / self.height_m * (rays @ down))
            if near.sum() >= self.min_inliers and near.sum() < below.sum():
                found = self._fit(R_pc, t_pc, K, p0, p1, near)
                if found is not None:
                    return found
        return self._fit(R_pc, t_pc, K, p0, p1, below)

    def _fit(self, R_pc: np.ndarray, t_pc: np.ndarray, K: np.ndarray, p0: np.ndarray, p1: np.ndarray,
             candidates: np.ndarray) -> GroundEstimate | None:
        """The plane among the ``candidates`` (mask of the correspondences), triangulated with the unit step."""
        down = -self._up
        R_cp, t_cp = R_pc.T, -R_pc.T @ t_pc
        X = triangulate(R_pc, t_pc, K, np.asarray(p0, np.float64)[candidates], np.asarray(p1, np.float64)[candidates])
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(X).all(axis=1) & (X[:, 2] > 0) & ((X @ R_cp.T + t_cp)[:, 2] > 0) & (X @ down > 0)
        X = X[ok]
        if len(X) < self.min_inliers:
            return None
        plane = self._ransac(X, down)
        if plane is None:
            return None
        dist, inliers, normal = plane
        return GroundEstimate(self.height_m / dist, dist, inliers, len(X), normal)

    def _ransac(self, X: np.ndarray, down: np.ndarray) -> tuple[float, int, np.ndarray] | None:
        """(the plane's distance from the camera, its inlier count, its unit normal towards the plane) or None."""
        rng = np.random.default_rng(self.seed)
        idx = np.argsort(rng.random((self.iterations, len(X))), axis=1)[:, :3]
        a, b, c = X[idx[:, 0]], X[idx[:, 1]], X[idx[:, 2]]
        normals = np.cross(b - a, c - a)
        norms = np.linalg.norm(normals, axis=1)
        good = norms > 1e-12
        normals[good] /= norms[good, None]
        normals *= np.sign(normals @ down)[:, None]
        dist = np.einsum("ij,ij->i", normals, a)
        good &= (normals @ down >= np.cos(np.radians(self.max_tilt_deg))) & (dist > 0)
        if not good.any():
            return None
        normals, dist = normals[good], dist[good]
        counts = (np.abs(X @ normals.T - dist) < self.inlier_tol * dist).sum(axis=0)
        best = int(np.argmax(counts))
        normal, d = normals[best], dist[best]
        for _ in range(2):  # least-squares refit on the inliers, then once more on the refit's inliers
            inliers = np.abs(X @ normal - d) < self.inlier_tol * d
            if inliers.sum() < self.min_inliers:
                return None
            centre = X[inliers].mean(axis=0)
            normal = np.linalg.svd(X[inliers] - centre)[2][2]
            normal *= np.sign(normal @ down) or 1.0
            d = float(normal @ centre)
            if d <= 0 or normal @ down < np.cos(np.radians(self.max_tilt_deg)):
                return None
        inliers = int((np.abs(X @ normal - d) < self.inlier_tol * d).sum())
        return (d, inliers, normal) if inliers >= self.min_inliers else None
