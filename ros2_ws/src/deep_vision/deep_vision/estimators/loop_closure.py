"""Loop-closure detection: keyframe selection, a FAISS keyframe database, geometric verification.

.. code-block:: python

    from deep_vision.estimators import LoopClosureDetector, PlaceRecognizer

    det = LoopClosureDetector(PlaceRecognizer.from_model("models/place.onnx"), exclude_recent_s=20.0)
    for image, stamp in stream:
        result = det.process(image, stamp, K=K)      # None unless the frame became a keyframe
        if result:
            for c in result.candidates:              # best first
                c.match_id, c.match_stamp_ns, c.similarity, c.verified, c.relative_pose
    det.save("maps/site")                            # reuse the map in a later run: LoopClosureDetector.load(...)

Pieces (each usable alone):

- :class:`KeyframeSelector`: a frame becomes a keyframe when at least
  ``min_interval_s`` passed since the last one and any enabled criterion fires:
  time (``interval_s``), travelled distance (``distance_m``, when positions
  are given) or appearance change (descriptor similarity to the last keyframe
  below ``max_similarity``). With no criterion enabled every frame is one.
- :class:`KeyframeGate` (``KeyframeSelector.arrival_gate()``): with the time
  criterion alone, whether a frame becomes a keyframe follows from its stamp,
  so a node or pipeline decides it on arrival and queues keyframes only: a
  slow keyframe (verification) then delays the next ones instead of filling
  the queue with frames that would be skipped anyway and pushing out the next
  keyframe.
- :class:`KeyframeDatabase`: descriptors (unit vectors) in a FAISS index,
  searched by inner product (= cosine similarity): exact
  (``IndexFlatIP``) up to ``approximate_above`` keyframes, then HNSW
  (``IndexHNSWFlat``, Malkov & Yashunin 2018; no training, incremental adds).
  Keyframe id = row = insertion order, stable within one map. Each keyframe
  keeps its stamp, session, optional GPS position, intrinsics and local
  features. Saved as ``keyframes.npz`` + ``database.json`` in a folder
  (no pickle; the HNSW graph is stored serialised so a large map need not be rebuilt).
- :class:`GeometricVerifier`: ORB or SIFT features (keypoints undistorted when
  the camera's distortion is given), Lowe's ratio test, mutual matches, then
  RANSAC: with intrinsics of both frames an essential matrix (Nistér's
  5-point, ``cv2.findEssentialMat``) and ``cv2.recoverPose`` giving the
  relative rotation and the translation *direction*, with a covariance from
  the Sampson-error information matrix; without intrinsics a fundamental
  matrix or a homography (whichever has more inliers) and no pose.
- :class:`LoopClosureDetector`: ``add`` (store a keyframe), ``query`` (top-k
  candidates among keyframes older than ``exclude_recent_s``, verified),
  ``process`` (keyframe selection + query + add: what the node calls).

Sessions and time jumps: stamps within a session must increase. A stamp
earlier than the last one seen (a bag played again, a simulator reset) starts
a new session: the database is kept (ids stay unique and increasing), the
keyframe selector restarts, and the recency window applies to the new
session's keyframes only, by their own stamps; earlier sessions (and a map
loaded from disk) are always searchable, so the replayed bag closes loops
against its first pass. A repeated stamp is skipped.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deep_vision.errors import ConfigError, DatasetError
from deep_vision.estimators.geolocation import GeoEstimate, estimate_location
from deep_vision.estimators.loop_scale import GroundView, align_ground, camera_constraint, planar_constraint
from deep_vision.estimators.place import PlaceRecognizer, to_grey
from deep_vision.estimators.two_view import fundamental_from_motion, sampson_homogeneous

logger = logging.getLogger(__name__)

DATABASE_FORMAT = 1
_NAN3 = (math.nan, math.nan, math.nan)


# ============================================================================ keyframes
@dataclass
class KeyframeSelector:
    """Decides which frames become keyframes (see the module docstring)."""

    interval_s: float = 0.5  # a keyframe at least every this many seconds (0: off)
    distance_m: float = 0.0  # ... or after travelling this far (0: off; needs positions)
    max_similarity: float = 0.0  # ... or when the similarity to the last keyframe drops below this (0: off)
    min_interval_s: float = 0.0  # never two keyframes closer in time than this

    def __post_init__(self) -> None:
        for name in ("interval_s", "distance_m", "min_interval_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"keyframe {name} must be 0 or more, got {getattr(self, name)}")
        if not -1.0 <= self.max_similarity <= 1.0:
            raise ConfigError(f"keyframe max_similarity must lie in [-1, 1], got {self.max_similarity}")
        self.reset()

    def reset(self) -> None:
        self._stamp: int | None = None
        self._position: np.ndarray | None = None
        self._descriptor: np.ndarray | None = None

    @property
    def needs_descriptor(self) -> bool:
        """True when the decision needs the frame's descriptor (appearance criterion on)."""
        return self.max_similarity > 0

    def is_keyframe(self, stamp_ns: int, position: np.ndarray | None = None,
                    descriptor: np.ndarray | None = None) -> bool:
        """Whether the frame would become a keyframe (does not change the state; see :meth:`accept`)."""
        if self._stamp is None:
            return True
        dt = (stamp_ns - self._stamp) / 1e9
        if dt <= 0 or dt < self.min_interval_s:
            return False
        enabled = False
        if self.interval_s > 0:
            enabled = True
            if dt >= self.interval_s:
                return True
        if self.distance_m > 0:
            enabled = True
            if position is not None and self._position is not None and \
                    float(np.linalg.norm(np.asarray(position, float) - self._position)) >= self.distance_m:
                return True
        if self.max_similarity > 0:
            enabled = True
            if descriptor is not None and self._descriptor is not None and \
                    float(np.dot(descriptor, self._descriptor)) < self.max_similarity:
                return True
        return not enabled

    def accept(self, stamp_ns: int, position: np.ndarray | None = None, descriptor: np.ndarray | None = None) -> None:
        """Record that the frame at ``stamp_ns`` became a keyframe."""
        self._stamp = int(stamp_ns)
        if position is not None:
            self._position = np.asarray(position, float).copy()
        if descriptor is not None:
            self._descriptor = np.asarray(descriptor, np.float32).copy()

    def arrival_gate(self) -> KeyframeGate | None:
        """A :class:`KeyframeGate` when keyframes follow from the stamps alone (time criterion only: no
        distance, no appearance); None otherwise (every frame must reach :meth:`is_keyframe`)."""
        if self.interval_s > 0 and self.distance_m == 0 and self.max_similarity == 0:
            return KeyframeGate(max(self.interval_s, self.min_interval_s))
        return None


class KeyframeGate:
    """Decides on arrival, from the stamp alone, which frames a time-only :class:`KeyframeSelector` will
    take, so that a queue in front of :meth:`LoopClosureDetector.process` holds keyframes only.

    A frame is admitted when it is the first, when its stamp is before the last admitted one (time went
    backwards: the detector starts a new session, whose first frame is a keyframe) or when at least
    ``interval_s`` passed since the last admitted one: exactly the frames the selector would take, as long
    as each admitted frame reaches the detector. When one does not (undecodable, failed), :meth:`reopen`
    admits the next arrival. Thread-safe: frames arrive on one thread and are processed on another.
    """

    def __init__(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise ConfigError(f"keyframe gate interval must be positive, got {interval_s}")
        self.interval_s = float(interval_s)
        self._stamp: int | None = None
        self._lock = threading.Lock()

    def admit(self, stamp_ns: int) -> bool:
        """Whether the frame at ``stamp_ns`` will be a keyframe (and is to be queued)."""
        stamp_ns = int(stamp_ns)
        with self._lock:
            if self._stamp is None or stamp_ns < self._stamp or (stamp_ns - self._stamp) / 1e9 >= self.interval_s:
                self._stamp = stamp_ns
                return True
            return False

    def reopen(self) -> None:
        """An admitted frame did not become a keyframe: admit the next arrival."""
        with self._lock:
            self._stamp = None


# ============================================================================ local features
def undistort_points(points: np.ndarray, K: np.ndarray, distortion: np.ndarray | None,
                     model: str = "plumb_bob") -> np.ndarray:
    """[N x 2] pixel coordinates of a distorted camera → the ideal pinhole image with the same ``K``.

    ``model``: ``plumb_bob`` / ``rational_polynomial`` (OpenCV's radial-tangential, 4–8 coefficients)
    or ``equidistant`` (fisheye, 4 coefficients), as named in ``sensor_msgs/CameraInfo``.
    """
    pts = np.asarray(points, np.float32).reshape(-1, 1, 2)
    K = np.asarray(K, np.float64).reshape(3, 3)
    d = np.zeros(0) if distortion is None else np.asarray(distortion, np.float64).ravel()
    if d.size == 0 or not np.any(d) or len(pts) == 0:
        return np.asarray(points, np.float32).reshape(-1, 2)
    if model == "equidistant":
        out = cv2.fisheye.undistortPoints(pts, K, d[:4].reshape(4, 1), P=K)
    elif model in ("plumb_bob", "rational_polynomial", "radtan", ""):
        out = cv2.undistortPoints(pts, K, d, P=K)
    else:
        raise ConfigError(f"unknown distortion model {model!r}; use plumb_bob, rational_polynomial or equidistant")
    return out.reshape(-1, 2).astype(np.float32)


@dataclass
class LocalFeatures:
    """Keypoints and descriptors of one frame, for geometric verification."""

    keypoints: np.ndarray  # [N x 2] float32 pixel coordinates (x, y)
    descriptors: np.ndarray  # [N x B] uint8 (ORB, binary) or [N x 128] float32 (SIFT)
    image_size: tuple[int, int]  # (W, H)
    ground: np.ndarray | None = None  # top view of the ground (loop_scale.GroundView), when the camera pose is known

    def __len__(self) -> int:
        return len(self.keypoints)


@dataclass
class Verification:
    """Outcome of the geometric check of a (query, match) pair."""

    verified: bool
    inliers: int
    matches: int  # putative matches after the ratio test
    model: str  # essential | fundamental | homography | none
    rotation: np.ndarray | None = None  # [3 x 3] orientation of the query camera in the match camera's frame
    translation: np.ndarray | None = None  # [3] unit direction to the query camera centre, match camera frame
    covariance: np.ndarray | None = None  # [6 x 6] over (x, y, z, rot x, rot y, rot z); see GeometricVerifier
    # With the camera's pose on the robot: T_query_match between the keyframes' base_link frames and its 6x6
    # covariance about the query base_link's axes (loop_scale); metric when the ground gave the translation,
    # else the translation is the unit direction between the cameras, in base_link axes.
    constraint: np.ndarray | None = None
    constraint_covariance: np.ndarray | None = None
    metric: bool = False
    # the RANSAC inliers ([N x 2] pixels of the query frame, [N x 2] of the match frame), essential model
    inlier_points: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def has_pose(self) -> bool:
        return self.rotation is not None


class GeometricVerifier:
    """Local-feature matching + RANSAC between a query and a keyframe (see the module docstring).

    A pair is verified with at least ``min_inliers`` RANSAC inliers forming at
    least ``min_inlier_ratio`` of the putative matches. The pose from RANSAC is
    refined on all inliers (Sampson error, Levenberg-Marquardt); its covariance
    is the 5×5 inverse information matrix of the inliers' Sampson errors
    (rotation 3 + translation direction 2), with the pixel noise taken as the
    inliers' RMS error (at least ``pixel_sigma``), mapped to
    (x, y, z, rot x, rot y, rot z); along the translation direction, whose
    length is unknown (monocular), the variance is ``scale_variance``.
    Rotations perturb on the left, about the match camera's axes.
    """

    def __init__(self, features: str = "orb", max_features: int = 1000, ratio: float = 0.8, ransac_px: float = 2.0,
                 min_inliers: int = 25, min_inlier_ratio: float = 0.25, confidence: float = 0.999,
                 pixel_sigma: float = 0.5, scale_variance: float = 1.0, patch_descriptor: Any = None,
                 patch_span: float = 1.0) -> None:
        self.patch_descriptor = None
        if features in ("orb", "learned"):
            self._detector = cv2.ORB_create(nfeatures=int(max_features), fastThreshold=10)
            self._norm = cv2.NORM_HAMMING
            if features == "learned":
                if patch_descriptor is None:
                    raise ConfigError("features 'learned' needs a patch descriptor (PatchDescriptor.from_model)")
                if not patch_span > 0:
                    raise ConfigError(f"patch_span must be positive, got {patch_span}")
                self.patch_descriptor = patch_descriptor
                self._norm = cv2.NORM_L2
        elif features == "sift":
            self._detector = cv2.SIFT_create(nfeatures=int(max_features))
            self._norm = cv2.NORM_L2
        else:
            raise ConfigError(f"unknown local features {features!r}; choose orb, sift or learned")
        # learned: ORB's keypoints (oriented FAST on a pyramid), each described by the patch network over
        # patch_span x its ORB region (KeyPoint.size: 31 pixels at its pyramid level)
        self.patch_span = float(patch_span)
        if min_inliers < 5:
            raise ConfigError(f"min_inliers must be at least 5 (the essential matrix needs 5 points), "
                              f"got {min_inliers}")
        if not 0.0 <= min_inlier_ratio <= 1.0:
            raise ConfigError(f"min_inlier_ratio must lie in [0, 1], got {min_inlier_ratio}")
        if ransac_px <= 0:
            raise ConfigError(f"ransac_px must be positive, got {ransac_px}")
        self.features = features
        self.max_features = int(max_features)
        self.ratio = float(ratio)
        self.ransac_px = float(ransac_px)
        self.min_inliers = int(min_inliers)
        self.min_inlier_ratio = float(min_inlier_ratio)
        self.confidence = float(confidence)
        # OpenCV's USAC (PROSAC sampling, early stop, local optimisation) instead of plain RANSAC: same
        # decisions on the synthetic routes, several times faster on low inlier ratios (bench/results).
        self.ransac_method = cv2.USAC_DEFAULT
        self.pixel_sigma = float(pixel_sigma)
        self.scale_variance = float(scale_variance)
        self._matcher = cv2.BFMatcher(self._norm)
        self.camera_pose: np.ndarray | None = None  # T_base_cam: constraints between base_link frames
        self.ground_view: GroundView | None = None  # metric constraints from the ground (see set_camera_pose)

    @property
    def label(self) -> str:
        """What makes two frames' local features comparable: the features, and the learned model's sha256."""
        if self.patch_descriptor is not None:
            return f"learned {str(getattr(self.patch_descriptor, 'model_id', ''))[:16]}".strip()
        return self.features

    def set_camera_pose(self, T_base_cam: np.ndarray | None, ground: bool = True) -> None:
        """The camera's pose on the robot: verified poses then carry a base_link constraint, metric from the
        ground when ``ground`` (the camera above base_link, base_link on a flat ground)."""
        self.camera_pose = None if T_base_cam is None else np.asarray(T_base_cam, float)
        self.ground_view = GroundView(self.camera_pose) if ground and self.camera_pose is not None else None

    def extract(self, image: np.ndarray, K: np.ndarray | None = None, distortion: np.ndarray | None = None,
                distortion_model: str = "plumb_bob") -> LocalFeatures:
        """Features of a grey or RGB uint8 frame.

        With intrinsics ``K`` and ``distortion`` coefficients, the keypoints are
        undistorted into the ideal pinhole image of the same ``K`` (see :func:`undistort_points`),
        so that verification needs only ``K``.
        """
        grey = to_grey(image)
        if self.patch_descriptor is not None:
            kps = self._detector.detect(grey, None)
            desc = None
            if kps:
                sizes = np.array([k.size for k in kps]) * self.patch_span / self.patch_descriptor.magnification
                desc = self.patch_descriptor.describe(grey, np.array([k.pt for k in kps]), sizes)
        else:
            kps, desc = self._detector.detectAndCompute(grey, None)
        width = 32 if self.features == "orb" else 128
        dtype = np.uint8 if self.features == "orb" else np.float32
        if desc is None or not kps:
            return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, width), dtype),
                                 (grey.shape[1], grey.shape[0]))
        pts = np.array([kp.pt for kp in kps], np.float32)
        if K is not None and distortion is not None:
            pts = undistort_points(pts, K, distortion, distortion_model)
        ground = None
        if self.ground_view is not None and K is not None:
            ground = self.ground_view.render(_undistorted(grey, K, distortion, distortion_model), K)
        return LocalFeatures(pts, np.ascontiguousarray(desc.astype(dtype)), (grey.shape[1], grey.shape[0]), ground)

    def _match(self, a: LocalFeatures, b: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
        if len(a) < 2 or len(b) < 2:
            return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
        good = [m[0] for m in self._matcher.knnMatch(a.descriptors, b.descriptors, k=2)
                if len(m) == 2 and m[0].distance < self.ratio * m[1].distance]
        # Keep matches mutual (one-to-one): several query points on one keyframe point are RANSAC noise.
        best: dict[int, Any] = {}
        for m in good:
            if m.trainIdx not in best or m.distance < best[m.trainIdx].distance:
                best[m.trainIdx] = m
        good = list(best.values())
        return (np.float32([a.keypoints[m.queryIdx] for m in good]).reshape(-1, 2),
                np.float32([b.keypoints[m.trainIdx] for m in good]).reshape(-1, 2))

    def verify(self, query: LocalFeatures, match: LocalFeatures, K_query: np.ndarray | None = None,
               K_match: np.ndarray | None = None) -> Verification:
        """Check (query, match); with both intrinsics also the relative pose (query camera in the match frame)."""
        pq, pm = self._match(query, match)
        n = len(pq)
        if n < self.min_inliers:
            return Verification(False, 0, n, "none")
        if K_query is not None and K_match is not None:
            v = self._essential(pq, pm, np.asarray(K_query, float), np.asarray(K_match, float))
            if v.has_pose and self.camera_pose is not None:
                self._constrain(v, query, match)
            return v
        return self._uncalibrated(pq, pm)

    def _constrain(self, v: Verification, query: LocalFeatures, match: LocalFeatures) -> None:
        """The base_link constraint of a verified pose: metric from the two top views of the ground when they
        align, else the essential matrix's rotation and direction."""
        X = self.camera_pose
        if self.ground_view is not None and query.ground is not None and match.ground is not None \
                and query.ground.shape == match.ground.shape:
            # The essential matrix's yaw (query base_link in the match base_link) and its standard deviation
            # start and anchor the alignment; its direction to the match camera (query base_link axes) bounds it.
            R_b = X[:3, :3] @ v.rotation @ X[:3, :3].T
            yaw_var = (X[:3, :3] @ v.covariance[3:, 3:] @ X[:3, :3].T)[2, 2]
            direction = X[:3, :3] @ (-(v.rotation.T @ v.translation))
            alignment = align_ground(query.ground, match.ground, self.ground_view,
                                     float(np.arctan2(R_b[1, 0], R_b[0, 0])), yaw_sigma=float(np.sqrt(yaw_var)),
                                     direction=direction)
            if alignment is not None:
                v.constraint, v.constraint_covariance = planar_constraint(alignment)
                v.metric = True
                return
        v.constraint, v.constraint_covariance = camera_constraint(v.rotation, v.translation, v.covariance, X)

    def _passes(self, inliers: int, matches: int) -> bool:
        return inliers >= self.min_inliers and inliers >= self.min_inlier_ratio * matches

    def _uncalibrated(self, pq: np.ndarray, pm: np.ndarray) -> Verification:
        n = len(pq)
        best_model, best = "none", 0
        F, mask = cv2.findFundamentalMat(pm, pq, cv2.FM_RANSAC, self.ransac_px, self.confidence)
        if F is not None and mask is not None and F.shape == (3, 3):
            best_model, best = "fundamental", int(mask.sum())
        H, mask = cv2.findHomography(pm, pq, cv2.RANSAC, self.ransac_px, confidence=self.confidence)
        if H is not None and mask is not None and int(mask.sum()) > best:
            best_model, best = "homography", int(mask.sum())
        return Verification(self._passes(best, n), best, n, best_model)

    def _essential(self, pq: np.ndarray, pm: np.ndarray, Kq: np.ndarray, Km: np.ndarray) -> Verification:
        n = len(pq)
        xq = cv2.undistortPoints(pq.reshape(-1, 1, 2), Kq, None).reshape(-1, 2)
        xm = cv2.undistortPoints(pm.reshape(-1, 1, 2), Km, None).reshape(-1, 2)
        focal = 0.25 * (Kq[0, 0] + Kq[1, 1] + Km[0, 0] + Km[1, 1])
        # USAC's degeneracy checks reject views with (almost) no parallax, such as the same frame seen
        # again when a bag is replayed against its saved map: plain RANSAC for those (few iterations there).
        parallax_px = float(np.median(np.linalg.norm(xq - xm, axis=1))) * focal if n else 0.0
        method = self.ransac_method if parallax_px >= 2.0 else cv2.RANSAC
        E, mask = cv2.findEssentialMat(xm, xq, np.eye(3), method=method, prob=self.confidence,
                                       threshold=self.ransac_px / focal)
        if E is None or mask is None:
            return Verification(False, 0, n, "essential")
        if E.shape != (3, 3):  # several solutions stacked: keep the first
            E = E[:3]
        mask = mask.ravel().astype(bool)
        inliers = int(mask.sum())
        if not self._passes(inliers, n):
            return Verification(False, inliers, n, "essential")
        # recoverPose picks the decomposition of E with the most points in front of both cameras:
        # X_query = R X_match + t. Its count drops points beyond 50 baselines (at infinity for it),
        # which a short-baseline revisit has many of, so the RANSAC inliers decide verification.
        points = (pq[mask], pm[mask])
        good, R, t, _ = cv2.recoverPose(E, xm[mask], xq[mask], np.eye(3))
        if int(good) < 5:
            return Verification(True, inliers, n, "essential", inlier_points=points)
        R_mq = R.T
        c = (-R.T @ t).ravel()
        c /= max(np.linalg.norm(c), 1e-12)
        R_mq, c, cov = self._refine_pose(R_mq, c, xm[mask], xq[mask], focal)
        return Verification(True, inliers, n, "essential", R_mq, c, cov, inlier_points=points)

    def _refine_pose(self, R_mq: np.ndarray, c: np.ndarray, xm: np.ndarray, xq: np.ndarray,
                     focal: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Least-squares refinement of (rotation, direction) on the inliers' Sampson errors, and its covariance.

        RANSAC's pose comes from a minimal sample; minimising the Sampson error
        of all inliers (Levenberg-Marquardt over 3 rotation + 2 direction
        parameters) makes it, and the covariance from the same Jacobian, use them all.
        Returns (R_mq, c, 6x6 covariance over (x, y, z, rot x, rot y, rot z)).
        """
        from scipy.optimize import least_squares
        from scipy.spatial.transform import Rotation

        identity = np.eye(3)  # normalised coordinates: K = I, the fundamental matrix is the essential matrix
        # Homogeneous points once: the cost below runs ~30 times per candidate (numeric Jacobians).
        xm_h, xq_h = np.c_[xm, np.ones(len(xm))], np.c_[xq, np.ones(len(xq))]

        def tangent(direction: np.ndarray) -> np.ndarray:
            a = np.array([1.0, 0.0, 0.0]) if abs(direction[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
            b1 = np.cross(direction, a)
            b1 /= np.linalg.norm(b1)
            return np.stack([b1, np.cross(direction, b1)], axis=1)  # [3 x 2]

        def pose(p: np.ndarray, R0: np.ndarray, c0: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            cc = c0 + B @ p[3:]
            return Rotation.from_rotvec(p[:3]).as_matrix() @ R0, cc / np.linalg.norm(cc)

        def sampson(R: np.ndarray, cc: np.ndarray) -> np.ndarray:
            return sampson_homogeneous(fundamental_from_motion(R, cc, identity, identity), xm_h, xq_h)

        B0 = tangent(c)
        if len(xq) >= 6:
            fit = least_squares(lambda p: sampson(*pose(p, R_mq, c, B0)), np.zeros(5), method="lm", x_scale=1e-2)
            if fit.success and np.all(np.isfinite(fit.x)):
                R_new, c_new = pose(fit.x, R_mq, c, B0)
                # Keep the refinement only when it lowers the error (LM may wander on a flat cost).
                if np.mean(sampson(R_new, c_new) ** 2) <= np.mean(sampson(R_mq, c) ** 2):
                    R_mq, c = R_new, c_new
        B = tangent(c)
        r0 = sampson(R_mq, c)
        h = 1e-6
        J = np.stack([(sampson(*pose(np.eye(5)[i] * h, R_mq, c, B)) - r0) / h for i in range(5)], axis=1)
        sigma = max(float(np.sqrt(np.mean(r0**2))) * focal, self.pixel_sigma) / focal  # normalised units
        cov5 = np.linalg.pinv(J.T @ J / sigma**2 + 1e-9 * np.eye(5))
        cov = np.zeros((6, 6))
        cov[:3, :3] = B @ cov5[3:, 3:] @ B.T + self.scale_variance * np.outer(c, c)
        cov[3:, 3:] = cov5[:3, :3]
        cov[:3, 3:] = B @ cov5[3:, :3]
        cov[3:, :3] = cov[:3, 3:].T
        return R_mq, c, 0.5 * (cov + cov.T)


def _undistorted(grey: np.ndarray, K: np.ndarray, distortion: np.ndarray | None, model: str) -> np.ndarray:
    d = np.zeros(0) if distortion is None else np.asarray(distortion, float).ravel()
    if d.size == 0 or not np.any(d):
        return grey
    K = np.asarray(K, float)
    if model == "equidistant":
        return cv2.fisheye.undistortImage(grey, K, d[:4].reshape(4, 1), Knew=K)
    return cv2.undistort(grey, K, d)


# ============================================================================ database
@dataclass
class Keyframe:
    """One keyframe of the database."""

    id: int
    stamp_ns: int
    session: int
    latitude: float = math.nan
    longitude: float = math.nan
    altitude: float = math.nan
    K: np.ndarray | None = None  # [3 x 3] intrinsics, None when unknown

    @property
    def has_gps(self) -> bool:
        return math.isfinite(self.latitude) and math.isfinite(self.longitude)


class KeyframeDatabase:
    """Keyframe descriptors in FAISS plus per-keyframe metadata (see the module docstring).

    Args:
        dim: descriptor length.
        descriptor: label of the descriptor (e.g. the model's sha256 or ``sad 64x32 patch 8``);
            a saved database refuses to be loaded for a different one.
        approximate_above: size from which the HNSW index replaces the exact one.
        hnsw_m, ef_construction, ef_search: HNSW graph degree and search breadths.
        threads: FAISS OpenMP threads (process-wide; 1 is fastest for single queries).
    """

    def __init__(self, dim: int, *, descriptor: str = "", approximate_above: int = 50_000, hnsw_m: int = 32,
                 ef_construction: int = 40, ef_search: int = 64, threads: int | None = 1) -> None:
        import faiss

        if dim < 1:
            raise ConfigError(f"descriptor dimension must be positive, got {dim}")
        if approximate_above < 1:
            raise ConfigError(f"approximate_above must be at least 1, got {approximate_above}")
        self._faiss = faiss
        if threads:
            faiss.omp_set_num_threads(int(threads))
        self.dim = int(dim)
        self.descriptor = descriptor
        self.approximate_above = int(approximate_above)
        self.hnsw_m = int(hnsw_m)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        self._desc = np.zeros((0, self.dim), np.float32)
        self._n = 0
        self._stamps: list[int] = []
        self._sessions: list[int] = []
        self._gps: list[tuple[float, float, float]] = []
        self._K: list[np.ndarray | None] = []
        self._features: list[LocalFeatures | None] = []
        self._index = faiss.IndexFlatIP(self.dim)

    def __len__(self) -> int:
        return self._n

    @property
    def index_kind(self) -> str:
        """``exact`` (IndexFlatIP) or ``hnsw``."""
        return "hnsw" if isinstance(self._index, self._faiss.IndexHNSWFlat) else "exact"

    @property
    def descriptors(self) -> np.ndarray:
        """[N x D] float32 (a view; do not modify)."""
        return self._desc[: self._n]

    @property
    def stamps_ns(self) -> np.ndarray:
        return np.asarray(self._stamps, np.int64)

    @property
    def sessions(self) -> np.ndarray:
        return np.asarray(self._sessions, np.int32)

    def keyframe(self, kf_id: int) -> Keyframe:
        if not 0 <= kf_id < self._n:
            raise IndexError(f"keyframe id {kf_id} out of range 0..{self._n - 1}")
        lat, lon, alt = self._gps[kf_id]
        return Keyframe(kf_id, self._stamps[kf_id], self._sessions[kf_id], lat, lon, alt, self._K[kf_id])

    def features(self, kf_id: int) -> LocalFeatures | None:
        return self._features[kf_id]

    # ------------------------------------------------------------------ adding
    def _append_rows(self, d: np.ndarray) -> None:
        if self._n + len(d) > len(self._desc):
            grown = np.zeros((max(2 * len(self._desc), self._n + len(d), 1024), self.dim), np.float32)
            grown[: self._n] = self._desc[: self._n]
            self._desc = grown
        self._desc[self._n : self._n + len(d)] = d
        self._n += len(d)

    def add(self, descriptor: np.ndarray, stamp_ns: int, *, session: int = 0,
            gps: tuple[float, float, float] | None = None, K: np.ndarray | None = None,
            features: LocalFeatures | None = None) -> int:
        """Store one keyframe; returns its id."""
        d = np.asarray(descriptor, np.float32).reshape(1, -1)
        if d.shape[1] != self.dim:
            raise ValueError(f"descriptor: expected length {self.dim}, got {d.shape[1]}")
        kf_id = self._n
        self._append_rows(d)
        self._stamps.append(int(stamp_ns))
        self._sessions.append(int(session))
        self._gps.append(tuple(float(v) for v in gps) if gps is not None else _NAN3)  # type: ignore[arg-type]
        self._K.append(None if K is None else np.asarray(K, float).reshape(3, 3).copy())
        self._features.append(features)
        if self.index_kind == "exact" and self._n > self.approximate_above:
            self._rebuild_hnsw()
        else:
            self._index.add(d)
        return kf_id

    def add_batch(self, descriptors: np.ndarray, stamps_ns: np.ndarray, *, session: int = 0) -> None:
        """Many keyframes without GPS, intrinsics or features at once (maps built offline, benchmarks)."""
        d = np.ascontiguousarray(descriptors, np.float32)
        if d.ndim != 2 or d.shape[1] != self.dim or len(d) != len(stamps_ns):
            raise ValueError(f"descriptors: expected [N x {self.dim}] with N stamps, got {list(d.shape)} and "
                             f"{len(stamps_ns)} stamps")
        self._append_rows(d)
        self._stamps += [int(s) for s in stamps_ns]
        self._sessions += [int(session)] * len(d)
        self._gps += [_NAN3] * len(d)
        self._K += [None] * len(d)
        self._features += [None] * len(d)
        if self.index_kind == "exact" and self._n > self.approximate_above:
            self._rebuild_hnsw()
        else:
            self._index.add(d)

    def _rebuild_hnsw(self) -> None:
        t0 = time.perf_counter()
        index = self._faiss.IndexHNSWFlat(self.dim, self.hnsw_m, self._faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        index.add(self.descriptors)
        self._index = index
        logger.info("keyframe database: %d keyframes, switched to HNSW (M=%d) in %.1f s", self._n, self.hnsw_m,
                    time.perf_counter() - t0)

    # ------------------------------------------------------------------ search
    def search(self, descriptor: np.ndarray, k: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` keyframes by inner product among ids ``[0, limit)`` (all when None).

        Returns (similarities [k'] float32, ids [k'] int64), best first, k' ≤ k.
        """
        n = self._n if limit is None else max(0, min(int(limit), self._n))
        if n == 0 or k < 1:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        q = np.ascontiguousarray(np.asarray(descriptor, np.float32).reshape(1, -1))
        if q.shape[1] != self.dim:
            raise ValueError(f"descriptor: expected length {self.dim}, got {q.shape[1]}")
        k = min(int(k), n)
        params = None
        if self.index_kind == "hnsw":
            params = self._faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
            if n < self._n:
                params.sel = self._faiss.IDSelectorRange(0, n)
        elif n < self._n:
            params = self._faiss.SearchParameters(sel=self._faiss.IDSelectorRange(0, n))
        sims, ids = self._index.search(q, k, params=params)
        keep = ids[0] >= 0
        return sims[0][keep].astype(np.float32), ids[0][keep].astype(np.int64)

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``folder/keyframes.npz`` and ``folder/database.json`` (atomically); returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        n = self._n
        K = np.full((n, 3, 3), np.nan)
        for i, k in enumerate(self._K):
            if k is not None:
                K[i] = k
        feat_counts = np.array([0 if f is None else len(f) for f in self._features], np.int64)
        has_feat = np.array([f is not None for f in self._features], bool)
        kind = next((f.descriptors.dtype for f in self._features if f is not None and len(f)), np.dtype(np.uint8))
        width = next((f.descriptors.shape[1] for f in self._features if f is not None), 32)
        kp = [f.keypoints for f in self._features if f is not None and len(f)]
        ds = [f.descriptors for f in self._features if f is not None and len(f)]
        sizes = np.array([f.image_size if f is not None else (0, 0) for f in self._features], np.int64).reshape(n, 2)
        arrays: dict[str, np.ndarray] = {
            "descriptors": self.descriptors,
            "stamps_ns": self.stamps_ns,
            "sessions": self.sessions,
            "gps": np.asarray(self._gps, np.float64).reshape(n, 3),
            "K": K,
            "feature_counts": feat_counts,
            "has_features": has_feat,
            "feature_image_sizes": sizes,
            "keypoints": np.concatenate(kp) if kp else np.zeros((0, 2), np.float32),
            "feature_descriptors": np.concatenate(ds) if ds else np.zeros((0, width), kind),
        }
        grounds = [f.ground for f in self._features if f is not None and f.ground is not None]
        shapes = {g.shape for g in grounds}
        if len(shapes) == 1:  # top views of the ground (one size per map), for metric loop closures
            shape = shapes.pop()
            arrays["has_ground"] = np.array([f is not None and f.ground is not None for f in self._features], bool)
            arrays["ground_views"] = np.stack(grounds) if grounds else np.zeros((0, *shape), np.uint8)
        if self.index_kind == "hnsw":
            arrays["hnsw_index"] = self._faiss.serialize_index(self._index)
        tmp = folder / f".keyframes.{os.getpid()}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, folder / "keyframes.npz")
        meta = {
            "format": DATABASE_FORMAT,
            "keyframes": n,
            "dim": self.dim,
            "descriptor": self.descriptor,
            "index": self.index_kind,
            "approximate_above": self.approximate_above,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "sessions": int(self.sessions.max()) + 1 if n else 0,
            "keyframes_with_gps": int(np.isfinite(arrays["gps"][:, 0]).sum()),
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **(extra or {}),
        }
        tmp_json = folder / f".database.{os.getpid()}.tmp.json"
        tmp_json.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp_json, folder / "database.json")
        return folder

    @staticmethod
    def read_metadata(folder: str | Path) -> dict[str, Any]:
        path = Path(folder) / "database.json"
        if not path.is_file():
            raise DatasetError(f"not a keyframe database (no database.json): {folder}")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON: {exc}") from exc

    @classmethod
    def load(cls, folder: str | Path, *, descriptor: str | None = None, threads: int | None = 1,
             approximate_above: int | None = None) -> "KeyframeDatabase":
        """Read a database written by :meth:`save`; with ``descriptor``, refuse one built with another."""
        folder = Path(folder)
        meta = cls.read_metadata(folder)
        if meta.get("format") != DATABASE_FORMAT:
            raise DatasetError(f"{folder}: database format {meta.get('format')!r}, this version reads "
                               f"{DATABASE_FORMAT}")
        if descriptor is not None and meta.get("descriptor") != descriptor:
            raise ConfigError(f"keyframe database {folder} holds descriptors {meta.get('descriptor')!r}, "
                              f"not {descriptor!r}: it cannot be searched with this descriptor (build a new map)")
        try:
            data = np.load(folder / "keyframes.npz", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read {folder / 'keyframes.npz'}: {exc}") from exc
        db = cls(int(meta["dim"]), descriptor=meta.get("descriptor", ""),
                 approximate_above=approximate_above or int(meta["approximate_above"]), hnsw_m=int(meta["hnsw_m"]),
                 ef_construction=int(meta["ef_construction"]), ef_search=int(meta["ef_search"]), threads=threads)
        desc = np.ascontiguousarray(data["descriptors"], np.float32)
        n = len(desc)
        if n != int(meta["keyframes"]):
            raise DatasetError(f"{folder}: database.json says {meta['keyframes']} keyframes, keyframes.npz holds {n}")
        db._desc = desc.copy()
        db._n = n
        db._stamps = [int(s) for s in data["stamps_ns"]]
        db._sessions = [int(s) for s in data["sessions"]]
        db._gps = [tuple(float(v) for v in row) for row in data["gps"]]  # type: ignore[misc]
        db._K = [None if not np.all(np.isfinite(k)) else k.copy() for k in data["K"]]
        counts, has, sizes = data["feature_counts"], data["has_features"], data["feature_image_sizes"]
        kps, fds = data["keypoints"], data["feature_descriptors"]
        offsets = np.concatenate([[0], np.cumsum(counts)])
        db._features = [LocalFeatures(kps[offsets[i]:offsets[i + 1]].copy(), fds[offsets[i]:offsets[i + 1]].copy(),
                                      (int(sizes[i][0]), int(sizes[i][1]))) if has[i] else None for i in range(n)]
        if "ground_views" in data.files:
            views = iter(data["ground_views"])
            for f, has_ground in zip(db._features, data["has_ground"]):
                if has_ground:
                    view = next(views)
                    if f is not None:
                        f.ground = view.copy()
        if "hnsw_index" in data.files and n > db.approximate_above:
            index = db._faiss.deserialize_index(np.ascontiguousarray(data["hnsw_index"]))
            if index.ntotal != n or index.d != db.dim:
                raise DatasetError(f"{folder}: stored HNSW index holds {index.ntotal}x{index.d}, expected {n}x{db.dim}")
            index.hnsw.efSearch = db.ef_search
            db._index = index
        elif n > db.approximate_above:
            db._rebuild_hnsw()
        else:
            db._index.add(db.descriptors)
        return db


# ============================================================================ detector
@dataclass
class LoopCandidate:
    """One earlier keyframe that looks like the query."""

    match_id: int
    match_stamp_ns: int
    similarity: float  # cosine similarity of the global descriptors
    match_session: int = 0  # the session (run) the match keyframe was recorded in
    verified: bool = False
    inliers: int = 0
    verification: Verification | None = None  # None when not checked

    @property
    def has_relative_pose(self) -> bool:
        return self.verification is not None and self.verification.has_pose


@dataclass
class QueryResult:
    """The outcome of :meth:`LoopClosureDetector.process` for a keyframe."""

    stamp_ns: int
    query_id: int  # keyframe id the query frame got
    session: int
    candidates: list[LoopCandidate]  # best first (descriptor similarity)
    geolocation: GeoEstimate | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def verified(self) -> list[LoopCandidate]:
        return [c for c in self.candidates if c.verified]


class LoopClosureDetector:
    """Keyframe database + retrieval + geometric verification (see the module docstring).

    Args:
        recognizer: the global descriptor.
        database: an existing (e.g. loaded) database; default: a new one for the recognizer.
        top_k: candidates per query.
        min_similarity: candidates below this cosine similarity are dropped.
        exclude_recent_s: keyframes of the current session younger than this (relative to the
            query's stamp) are not searched: they are the robot's immediate past, not a loop.
        verifier: geometric check of every candidate; None skips it (candidates unverified).
        keyframes: keyframe selection for :meth:`process`.
        store_features: keep each keyframe's local features in the database (needed to verify
            later queries against it).
        geolocate_verified_only: estimate the query's position from verified candidates only.
        approximate_above: see :class:`KeyframeDatabase`.
    """

    def __init__(self, recognizer: PlaceRecognizer, *, database: KeyframeDatabase | None = None, top_k: int = 5,
                 min_similarity: float = 0.0, exclude_recent_s: float = 20.0,
                 verifier: GeometricVerifier | None = None, keyframes: KeyframeSelector | None = None,
                 store_features: bool = True, geolocate_verified_only: bool = True,
                 approximate_above: int = 50_000, geo_cluster_radius_m: float = 25.0) -> None:
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        if exclude_recent_s < 0:
            raise ConfigError(f"exclude_recent_s must be 0 or more, got {exclude_recent_s}")
        self.recognizer = recognizer
        label = descriptor_label(recognizer)
        if database is None:
            database = KeyframeDatabase(recognizer.dim, descriptor=label, approximate_above=approximate_above)
        elif database.dim != recognizer.dim:
            raise ConfigError(f"keyframe database holds {database.dim}-d descriptors, the recognizer gives "
                              f"{recognizer.dim}-d")
        self.db = database
        self.top_k = int(top_k)
        self.min_similarity = float(min_similarity)
        self.exclude_recent_ns = int(round(exclude_recent_s * 1e9))
        self.verifier = verifier
        self.keyframes = keyframes or KeyframeSelector()
        self.store_features = bool(store_features)
        self.geolocate_verified_only = bool(geolocate_verified_only)
        self.geo_cluster_radius_m = float(geo_cluster_radius_m)
        # Earlier sessions (a loaded map) are never excluded by the recency window.
        self.session = int(self.db.sessions.max()) + 1 if len(self.db) else 0
        self._session_start = len(self.db)
        self._last_stamp: int | None = None
        self.counters: Counter[str] = Counter()

    # ------------------------------------------------------------------ sessions
    def new_session(self, reason: str = "requested") -> None:
        """Start a new session: the database stays, the recency window and keyframe selection restart."""
        if self._last_stamp is not None or len(self.db) > self._session_start:
            self.session += 1
            self.counters[f"new_session_{reason}"] += 1
        self._session_start = len(self.db)
        self._last_stamp = None
        self.keyframes.reset()

    def _check_stamp(self, stamp_ns: int) -> bool:
        """Handle time going backwards (new session); False for a repeated stamp (frame to skip)."""
        if self._last_stamp is not None:
            if stamp_ns < self._last_stamp:
                logger.warning("stamp %d ns is before the previous %d ns: new session (database kept)",
                               stamp_ns, self._last_stamp)
                self.new_session("time_backwards")
            elif stamp_ns == self._last_stamp:
                self.counters["repeated_stamp"] += 1
                return False
        self._last_stamp = int(stamp_ns)
        return True

    def searchable_limit(self, stamp_ns: int) -> int:
        """Number of keyframes (a prefix of the ids) a query at ``stamp_ns`` may match."""
        start = self._session_start
        stamps = self.db._stamps[start:]
        return start + bisect.bisect_right(stamps, int(stamp_ns) - self.exclude_recent_ns)

    # ------------------------------------------------------------------ public API
    def describe(self, image: np.ndarray) -> np.ndarray:
        return self.recognizer.describe(image)

    def add(self, image: np.ndarray | None, stamp_ns: int, *, K: np.ndarray | None = None,
            distortion: np.ndarray | None = None, distortion_model: str = "plumb_bob",
            gps: tuple[float, float, float] | None = None, descriptor: np.ndarray | None = None,
            features: LocalFeatures | None = None) -> int | None:
        """Store a frame as a keyframe; returns its id (None for a repeated stamp).

        ``gps`` is (latitude, longitude, altitude) in degrees/metres (altitude may be NaN);
        ``K`` and ``distortion`` are the camera's (``distortion_model`` as in CameraInfo).
        """
        if not self._check_stamp(stamp_ns):
            return None
        if features is None and self.store_features and self.verifier is not None and image is not None:
            features = self.verifier.extract(image, K, distortion, distortion_model)
        return self._add(image, stamp_ns, K=K, gps=gps, descriptor=descriptor, features=features)

    def _add(self, image, stamp_ns, *, K, gps, descriptor, features) -> int:
        if descriptor is None:
            if image is None:
                raise ValueError("add: give an image or a descriptor")
            descriptor = self.describe(image)
        kf_id = self.db.add(descriptor, stamp_ns, session=self.session, gps=gps, K=K,
                            features=features if self.store_features else None)
        self.keyframes.accept(stamp_ns, descriptor=descriptor)
        self.counters["keyframes"] += 1
        return kf_id

    def query(self, image: np.ndarray | None, stamp_ns: int, *, K: np.ndarray | None = None,
              distortion: np.ndarray | None = None, distortion_model: str = "plumb_bob", k: int | None = None,
              descriptor: np.ndarray | None = None, features: LocalFeatures | None = None,
              verify: bool = True) -> list[LoopCandidate]:
        """Top-k earlier keyframes (outside the recency window) that look like the frame, best first.

        Does not add the frame. With a verifier and ``verify``, every candidate is
        checked geometrically (needs the image or its ``features``, and the keyframe's features).
        """
        if descriptor is None:
            if image is None:
                raise ValueError("query: give an image or a descriptor")
            descriptor = self.describe(image)
        limit = self.searchable_limit(stamp_ns)
        sims, ids = self.db.search(descriptor, k or self.top_k, limit=limit)
        candidates = [LoopCandidate(int(i), self.db._stamps[int(i)], float(s), self.db._sessions[int(i)])
                      for s, i in zip(sims, ids) if s >= self.min_similarity]
        if verify and self.verifier is not None and candidates:
            if features is None:
                if image is None:
                    raise ValueError("query: verification needs the image or its features")
                features = self.verifier.extract(image, K, distortion, distortion_model)
            for c in candidates:
                kf_features = self.db.features(c.match_id)
                if kf_features is None:
                    continue
                v = self.verifier.verify(features, kf_features, K, self.db._K[c.match_id])
                c.verification, c.verified, c.inliers = v, v.verified, v.inliers if v.verified else 0
        self.counters["queries"] += 1
        self.counters["candidates"] += len(candidates)
        self.counters["verified"] += sum(c.verified for c in candidates)
        return candidates

    def process(self, image: np.ndarray, stamp_ns: int, *, K: np.ndarray | None = None,
                distortion: np.ndarray | None = None, distortion_model: str = "plumb_bob",
                gps: tuple[float, float, float] | None = None,
                position: np.ndarray | None = None) -> QueryResult | None:
        """One camera frame: when it becomes a keyframe, query the database, then add it.

        Returns None for frames that are not keyframes (and for repeated stamps).
        ``position`` (metres, any fixed frame, e.g. GPS in ENU) feeds the distance criterion.
        ``K``, ``distortion`` and ``distortion_model`` describe the camera (as in CameraInfo).
        """
        if not self._check_stamp(stamp_ns):
            return None
        t0 = time.perf_counter()
        descriptor = None
        if self.keyframes.needs_descriptor:
            descriptor = self.describe(image)
        if not self.keyframes.is_keyframe(stamp_ns, position, descriptor):
            return None
        if descriptor is None:
            descriptor = self.describe(image)
        t1 = time.perf_counter()
        features = self.verifier.extract(image, K, distortion, distortion_model) if self.verifier is not None else None
        t2 = time.perf_counter()
        candidates = self.query(None, stamp_ns, K=K, descriptor=descriptor, features=features)
        t3 = time.perf_counter()
        geo = self.geolocate(candidates)
        kf_id = self._add(image, stamp_ns, K=K, gps=gps, descriptor=descriptor, features=features)
        if position is not None:
            self.keyframes.accept(stamp_ns, position=position, descriptor=descriptor)
        timings = {"describe_ms": (t1 - t0) * 1e3, "features_ms": (t2 - t1) * 1e3,
                   "query_verify_ms": (t3 - t2) * 1e3, "total_ms": (time.perf_counter() - t0) * 1e3}
        return QueryResult(int(stamp_ns), kf_id, self.session, candidates, geo, timings)

    def geolocate(self, candidates: list[LoopCandidate]) -> GeoEstimate | None:
        """Position of the query from its (verified) candidates whose keyframes carry GPS."""
        used = [c for c in candidates if c.verified or not self.geolocate_verified_only]
        rows = [(kf.latitude, kf.longitude, kf.altitude, c.similarity)
                for c in used if (kf := self.db.keyframe(c.match_id)).has_gps]
        if not rows:
            return None
        lat, lon, alt, sim = (np.array(col, float) for col in zip(*rows))
        return estimate_location(lat, lon, sim, np.nan_to_num(alt), cluster_radius_m=self.geo_cluster_radius_m)

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path) -> Path:
        """Save the keyframe database (see :meth:`KeyframeDatabase.save`)."""
        extra = {"recognizer": self.recognizer.label}
        if self.verifier is not None:
            extra["local_features"] = self.verifier.label
        return self.db.save(folder, extra=extra)

    @staticmethod
    def load_database(folder: str | Path, recognizer: PlaceRecognizer, **kwargs: Any) -> KeyframeDatabase:
        """A saved database, checked to hold ``recognizer``'s descriptors."""
        return KeyframeDatabase.load(folder, descriptor=descriptor_label(recognizer), **kwargs)


def descriptor_label(recognizer: PlaceRecognizer) -> str:
    """What makes descriptors comparable: the classical descriptor's settings or the network's sha256."""
    if recognizer.descriptor != "network":
        return recognizer.label
    return (f"network {recognizer.image_size[0]}x{recognizer.image_size[1]}x{recognizer.in_channels} "
            f"sha256:{recognizer.model_id[:16] or 'unknown'}")
