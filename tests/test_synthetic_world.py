"""Synthetic world: geometry agrees with the ground truth, revisits are real, renders are deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_world_config

from deep_vision.config import from_dict
from deep_vision.errors import ConfigError
from deep_vision.geometry import apply_homography, invert_transform, transform_points
from deep_vision.synthetic import SyntheticSequence, SyntheticWorldConfig


@pytest.fixture(scope="module")
def default_route() -> SyntheticSequence:
    """The default 600-frame route (poses only: nothing is rendered)."""
    return SyntheticSequence(SyntheticWorldConfig())


def test_default_route_is_closed_and_loops_twice(default_route):
    seq = default_route
    assert len(seq) == 600
    assert seq.camera.width == 1241 and seq.camera.height == 376
    assert seq.trajectory.distance[-1] >= 2 * seq.route.length, "the default route must drive at least two loops"
    # Closed: the centre line's end meets its start.
    (p0, p_end), _ = seq.route.centre(np.array([0.0, seq.route.length - 1e-9]))
    np.testing.assert_allclose(p0, p_end, atol=1e-6)
    # Lap 1 is driven in the same direction with a small lateral offset from lap 0.
    lap = seq.trajectory.lap
    assert set(np.unique(lap)) >= {0, 1, 2}
    offsets = seq.config.route.lap_offsets_m
    assert offsets[0] != offsets[1] and abs(offsets[1] - offsets[0]) <= 2.0


def test_motion_is_smooth_and_kitti_like(default_route):
    seq = default_route
    step = np.linalg.norm(np.diff(seq.T_world_cam[:, :3, 3], axis=0), axis=1)
    assert np.all((step > 0.8) & (step < 1.2)), "about 1 m per frame at 10 Hz"
    rel = invert_transform(seq.T_world_cam[:-1]) @ seq.T_world_cam[1:]
    angle = np.rad2deg(np.linalg.norm(
        np.array([np.arccos(np.clip((np.trace(r[:3, :3]) - 1) / 2, -1, 1)) for r in rel])[:, None], axis=1))
    assert angle.max() < 8.0


def test_a_route_whose_speed_swings():
    """speed_change_mps: the speed follows speed_mps + change x sin(2 pi t / period), speeding up first; the route
    and its laps are the default's."""
    steady = SyntheticSequence(SyntheticWorldConfig(frames=300))
    swing = SyntheticSequence(from_dict(SyntheticWorldConfig, {"frames": 300, "route": {"speed_change_mps": 4.0}}))
    t = swing.trajectory.times
    speed = np.diff(swing.trajectory.distance) / np.diff(t)
    expected = 10.0 + 4.0 * np.sin(2 * np.pi * (t[:-1] + t[1:]) / 2 / 15.0)
    np.testing.assert_allclose(speed, expected, atol=0.01)
    assert speed[:10].mean() > 10.0 and speed.min() == pytest.approx(6.0, abs=0.05)
    assert speed.max() == pytest.approx(14.0, abs=0.05)
    np.testing.assert_allclose(np.diff(steady.trajectory.distance) / np.diff(t), 10.0, atol=1e-9)
    # The same place on the route gives the same pose: only the timing differs.
    np.testing.assert_allclose(swing.trajectory.distance[0], steady.trajectory.distance[0])
    for bad in ({"speed_change_mps": -1.0}, {"speed_change_mps": 10.0}, {"speed_period_s": 0.0}):
        with pytest.raises(ConfigError, match="speed_"):
            from_dict(SyntheticWorldConfig, {"route": bad})


def test_kitti_pose_convention(default_route):
    poses = default_route.kitti_poses
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-12)
    # Camera z is forward: the first move is mostly along +z of camera 0, y (down) stays near 0.
    t = poses[5][:3, 3]
    assert t[2] > 4.0 and abs(t[1]) < 0.1


def test_ground_points_land_where_the_homography_says(default_route):
    """Points on the ground, projected with the GT poses, agree with the GT homography."""
    seq = default_route
    rng = np.random.default_rng(0)
    K = seq.camera.K
    for i in rng.choice(np.arange(1, len(seq)), 25, replace=False):
        # Ground points in front of the previous camera.
        T_wc_prev, T_wc_cur = seq.T_world_cam[i - 1], seq.T_world_cam[i]
        fwd = T_wc_prev[:3, 2]
        right = T_wc_prev[:3, 0]
        pts = []
        for _ in range(40):
            p = T_wc_prev[:3, 3] + fwd * rng.uniform(4, 40) + right * rng.uniform(-6, 6)
            pts.append([p[0], p[1], 0.0])
        pts = np.array(pts)
        uv = []
        for T in (T_wc_prev, T_wc_cur):
            Xc = transform_points(invert_transform(T), pts)
            assert np.all(Xc[:, 2] > 0)
            proj = Xc @ K.T
            uv.append(proj[:, :2] / proj[:, 2:3])
        np.testing.assert_allclose(apply_homography(seq.ground_homographies[i], uv[0]), uv[1], atol=1e-6)
    np.testing.assert_allclose(seq.ground_homographies[0], np.eye(3))


def test_revisits_are_within_the_stated_limits(default_route):
    seq = default_route
    conf = seq.config.revisits
    assert len(seq.revisits) > 100
    centres = seq.T_world_cam[:, :3, 3]
    axis = seq.T_world_cam[:, :3, 2]
    times = seq.trajectory.times
    queries = set()
    for r in seq.revisits:
        assert r.match < r.query
        assert times[r.query] - times[r.match] >= conf.min_separation_s
        d = np.linalg.norm(centres[r.query][:2] - centres[r.match][:2])
        assert d <= conf.max_distance_m + 1e-9 and abs(d - r.distance_m) < 1e-9
        cosang = axis[r.query][:2] @ axis[r.match][:2] / np.linalg.norm(axis[r.query][:2]) / np.linalg.norm(axis[r.match][:2])
        assert np.rad2deg(np.arccos(np.clip(cosang, -1, 1))) <= conf.max_heading_deg + 1e-6
        queries.add(r.query)
    # Nearly every frame after the first lap revisits lap 0 (the lap change ramps smoothly).
    after_first_lap = np.flatnonzero(seq.trajectory.distance > seq.route.length + seq.config.route.offset_ramp_m)
    assert len(queries & set(after_first_lap)) / len(after_first_lap) > 0.95
    # No frame of the first lap (away from its end) is a query.
    assert min(queries) * seq.config.route.speed_mps / seq.config.camera.fps > seq.route.length - 5


def test_frames_are_deterministic_and_seeded():
    a = SyntheticSequence(small_world_config(frames=6, seed=3))
    b = SyntheticSequence(small_world_config(frames=6, seed=3))
    c = SyntheticSequence(small_world_config(frames=6, seed=4))
    for i in (0, 5):
        np.testing.assert_array_equal(a.image(i), b.image(i))
    assert np.abs(a.image(0).astype(int) - c.image(0).astype(int)).mean() > 5
    assert a.image(0).shape == (120, 320) and a.image(0).dtype == np.uint8


def test_rgb_rendering():
    seq = SyntheticSequence(small_world_config(frames=2, encoding="rgb8"))
    img = seq.image(0)
    assert img.shape == (120, 320, 3)
    # Colour varies between channels (grass is green, sky is blue).
    assert np.abs(img[..., 1].astype(int) - img[..., 2].astype(int)).mean() > 3


def test_rendered_ground_follows_the_ground_truth_homography():
    """Warping frame i-1 with the GT homography reproduces frame i on the road ahead."""
    import cv2

    config = small_world_config(frames=40, width=620, height=188)
    config.scene.sensor_noise = 0.0
    seq = SyntheticSequence(config)
    errors_h, errors_id = [], []
    for i in (5, 20, 33):
        prev, cur = seq.image(i - 1).astype(np.float32), seq.image(i).astype(np.float32)
        warped = cv2.warpPerspective(prev, seq.ground_homographies[i], (620, 188))
        region = (slice(140, 185), slice(200, 420))  # road in front of the car
        errors_h.append(np.abs(warped[region] - cur[region]).mean())
        errors_id.append(np.abs(prev[region] - cur[region]).mean())
    assert max(errors_h) < 4.0, errors_h
    for e_h, e_id in zip(errors_h, errors_id):
        assert e_id > 2.5 * e_h, (errors_h, errors_id)


def test_texture_varies_along_the_route():
    """Places are distinguishable: frames far apart on the route differ much more than revisits do."""
    seq = SyntheticSequence(small_world_config(frames=300))
    r = next(r for r in seq.revisits if r.distance_m < 1.5)
    a, b = seq.image(r.query).astype(float), seq.image(r.match).astype(float)
    other = seq.image((r.match + 60) % 250).astype(float)
    assert np.abs(a - b).mean() < 0.7 * np.abs(a - other).mean()


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ConfigError, match="camera.widht"):
        from_dict(SyntheticWorldConfig, {"camera": {"widht": 100}})
    with pytest.raises(ConfigError, match="encoding"):
        from_dict(SyntheticWorldConfig, {"camera": {"encoding": "bgr8"}})
    with pytest.raises(ConfigError, match="corner_radius_m=40.0 is too large"):
        SyntheticSequence(from_dict(SyntheticWorldConfig, {"route": {"corner_radius_m": 40.0}}))
    with pytest.raises(ConfigError, match="lap_offsets_m"):
        from_dict(SyntheticWorldConfig, {"route": {"lap_offsets_m": [0.0, 12.0]}})


def test_shipped_config_file_equals_the_defaults():
    from pathlib import Path

    from deep_vision.config import load_yaml, to_dict

    path = Path(__file__).resolve().parents[1] / "config" / "synthetic_world.yaml"
    assert to_dict(from_dict(SyntheticWorldConfig, load_yaml(path))) == to_dict(SyntheticWorldConfig())


INDOOR = {"scene": {"kind": "indoor", "corridor_width_m": [2.2, 3.0]},
          "camera": {"width": 160, "height": 120, "fx": 60.0, "height_m": 1.0},
          "route": {"corners": [[0, 0], [16, 0], [16, 7], [0, 7]], "corner_radius_m": 1.2, "speed_mps": 1.5,
                    "lap_offsets_m": [0.0, 0.45, -0.4], "offset_ramp_m": 3.0}}


def _wall_distance(point: np.ndarray, face) -> float:
    """Distance on the ground from ``point`` [2] to the face's bottom edge (a segment)."""
    a, b = face.origin[:2], face.origin[:2] + face.e_u[:2] * face.width_m
    s = np.clip((point - a) @ (b - a) / ((b - a) @ (b - a)), 0.0, 1.0)
    return float(np.linalg.norm(a + s * (b - a) - point))


def test_indoor_world_is_a_closed_corridor_around_the_route():
    """Walls floor to ceiling on both sides face the route, the camera stays inside the corridor on every lap,
    laps revisit places, and a frame has texture at its top (ceiling) and bottom (floor) and is deterministic."""
    from deep_vision.synthetic.world import building_faces, ceiling_height

    seq = SyntheticSequence(from_dict(SyntheticWorldConfig, {**INDOOR, "seed": 3, "frames": 400}))
    faces = building_faces(seq.config)
    z = ceiling_height(seq.config)
    assert 2.4 <= z <= 3.2 and len(faces) > 8
    assert all(f.height_m == z and f.origin[2] == z for f in faces)
    centres = seq.T_world_cam[:, :2, 3]
    # Every wall panel faces the corridor: the route's nearest camera position is in front of it.
    for f in faces:
        mid = f.origin[:2] + f.e_u[:2] * f.width_m / 2
        nearest = centres[np.argmin(np.linalg.norm(centres - mid, axis=1))]
        assert f.normal[:2] @ (nearest - mid) > 0
    # The camera never comes closer than 0.3 m to a wall (corridor 2.2-3.0 m wide, laps 0.45 m off centre).
    closest = min(min(_wall_distance(c, f) for f in faces) for c in centres[::5])
    assert 0.3 < closest < 1.5
    assert len(seq.revisits) > 100
    img = seq.image(50).astype(float)
    assert img.shape == (120, 160)
    # Tiled ceiling with light panels on top, floor at the bottom (the street world's sky would be a flat gradient).
    assert img[:10].std() > 5 and img[-10:].std() > 3
    same = SyntheticSequence(from_dict(SyntheticWorldConfig, {**INDOOR, "seed": 3, "frames": 400}))
    np.testing.assert_array_equal(same.image(50), seq.image(50))


def test_repetitive_corridor_repeats_its_wall_designs():
    """scene.wall_designs N: every wall panel shows one of N designs (its left part, or the design repeated), the
    ceiling lights sit on a grid; the default world gives every panel its own texture."""
    from deep_vision.synthetic.world import build_world, building_faces

    def designs(faces) -> int:
        return len({f.levels[0][:, :8].tobytes() for f in faces})  # a panel's design starts at its left edge

    config = from_dict(SyntheticWorldConfig, {**INDOOR, "seed": 3, "scene": {**INDOOR["scene"], "wall_designs": 3}})
    faces = building_faces(config)
    assert len(faces) > 8 and designs(faces) <= 3
    assert designs(building_faces(from_dict(SyntheticWorldConfig, {**INDOOR, "seed": 3}))) > 8
    # Light panels (the brightest texels) on a regular grid of ceiling tiles: their rows repeat with one period.
    ceiling = build_world(config).ceiling.levels[0][..., 0].astype(float)
    rows = np.flatnonzero((ceiling >= 240).mean(axis=1) > 0.05)
    starts = rows[np.r_[True, np.diff(rows) > 1]]
    assert len(starts) > 3 and np.ptp(np.diff(starts)) <= 2
    img = SyntheticSequence(from_dict(SyntheticWorldConfig, {**INDOOR, "seed": 3, "frames": 50,
                                                             "scene": {**INDOOR["scene"], "wall_designs": 3}})).image(10)
    assert img.shape == (120, 160) and img.std() > 5
    with pytest.raises(ConfigError, match="wall_designs"):
        from_dict(SyntheticWorldConfig, {**INDOOR, "scene": {**INDOOR["scene"], "wall_designs": -1}})


def test_indoor_config_keeps_the_route_inside_the_corridor():
    with pytest.raises(ConfigError, match="scene.kind"):
        from_dict(SyntheticWorldConfig, {"scene": {"kind": "cave"}})
    with pytest.raises(ConfigError, match="inside the corridor"):
        from_dict(SyntheticWorldConfig, {**INDOOR, "route": {**INDOOR["route"], "lap_offsets_m": [0.0, 0.9]}})
    with pytest.raises(ConfigError, match="below the ceiling"):
        from_dict(SyntheticWorldConfig, {**INDOOR, "camera": {**INDOOR["camera"], "height_m": 2.5}})
