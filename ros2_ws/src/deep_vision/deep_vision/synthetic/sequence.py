"""A synthetic camera sequence: poses, intrinsics, images and ground truth.

Ground truth (exact by construction):

- camera poses, also in the KITTI convention (camera i in camera 0's frame);
- the ground-plane-induced homography between consecutive frames;
- revisit pairs: frames of different passes within a distance and heading.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.spatial import cKDTree

from deep_vision.geometry.camera import PinholeCamera
from deep_vision.geometry.homography import plane_induced_homography
from deep_vision.geometry.transforms import (
    OPTICAL_FROM_BODY,
    invert_transform,
    make_transform,
)
from deep_vision.synthetic.config import SyntheticWorldConfig
from deep_vision.synthetic.renderer import Renderer
from deep_vision.synthetic.route import ClosedRoute, VehicleTrajectory, drive
from deep_vision.synthetic.world import World, build_world

logger = logging.getLogger(__name__)

# KITTI odometry sequence 00, camera 0 (P0 of calib.txt), at 1241 x 376.
KITTI_00_FX = 718.856
KITTI_00_CX = 607.1928
KITTI_00_CY = 185.2157
KITTI_WIDTH, KITTI_HEIGHT = 1241, 376


@dataclass(frozen=True)
class Revisit:
    """A frame (query) that sees a place an earlier frame (match) saw."""

    query: int
    match: int
    distance_m: float
    heading_deg: float


def intrinsics(config: SyntheticWorldConfig) -> PinholeCamera:
    """The camera of ``config``: explicit values, else KITTI 00's scaled to the image size."""
    c = config.camera
    sx, sy = c.width / KITTI_WIDTH, c.height / KITTI_HEIGHT
    fx = c.fx if c.fx is not None else KITTI_00_FX * sx
    fy = c.fy if c.fy is not None else fx
    cx = c.cx if c.cx is not None else (KITTI_00_CX + 0.5) * sx - 0.5
    cy = c.cy if c.cy is not None else (KITTI_00_CY + 0.5) * sy - 0.5
    return PinholeCamera(c.width, c.height, fx, fy, cx, cy)


class SyntheticSequence:
    """Frames and ground truth of one synthetic drive. The world is built on first use."""

    def __init__(self, config: SyntheticWorldConfig | None = None) -> None:
        self.config = config or SyntheticWorldConfig()
        self.camera = intrinsics(self.config)
        c = self.config.camera
        # base_link (REP 103: x forward, y left, z up, on the ground) -> camera optical frame.
        self.T_base_cam = make_transform(OPTICAL_FROM_BODY.T, [c.forward_m, 0.0, c.height_m])
        self.route = ClosedRoute(self.config.route.corners, self.config.route.corner_radius_m)
        self.trajectory: VehicleTrajectory = drive(
            self.route, self.config.route, self.config.frames, c.fps, self.config.seed
        )

    def __len__(self) -> int:
        return self.config.frames

    # -- time and poses --------------------------------------------------------------------
    @cached_property
    def stamps_ns(self) -> np.ndarray:
        """[N] int64 ROS stamps of the frames."""
        start = int(round(self.config.start_time_s * 1e9))
        return start + np.round(self.trajectory.times * 1e9).astype(np.int64)

    @property
    def T_world_base(self) -> np.ndarray:
        return self.trajectory.T_world_base

    @cached_property
    def T_world_cam(self) -> np.ndarray:
        """[N x 4 x 4] camera (optical frame) poses in the world."""
        return self.T_world_base @ self.T_base_cam

    @cached_property
    def T_map_base(self) -> np.ndarray:
        """[N x 4 x 4] base_link poses in ``map``, whose origin is base_link at the first frame."""
        return invert_transform(self.T_world_base[0]) @ self.T_world_base

    @cached_property
    def kitti_poses(self) -> np.ndarray:
        """[N x 4 x 4] camera poses in the first camera's frame (KITTI odometry convention)."""
        return invert_transform(self.T_world_cam[0]) @ self.T_world_cam

    # -- ground truth -----------------------------------------------------------------------
    def ground_homography(self, i: int) -> np.ndarray:
        """Homography induced by the ground plane mapping pixels of frame i-1 into frame i."""
        if i <= 0:
            return np.eye(3)
        T_cur_prev = invert_transform(self.T_world_cam[i]) @ self.T_world_cam[i - 1]
        R_cw_prev = self.T_world_cam[i - 1][:3, :3].T
        # Ground z = 0 in the previous camera frame: nᵀX = d with n pointing down to the ground.
        normal = -R_cw_prev @ np.array([0.0, 0.0, 1.0])
        height = float(self.T_world_cam[i - 1][2, 3])
        return plane_induced_homography(self.camera.K, T_cur_prev, normal, height)

    @cached_property
    def ground_homographies(self) -> np.ndarray:
        """[N x 3 x 3]; entry i maps frame i-1 into frame i (identity for frame 0)."""
        return np.stack([self.ground_homography(i) for i in range(len(self))])

    @cached_property
    def revisits(self) -> list[Revisit]:
        """Pairs (query, match) with match earlier than query by at least ``min_separation_s``,
        camera centres within ``max_distance_m`` and headings within ``max_heading_deg``."""
        conf = self.config.revisits
        centres = self.T_world_cam[:, :2, 3]
        # Heading of the optical axis projected on the ground.
        axis = self.T_world_cam[:, :3, 2]
        heading = np.arctan2(axis[:, 1], axis[:, 0])
        times = self.trajectory.times
        pairs = cKDTree(centres).query_pairs(conf.max_distance_m, output_type="ndarray")
        out = []
        for a, b in pairs:
            q, m = (a, b) if a > b else (b, a)
            if times[q] - times[m] < conf.min_separation_s:
                continue
            dh = np.rad2deg(abs(np.angle(np.exp(1j * (heading[q] - heading[m])))))
            if dh > conf.max_heading_deg:
                continue
            out.append(Revisit(int(q), int(m), float(np.linalg.norm(centres[q] - centres[m])), float(dh)))
        return sorted(out, key=lambda r: (r.query, r.match))

    # -- images -----------------------------------------------------------------------------
    @cached_property
    def world(self) -> World:
        return build_world(self.config)

    @cached_property
    def renderer(self) -> Renderer:
        return Renderer(self.world, self.camera, self.config.scene.sensor_noise, self.config.scene.haze_distance_m)

    def image(self, i: int) -> np.ndarray:
        """Frame ``i``: [H x W] uint8 (mono8) or [H x W x 3] uint8 (rgb8). Deterministic."""
        if not 0 <= i < len(self):
            raise IndexError(f"frame {i} out of range 0..{len(self) - 1}")
        rng = np.random.default_rng([self.config.seed, 2, i])
        return self.renderer.render(self.T_world_cam[i], rng)

    def images(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.image(i)
