"""Windowed refinement of monocular VO: a sliding-window factor graph over the last frames (GTSAM). A probe, not
shipped: see bench/results/vo-window-refinement-2026-12-07/README.md (used by experiments/vo_sliding_window.py).

Each frame's two-view step (rotation, unit direction and a length from the ground plane or the carried speed)
enters as a between-pose factor whose length is a prior of the step's stated uncertainty (Huber). Corners tracked
over several frames (Lucas-Kanade, forward-backward checked, at most ``width`` pixels wide) are triangulated
(midpoint of the first and last rays, not from the newest frame, whose pose is only the VO's guess) and enter as
landmarks with robust projection factors: a point seen from three or more frames ties the lengths of the steps
between them to each other, while the ground-plane priors of all the window's frames set their metres. Tracks
off by more than ``outlier_px`` in the solution are dropped for good and the window solved once more.

The oldest frame of the window is held where the last solution put it; the newest frame's solved pose is the
refined live estimate (a fixed-lag smoother).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from deep_vision.errors import ConfigError

#: Lucas-Kanade settings for the window's tracks (at the tracking resolution).
LK_PARAMS = dict(winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))


def _gtsam():
    try:
        import gtsam
    except ImportError as exc:  # pragma: no cover - gtsam is a pinned requirement
        raise ConfigError("the windowed refinement needs GTSAM: pip install gtsam") from exc
    return gtsam


@dataclass
class WindowRefiner:
    """Sliding-window refinement of VO steps (see the module docstring).

    ``K``: the full-resolution intrinsics; ``frames``: the window's length; ``width``: tracking resolution;
    ``rotation_sigma_deg`` / ``direction_sigma_deg``: the two-view step's rotation and direction noise.
    """

    K: np.ndarray
    frames: int = 10
    width: int = 400
    max_tracks: int = 300
    min_distance_px: int = 8  # between corners, at the tracking resolution
    fb_max_px: float = 0.5  # forward-backward tracking error allowed (tracking resolution)
    pixel_sigma: float = 1.0  # reprojection noise, pixels at the tracking resolution
    outlier_px: float = 2.0  # a track off by more than this in a view of the solution is dropped
    min_parallax_deg: float = 1.0  # a track's first and last rays in the window must meet at this angle
    rotation_sigma_deg: float = 0.1
    direction_sigma_deg: float = 1.0
    min_length_sigma_m: float = 0.01  # floor of a step's length noise (a step standing still)
    iterations: int = 5
    kernel: str = "huber"
    _g: object = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.frames < 3:
            raise ConfigError(f"the window needs at least 3 frames, got {self.frames}")
        if self.width < 64:
            raise ConfigError(f"windowed refinement: tracking width must be at least 64 pixels, got {self.width}")
        self._g = _gtsam()
        self.K = np.asarray(self.K, np.float64)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the window and the tracks: the next frame starts a new trajectory at the identity."""
        self._ids: deque[int] = deque()
        self._poses: dict[int, np.ndarray] = {}
        self._steps: dict[int, tuple[np.ndarray, float]] = {}  # frame id -> (T_prev_curr, relative length sigma)
        self._obs: dict[int, list[tuple[int, float, float]]] = {}  # track id -> [(frame id, u, v)]
        self._pts = np.zeros((0, 2), np.float32)  # active tracks' positions in the last frame
        self._track_ids = np.zeros(0, np.int64)
        self._small: np.ndarray | None = None
        self._next_frame = 0
        self._next_track = 0
        self._cal = None

    def _calibration(self, scale: tuple[float, float]):
        """Intrinsics at the tracking resolution (cv2.resize maps pixel centres i + 0.5 → (i + 0.5)·s)."""
        if self._cal is None:
            sx, sy = scale
            K = self.K
            self._cal = self._g.Cal3_S2(K[0, 0] * sx, K[1, 1] * sy, 0.0, (K[0, 2] + 0.5) * sx - 0.5,
                                        (K[1, 2] + 0.5) * sy - 0.5)
        return self._cal

    # ------------------------------------------------------------------ tracks
    def _track(self, grey: np.ndarray, frame_id: int) -> tuple[float, float]:
        h, w = grey.shape[:2]
        if w > self.width:
            size = (int(self.width), max(8, round(h * self.width / w)))
            small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
            scale = (size[0] / w, size[1] / h)
        else:
            small, scale = grey, (1.0, 1.0)
        if self._small is not None and len(self._pts):
            p0 = self._pts.reshape(-1, 1, 2)
            p1, st, _ = cv2.calcOpticalFlowPyrLK(self._small, small, p0, None, **LK_PARAMS)
            back, st2, _ = cv2.calcOpticalFlowPyrLK(small, self._small, p1, None, **LK_PARAMS)
            ok = (st[:, 0] == 1) & (st2[:, 0] == 1) & (np.linalg.norm(back - p0, axis=2)[:, 0] < self.fb_max_px)
            ok &= (p1[:, 0, 0] >= 0) & (p1[:, 0, 1] >= 0) & (p1[:, 0, 0] < small.shape[1] - 1) & \
                (p1[:, 0, 1] < small.shape[0] - 1)
            self._pts, self._track_ids = p1[ok, 0], self._track_ids[ok]
            for tid, (u, v) in zip(self._track_ids.tolist(), self._pts.tolist()):
                self._obs[tid].append((frame_id, u, v))
        else:
            self._pts, self._track_ids = np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
        need = self.max_tracks - len(self._pts)
        if need > self.max_tracks // 5:
            mask = np.full(small.shape[:2], 255, np.uint8)
            for u, v in self._pts.astype(int).tolist():
                cv2.circle(mask, (u, v), self.min_distance_px, 0, -1)
            new = cv2.goodFeaturesToTrack(small, need, 0.01, self.min_distance_px, mask=mask, blockSize=7)
            if new is not None:
                new = new[:, 0].astype(np.float32)
                ids = np.arange(self._next_track, self._next_track + len(new))
                self._next_track += len(new)
                for tid, (u, v) in zip(ids.tolist(), new.tolist()):
                    self._obs[tid] = [(frame_id, u, v)]
                self._pts = np.concatenate([self._pts, new])
                self._track_ids = np.concatenate([self._track_ids, ids])
        self._small = small
        return scale

    # ------------------------------------------------------------------ main
    def add(self, grey: np.ndarray, T_step: np.ndarray | None, length_rel_sigma: float = 0.08) -> np.ndarray:
        """Add a frame (grey uint8, full resolution) and the VO's step from the previous frame to it (``None`` on the
        first frame), its length known to ``length_rel_sigma`` (relative); returns the frame's refined pose
        [4 x 4] in the first frame's coordinates."""
        frame_id = self._next_frame
        self._next_frame += 1
        scale = self._track(grey, frame_id)
        if not self._ids or T_step is None:
            if self._ids:  # a frame without a step: start over from here
                self.reset()
                return self.add(grey, None)
            self._ids.append(frame_id)
            self._poses[frame_id] = np.eye(4)
            return np.eye(4)
        T_step = np.asarray(T_step, np.float64)
        prev = self._ids[-1]
        self._ids.append(frame_id)
        self._poses[frame_id] = self._poses[prev] @ T_step
        self._steps[frame_id] = (T_step, float(length_rel_sigma))
        while len(self._ids) > self.frames:
            old = self._ids.popleft()
            self._poses.pop(old, None)
            self._steps.pop(old, None)
        self._prune(self._ids[0])
        self._solve(scale)
        return self._poses[frame_id].copy()

    def _prune(self, first: int) -> None:
        """Drop observations older than the window, and tracks with none left."""
        for tid in list(self._obs):
            obs = self._obs[tid]
            if obs[0][0] < first:
                obs = [o for o in obs if o[0] >= first]
                if obs:
                    self._obs[tid] = obs
                else:
                    del self._obs[tid]

    def _step_noise(self, T_step: np.ndarray, rel_sigma: float):
        """Between-factor noise (GTSAM's tangent order: rotation, translation in the newer frame): the length along
        the step's direction, ``direction_sigma_deg`` across it."""
        g = self._g
        t = T_step[:3, 3]
        length = float(np.linalg.norm(t))
        cov = np.zeros((6, 6))
        cov[:3, :3] = np.eye(3) * np.radians(self.rotation_sigma_deg) ** 2
        s_len = max(rel_sigma * length, self.min_length_sigma_m)
        s_perp = max(length * np.tan(np.radians(self.direction_sigma_deg)), self.min_length_sigma_m)
        if length > 1e-9:
            u = T_step[:3, :3].T @ (t / length)
            cov[3:, 3:] = s_len**2 * np.outer(u, u) + s_perp**2 * (np.eye(3) - np.outer(u, u))
        else:
            cov[3:, 3:] = np.eye(3) * s_len**2
        gauss = g.noiseModel.Gaussian.Covariance(cov)
        return g.noiseModel.Robust.Create(g.noiseModel.mEstimator.Huber.Create(1.345), gauss)

    def _landmarks(self, scale: tuple[float, float]) -> list[tuple[int, np.ndarray, list[tuple[int, float, float]]]]:
        """(track id, world point, its observations in the window) of each track seen from at least three of the
        window's frames whose rays from its first and last view meet at ``min_parallax_deg`` or more in front of both
        (midpoint triangulation with the current poses; not from the newest frame, whose pose is only the VO's
        step)."""
        cal = self._calibration(scale)
        Kinv = np.linalg.inv(cal.K())
        window = set(self._ids)
        tids, tracks = [], []
        for tid, obs in self._obs.items():
            obs = [o for o in obs if o[0] in window]
            if len(obs) >= 3:
                tids.append(tid)
                tracks.append(obs)
        if not tracks:
            return []
        newest = self._ids[-1]
        first = np.array([obs[0] for obs in tracks])
        last = np.array([obs[-2] if obs[-1][0] == newest else obs[-1] for obs in tracks])  # the newest pose is a guess
        Ta = np.stack([self._poses[int(i)] for i in first[:, 0]])
        Tb = np.stack([self._poses[int(i)] for i in last[:, 0]])
        da = np.einsum("nij,nj->ni", Ta[:, :3, :3], np.c_[first[:, 1:], np.ones(len(first))] @ Kinv.T)
        db = np.einsum("nij,nj->ni", Tb[:, :3, :3], np.c_[last[:, 1:], np.ones(len(last))] @ Kinv.T)
        da /= np.linalg.norm(da, axis=1, keepdims=True)
        db /= np.linalg.norm(db, axis=1, keepdims=True)
        ca, cb = Ta[:, :3, 3], Tb[:, :3, 3]
        # closest points of the two rays: ca + s·da ≈ cb + u·db
        w = ca - cb
        b = np.einsum("ni,ni->n", da, db)
        d, e = np.einsum("ni,ni->n", da, w), np.einsum("ni,ni->n", db, w)
        den = 1 - b * b
        with np.errstate(divide="ignore", invalid="ignore"):
            s_ = (b * e - d) / den
            u_ = (e - b * d) / den
        X = 0.5 * (ca + s_[:, None] * da + cb + u_[:, None] * db)
        ok = (b < np.cos(np.radians(self.min_parallax_deg))) & (s_ > 0) & (u_ > 0) & np.isfinite(X).all(axis=1)
        return [(tids[i], X[i], tracks[i]) for i in np.flatnonzero(ok)]

    def _solve(self, scale: tuple[float, float]) -> None:
        """Solve the window; tracks whose reprojection error exceeds ``outlier_px`` in any view of the solution are
        dropped (for good: a slipping or occluded track stays wrong) and the window solved once more."""
        landmarks = self._landmarks(scale)
        result = self._optimise(scale, landmarks)
        if result is None:
            return
        poses, points = result
        bad = self._outliers(scale, poses, points, landmarks)
        if bad:
            for tid in bad:
                self._obs.pop(tid, None)
            keep = ~np.isin(self._track_ids, list(bad))
            self._pts, self._track_ids = self._pts[keep], self._track_ids[keep]
            landmarks = [lm for lm in landmarks if lm[0] not in bad]
            result = self._optimise(scale, landmarks) or result
            poses = result[0]
        self._poses.update(poses)

    def _optimise(self, scale, landmarks):
        """({frame id: pose}, [landmark points]) of the window's least-squares solution, or None."""
        g = self._g
        graph, values = g.NonlinearFactorGraph(), g.Values()
        x = lambda i: g.symbol("x", i)  # noqa: E731
        for i in self._ids:
            values.insert(x(i), g.Pose3(self._poses[i]))
        first = self._ids[0]
        graph.add(g.PriorFactorPose3(x(first), g.Pose3(self._poses[first]), g.noiseModel.Isotropic.Sigma(6, 1e-6)))
        for i in list(self._ids)[1:]:
            T, rel = self._steps[i]
            graph.add(g.BetweenFactorPose3(x(i - 1), x(i), g.Pose3(T), self._step_noise(T, rel)))
        cal = self._calibration(scale)
        kernel = {"huber": lambda: g.noiseModel.mEstimator.Huber.Create(1.345),
                  "cauchy": lambda: g.noiseModel.mEstimator.Cauchy.Create(1.0),
                  "tukey": lambda: g.noiseModel.mEstimator.Tukey.Create(3.0)}[self.kernel]()
        pixel = g.noiseModel.Robust.Create(kernel, g.noiseModel.Isotropic.Sigma(2, self.pixel_sigma))
        for j, (_, X, obs) in enumerate(landmarks):
            key = g.symbol("l", j)
            values.insert(key, g.Point3(X))
            for fid, u, v in obs:
                graph.add(g.GenericProjectionFactorCal3_S2(g.Point2(u, v), pixel, x(fid), key, cal))
        lm = g.LevenbergMarquardtParams()
        lm.setMaxIterations(self.iterations)
        try:
            result = g.LevenbergMarquardtOptimizer(graph, values, lm).optimize()
        except RuntimeError:  # an indeterminate system: keep the steps as they were
            return None
        return ({i: result.atPose3(x(i)).matrix() for i in self._ids},
                [result.atPoint3(g.symbol("l", j)) for j in range(len(landmarks))])

    def _outliers(self, scale, poses, points, landmarks) -> set[int]:
        """Track ids whose reprojection error in the solution exceeds ``outlier_px`` in some view."""
        if not landmarks:
            return set()
        K = self._calibration(scale).K()
        tids, Xs, fids, uvs = [], [], [], []
        for (tid, _, obs), X in zip(landmarks, points):
            for fid, u, v in obs:
                tids.append(tid)
                Xs.append(X)
                fids.append(fid)
                uvs.append((u, v))
        T = np.stack([poses[f] for f in fids])
        Xc = np.einsum("nji,nj->ni", T[:, :3, :3], np.asarray(Xs) - T[:, :3, 3])
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (Xc @ K.T)[:, :2] / Xc[:, 2:3]
            err = np.linalg.norm(uv - np.asarray(uvs), axis=1)
        bad = ~(err <= self.outlier_px) | (Xc[:, 2] <= 0)
        return set(np.asarray(tids)[bad].tolist())
