"""A closed driving route: a polygon with rounded corners, driven lap after lap.

The centre line is made of straight segments and circular arcs (exact, so the
heading is smooth); each lap is driven at its own lateral offset, changed
smoothly over ``offset_ramp_m``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deep_vision.errors import ConfigError
from deep_vision.synthetic.config import RouteConfig


@dataclass(frozen=True)
class _Piece:
    kind: str  # "line" or "arc"
    s0: float  # arc length at the start of the piece
    length: float
    start: np.ndarray  # line: start point; arc: centre
    direction: np.ndarray  # line: unit direction; arc: unused
    radius: float = 0.0
    angle0: float = 0.0  # arc: angle of the start point around the centre
    sign: float = 1.0  # arc: +1 left turn (counter-clockwise), -1 right turn


def _left(d: np.ndarray) -> np.ndarray:
    return np.array([-d[1], d[0]])


class ClosedRoute:
    """Centre line of a closed route, parametrised by arc length ``s`` (wraps around)."""

    def __init__(self, corners: list[list[float]], radius: float) -> None:
        P = np.asarray(corners, dtype=np.float64)
        n = len(P)
        fillets = []
        for i in range(n):
            d_in = P[i] - P[i - 1]
            d_out = P[(i + 1) % n] - P[i]
            d_in /= np.linalg.norm(d_in)
            d_out /= np.linalg.norm(d_out)
            turn = float(np.arctan2(d_in[0] * d_out[1] - d_in[1] * d_out[0], d_in @ d_out))
            tangent = radius * np.tan(abs(turn) / 2)
            a = P[i] - d_in * tangent
            b = P[i] + d_out * tangent
            sign = 1.0 if turn >= 0 else -1.0
            centre = a + sign * radius * _left(d_in)
            fillets.append((a, b, centre, turn, sign, tangent))
        pieces: list[_Piece] = []
        s = 0.0
        for i in range(n):
            # Straight from the end of fillet i to the start of fillet i+1, then fillet i+1.
            _, b, _, _, _, tan_i = fillets[i]
            a_next, _, centre, turn, sign, tan_next = fillets[(i + 1) % n]
            edge = np.linalg.norm(P[(i + 1) % n] - P[i])
            if tan_i + tan_next > edge + 1e-9:
                raise ConfigError(f"route.corner_radius_m={radius} is too large for the edge of length {edge:.1f} m")
            seg = a_next - b
            length = float(np.linalg.norm(seg))
            if length > 1e-9:
                pieces.append(_Piece("line", s, length, b, seg / length))
                s += length
            arc_len = radius * abs(turn)
            if arc_len > 1e-9:
                angle0 = float(np.arctan2(*(a_next - centre)[::-1]))
                pieces.append(_Piece("arc", s, arc_len, centre, np.zeros(2), radius, angle0, sign))
                s += arc_len
        self.pieces = pieces
        self.length = s
        self._starts = np.array([p.s0 for p in pieces])

    def centre(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centre-line points [N x 2] and unit tangents [N x 2] at arc lengths ``s`` [N]."""
        s = np.mod(np.asarray(s, dtype=np.float64), self.length)
        idx = np.clip(np.searchsorted(self._starts, s, side="right") - 1, 0, len(self.pieces) - 1)
        points = np.zeros((len(s), 2))
        tangents = np.zeros((len(s), 2))
        for k, piece in enumerate(self.pieces):
            m = idx == k
            if not m.any():
                continue
            u = s[m] - piece.s0
            if piece.kind == "line":
                points[m] = piece.start + u[:, None] * piece.direction
                tangents[m] = piece.direction
            else:
                ang = piece.angle0 + piece.sign * u / piece.radius
                radial = np.stack([np.cos(ang), np.sin(ang)], axis=1)
                points[m] = piece.start + piece.radius * radial
                tangents[m] = piece.sign * np.stack([-radial[:, 1], radial[:, 0]], axis=1)
        return points, tangents


@dataclass
class VehicleTrajectory:
    """Sampled base_link poses in the world frame."""

    times: np.ndarray  # [N] seconds since the first frame
    T_world_base: np.ndarray  # [N x 4 x 4]
    distance: np.ndarray  # [N] distance driven along the centre line (m)
    lap: np.ndarray  # [N] lap index of each frame


def _lateral_offset(distance: np.ndarray, route_length: float, conf: RouteConfig) -> np.ndarray:
    offsets = np.asarray(conf.lap_offsets_m, dtype=np.float64)
    distance = np.maximum(distance, 0.0)  # before the start counts as lap 0
    lap = np.floor(distance / route_length).astype(int)
    into = distance - lap * route_length
    current = offsets[lap % len(offsets)]
    previous = offsets[(lap - 1) % len(offsets)]
    previous = np.where(lap == 0, current, previous)
    w = np.clip(into / max(conf.offset_ramp_m, 1e-9), 0.0, 1.0)
    w = 0.5 - 0.5 * np.cos(np.pi * w)  # smooth lane change
    return previous + (current - previous) * w


def drive(route: ClosedRoute, conf: RouteConfig, frames: int, fps: float, seed: int) -> VehicleTrajectory:
    """base_link poses of ``frames`` frames driven at ``conf.speed_mps`` around ``route`` (swinging by
    ``conf.speed_change_mps`` over ``conf.speed_period_s``)."""
    rng = np.random.default_rng([seed, 7])
    times = np.arange(frames) / fps
    w = 2 * np.pi / conf.speed_period_s
    distance = conf.speed_mps * times + conf.speed_change_mps / w * (1 - np.cos(w * times))

    def planar(d: np.ndarray) -> np.ndarray:
        centre, tangent = route.centre(d)
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
        return centre + _lateral_offset(d, route.length, conf)[:, None] * normal

    xy = planar(distance)
    h = 1e-3
    forward = planar(distance + h) - planar(distance - h)
    yaw = np.arctan2(forward[:, 1], forward[:, 0])

    # Suspension: sums of two sinusoids per axis with seeded phases (smooth, deterministic).
    def wobble(amplitude: float) -> np.ndarray:
        f = rng.uniform(0.3, 1.2, 2)
        phase = rng.uniform(0, 2 * np.pi, 2)
        return amplitude * 0.5 * (np.sin(2 * np.pi * f[0] * times + phase[0]) + np.sin(2 * np.pi * f[1] * times + phase[1]))

    pitch = np.deg2rad(wobble(conf.pitch_amplitude_deg))
    roll = np.deg2rad(wobble(conf.roll_amplitude_deg))
    z = wobble(conf.bounce_m)

    from scipy.spatial.transform import Rotation

    R = Rotation.from_euler("ZYX", np.stack([yaw, pitch, roll], axis=1)).as_matrix()
    T = np.tile(np.eye(4), (frames, 1, 1))
    T[:, :3, :3] = R
    T[:, 0, 3] = xy[:, 0]
    T[:, 1, 3] = xy[:, 1]
    T[:, 2, 3] = z
    lap = np.floor(distance / route.length).astype(int)
    return VehicleTrajectory(times=times, T_world_base=T, distance=distance, lap=lap)


def vary_route(route: RouteConfig, rng: np.random.Generator) -> None:
    """Give ``route`` a geometry of its own, in place: a rectangle of 70-160 x 45-90 m with each corner moved by
    up to 12 m, corner radius 8-25 m (drawn again until every rounded corner fits its edges).

    The default route turns at one radius (10 m): at a given speed every turn has the same rate. Varied routes
    spread the turn rates (1-11 degrees per frame at 5-15 m/s and 10 Hz) for training and for evaluating VO.
    """
    for _ in range(100):
        w, h = rng.uniform(70.0, 160.0), rng.uniform(45.0, 90.0)
        corners = np.array([[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]]) + rng.uniform(-12.0, 12.0, (4, 2))
        radius = float(rng.uniform(8.0, 25.0))
        try:
            ClosedRoute(corners.tolist(), radius)
        except ConfigError:
            continue
        route.corners, route.corner_radius_m = corners.round(2).tolist(), radius
        return
    raise ConfigError("no route whose rounded corners fit its edges in 100 draws")
