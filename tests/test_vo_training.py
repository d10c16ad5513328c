"""training/train_vo.py: the mirror and reverse augmentations (labels and images agree: checked with two-view
geometry on a real KITTI turn), the sample stream, and a tiny end-to-end run with resume."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import REPO

sys.path.insert(0, str(REPO))

from deep_vision.estimators.two_view import FeatureTracker  # noqa: E402
from deep_vision.geometry.transforms import invert_transform, rotation_from_euler_zyx  # noqa: E402
from deep_vision.models.deepvo import DeepVO  # noqa: E402
from deep_vision.models.vo_input import FlowFrontEnd  # noqa: E402
from training import train_vo  # noqa: E402


def _poses(steps: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Poses [N+1 x 4 x 4] from relative steps (t, Euler ZYX)."""
    poses = [np.eye(4)]
    for t, e in steps:
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = rotation_from_euler_zyx(np.asarray(e, float)), t
        poses.append(poses[-1] @ T)
    return np.stack(poses)


def _rotation_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R_a.T @ R_b) - 1) / 2, -1, 1))))


def test_mirrored_labels_flip_x_yaw_and_roll():
    rng = np.random.default_rng(0)
    steps = [(rng.normal(0, 0.2, 3) + [0.1, 0.0, 1.0], rng.normal(0, 0.02, 3)) for _ in range(6)]
    poses = _poses(steps)
    labels = train_vo.motion_labels(poses)
    mirrored = train_vo.mirror_poses(poses)
    assert np.allclose(np.linalg.det(mirrored[:, :3, :3]), 1.0)
    m = train_vo.motion_labels(mirrored)
    # labels (tx, ty, tz, rz, ry, rx): Rz(a)Ry(b)Rx(c) reflected in x is Rz(-a)Ry(-b)Rx(c), so the x translation,
    # the roll (about z, forward) and the yaw (about y, down) change sign; ty, tz and the pitch stay.
    np.testing.assert_allclose(m, labels * [-1, 1, 1, -1, -1, 1], atol=1e-12)
    np.testing.assert_allclose(train_vo.mirror_poses(mirrored), poses, atol=1e-12)  # an involution


def test_mirror_frames_keeps_the_principal_point_column():
    frame = np.zeros((8, 40), np.uint8)
    frame[:, 12] = 255
    out = train_vo.mirror_frames(frame[None], cx=17.0)[0]
    assert int(np.argmax(out[0])) == 22  # 2·17 − 12
    np.testing.assert_array_equal(train_vo.mirror_frames(frame[None], cx=19.5)[0], frame[:, ::-1])


def test_mirrored_kitti_turn_agrees_with_mirrored_labels(shared_data):
    """On a real right turn (KITTI 00, frames 128 -> 131) the two-view rotation and direction of the mirrored
    images equal the mirrored ground truth, and differ from the unmirrored truth by twice the yaw."""
    from deep_vision.io.kitti import KittiSequence

    seq = KittiSequence(shared_data / "kitti" / "sequences" / "00")
    cam, a, b = seq.camera, seq.image(128), seq.image(131)
    truth = invert_transform(seq.poses[128]) @ seq.poses[131]
    ma, mb = train_vo.mirror_frames(np.stack([a, b]), cam.cx)
    poses_m = train_vo.mirror_poses(seq.poses[[128, 131]])
    truth_m = invert_transform(poses_m[0]) @ poses_m[1]
    m = FeatureTracker().motion(ma, mb, cam.K)
    assert m is not None and m.inliers > 100
    yaw_deg = _rotation_deg(truth[:3, :3], np.eye(3))
    assert yaw_deg > 2.0  # a real turn
    assert _rotation_deg(m.R, truth_m[:3, :3]) < 0.15 * yaw_deg
    assert _rotation_deg(m.R, truth[:3, :3]) > 1.7 * yaw_deg
    direction = truth_m[:3, 3] / np.linalg.norm(truth_m[:3, 3])
    assert np.degrees(np.arccos(np.clip(m.t_dir @ direction, -1, 1))) < 3.0


def _left_turning_sequence(n: int = 40) -> dict:
    rng = np.random.default_rng(1)
    poses = _poses([([0.05, 0.0, 1.0], [0.0, -0.03, 0.0])] * (n - 1))  # forward, turning left
    assert train_vo.motion_labels(poses)[0, 4] < 0 and train_vo.motion_labels(poses)[0, 0] > 0
    return {"frames": rng.integers(0, 255, (n, 16, 48), dtype=np.uint8), "poses": poses, "name": "left", "cx": 23.5}


def _stream(mirror: float, reverse: float, preset: str = "compact"):
    conf = {"min_pairs": 3, "max_pairs": 5, "strides": [1, 2], "mirror": mirror, "reverse": reverse,
            "photometric": {"brightness": 0.1, "contrast": 0.1, "gamma": 0.1, "noise": 1.0, "blur_prob": 0.0}}
    model_conf = DeepVO.resolve_conf({"preset": preset, "height": 16, "width": 48})
    return iter(train_vo.SequenceStream([_left_turning_sequence()], conf, batch_size=4, seed=0, rank=0,
                                        model_conf=model_conf))


def test_stream_applies_mirror_and_reverse():
    x, y = next(_stream(0.0, 0.0))
    assert x.shape[0] == 4 and x.shape[1] == y.shape[1] + 1 and x.shape[2:] == (1, 16, 48) and y.shape[2] == 6
    assert (y[..., 0] > 0).all() and (y[..., 4] < 0).all() and (y[..., 2] > 0).all()
    _, y = next(_stream(1.0, 0.0))
    assert (y[..., 0] < 0).all() and (y[..., 4] > 0).all() and (y[..., 2] > 0).all()
    _, y = next(_stream(0.0, 1.0))
    assert (y[..., 2] < 0).all()  # backwards
    mixed = torch.cat([next(_stream(0.5, 0.0))[1][..., 4].flatten() for _ in range(10)])
    assert (mixed > 0).any() and (mixed < 0).any()


@pytest.mark.parametrize("kind", ["no_ground", "dark", "blur"])
def test_degrade_changes_a_contiguous_part_of_a_run_the_cases_way(kind):
    """data.degrade: with probability 1 a contiguous part (2 frames or more) of the run is degraded, the rest kept;
    no_ground greys everything below a row, dark keeps 4-12 % of the light, blur smears along a line."""
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (8, 32, 64), dtype=np.uint8)
    out = train_vo.degraded(frames, {kind: 1.0}, rng)
    changed = np.flatnonzero([(a != b).any() for a, b in zip(frames, out)])
    assert len(changed) >= 2 and np.all(np.diff(changed) == 1)
    part = out[changed]
    if kind == "no_ground":
        bottom, top = part[:, -1], int(0.45 * 32)
        assert (bottom == bottom[:, :1]).all() and (part[:, :top] == frames[changed][:, :top]).all()
    elif kind == "dark":
        assert part.mean() < 0.13 * frames[changed].mean()
    else:
        assert part.std() < 0.8 * frames[changed].std()
    assert (train_vo.degraded(frames, {kind: 0.0}, rng) == frames).all()
    with pytest.raises(train_vo.DatasetError, match="unknown kind"):
        train_vo.degraded(frames, {"fog": 0.0}, rng)  # a misspelt kind fails even where never drawn


def test_stream_gives_the_flow_of_each_labelled_pair():
    """A flow model's samples: input k is the flow from the frame before label k's step to the frame after it,
    under the mirror and reverse augmentations and both strides. The camera steps 1 m forward and 0.1 m right
    per frame while its image content moves 2 px right, so the flow is 20 px per metre of the label's x step
    in every case (negated together by a mirror or a reversal, doubled by stride 2). Measured error of the median
    flow under 0.001 px over 80 pairs; a wrong pair, sign or stride is 2 px or more off: bound 0.25 px."""
    rng = np.random.default_rng(2)
    n, h, w = 30, 48, 128
    big = cv2.GaussianBlur(rng.integers(0, 255, (h, w + 2 * n + 20), dtype=np.uint8), (0, 0), 1.5)
    frames = np.stack([big[:, 2 * n - 2 * k: 2 * n - 2 * k + w] for k in range(n)])  # content moves +2 px
    seq = {"frames": frames, "poses": _poses([([0.1, 0.0, 1.0], [0.0, 0.0, 0.0])] * (n - 1)), "name": "pan",
           "cx": (w - 1) / 2}
    conf = {"min_pairs": 3, "max_pairs": 5, "strides": [1, 2], "mirror": 0.5, "reverse": 0.5,
            "photometric": {"brightness": 0.0, "contrast": 0.0, "gamma": 0.0, "noise": 0.0, "blur_prob": 0.0}}
    model_conf = DeepVO.resolve_conf({"preset": "compact_flow", "height": h, "width": w})
    stream = iter(train_vo.SequenceStream([seq], conf, batch_size=4, seed=0, rank=0, model_conf=model_conf))
    flows, labels = [], []
    for _ in range(6):
        x, y = next(stream)
        assert x.shape[:3] == (4, y.shape[1], 2) and x.shape[3:] == (h, w)
        inner = x[..., 16:-16, 16:-16].flatten(-2).median(-1).values.numpy() * model_conf["flow_scale"]
        flows.append(inner.reshape(-1, 2))
        labels.append(y.numpy().reshape(-1, 6))
    flow, label = np.concatenate(flows), np.concatenate(labels)
    np.testing.assert_allclose(flow[:, 0], 20.0 * label[:, 0], atol=0.25)
    np.testing.assert_allclose(flow[:, 1], 0.0, atol=0.25)
    # every augmentation and stride was drawn: x steps of +-0.1 and +-0.2 m
    assert set(np.round(label[:, 0].astype(float), 2)) == {-0.2, -0.1, 0.1, 0.2}


def test_flow_front_end_measures_a_known_shift():
    """DIS flow of a textured frame moved 3 px right and 1 px down, in the network's units (pixels / flow_scale)."""
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.integers(0, 255, (140, 360), dtype=np.uint8), (0, 0), 1.5)
    prev, curr = big[10:106, 10:330], big[9:105, 7:327]
    conf = DeepVO.resolve_conf({"preset": "compact_flow"})
    flow = FlowFrontEnd(conf)(prev, curr) * conf["flow_scale"]
    inner = flow[:, 16:-16, 16:-16]
    np.testing.assert_allclose(np.median(inner, axis=(1, 2)), [3.0, 1.0], atol=0.1)


@pytest.mark.parametrize("preset", ["compact", "compact_flow"])
def test_smoke_run_and_resume(tmp_path, preset):
    rng = np.random.default_rng(0)
    for folder, n in (("train", 2), ("val", 1)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            poses = _poses([([0.0, 0.0, 0.8], [0.0, 0.01 * (i + 1), 0.0])] * 59)
            np.savez_compressed(tmp_path / folder / f"seq{i}.npz", frames=rng.integers(0, 255, (60, 32, 64), np.uint8),
                                poses=poses, times=np.arange(60) * 0.1, cx=31.5)
    conf = yaml.safe_load((REPO / "training/configs/vo.yaml").read_text())
    conf["model"].update(preset=preset, height=32, width=64, lstm_hidden=16, fc_dim=16)  # smaller
    (tmp_path / "vo.yaml").write_text(yaml.safe_dump(conf))
    args = ["--config", str(tmp_path / "vo.yaml"), f"data.train=[{tmp_path / 'train'}]",
            f"data.val=[{tmp_path / 'val'}]", "data.workers=0", "train.batch_size=2", "train.log_every=1",
            "train.val_every=2", "train.threads=1", f"out={tmp_path / 'run'}"]
    assert train_vo.main([*args, "train.steps=2"]) == 0
    assert train_vo.main([*args, "train.steps=3"]) == 0  # resumes at step 2
    final = torch.load(tmp_path / "run" / "final.pt", weights_only=True)
    assert final["step"] == 3 and np.isfinite(final["val_trans_m"]) and np.isfinite(final["val_rot_deg"])
    assert (tmp_path / "run" / "config.yaml").is_file()
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) >= 4


def test_varied_routes_are_valid_deterministic_and_spread_the_turn_rate():
    from deep_vision.synthetic import SyntheticWorldConfig
    from deep_vision.synthetic.route import ClosedRoute, vary_route

    def draw(seed: int) -> SyntheticWorldConfig:
        config = SyntheticWorldConfig(seed=seed)
        vary_route(config.route, np.random.default_rng([seed, 31]))
        return config

    configs = [draw(seed) for seed in range(11, 21)]
    assert draw(11).route.corners == configs[0].route.corners  # same seed, same route
    rates = []  # turn rate per frame at the default speed, degrees
    for c in configs:
        ClosedRoute(c.route.corners, c.route.corner_radius_m)  # raises when a corner does not fit its edges
        assert 8.0 <= c.route.corner_radius_m <= 25.0
        assert max(abs(o) for o in c.route.lap_offsets_m) < c.route.corner_radius_m
        rates.append(np.degrees(c.route.speed_mps / c.camera.fps / c.route.corner_radius_m))
    assert len({tuple(map(tuple, c.route.corners)) for c in configs}) == len(configs)
    assert np.ptp(rates) > 1.5  # the default route has a single rate (radius 10 m)


def test_load_sequences_takes_a_folder_or_a_pattern(tmp_path):
    """data.train entries: a folder (every .npz in it) or a pattern (the synthetic routes of a folder that also
    holds ground-truth KITTI sequences, beside KITTI labelled by the odometry)."""
    from deep_vision.errors import DatasetError

    for name in ("synthetic_0001", "synthetic_0002", "kitti_03_0000_0549"):
        np.savez_compressed(tmp_path / f"{name}.npz", frames=np.zeros((3, 8, 16), np.uint8), poses=np.stack([np.eye(4)] * 3))
    assert [s["name"] for s in train_vo.load_sequences([str(tmp_path)])] == \
        ["kitti_03_0000_0549", "synthetic_0001", "synthetic_0002"]
    assert [s["name"] for s in train_vo.load_sequences([str(tmp_path / "synthetic_*.npz")])] == \
        ["synthetic_0001", "synthetic_0002"]
    with pytest.raises(DatasetError, match="any .npz"):
        train_vo.load_sequences([str(tmp_path / "robotcar_*.npz")])


def test_odometry_labels_follow_the_truth_without_reading_it(shared_data):
    """make_vo_sequences.py --kitti-labels odometry: the shipped odometry's poses on KITTI 00 frames 0-30, made
    with the ground truth taken away, are within its accuracy of the truth (measured: median step length error
    3.6 %, median rotation error 0.05 degrees; bounds at about twice that)."""
    from deep_vision.io.kitti import KittiSequence

    from training.make_vo_sequences import odometry_poses

    seq = KittiSequence(shared_data / "kitti" / "sequences" / "00")
    idx = list(range(31))
    truth = invert_transform(seq.poses[0]) @ seq.poses[idx]
    seq.poses = None  # not to be read
    poses = odometry_poses(seq, idx)
    assert poses.shape == (31, 4, 4) and np.allclose(poses[0], np.eye(4))
    rel_t, rel_e = invert_transform(truth[:-1]) @ truth[1:], invert_transform(poses[:-1]) @ poses[1:]
    length_err = np.log(np.linalg.norm(rel_e[:, :3, 3], axis=1) / np.linalg.norm(rel_t[:, :3, 3], axis=1))
    assert np.median(np.abs(length_err)) < 0.07
    assert np.median([_rotation_deg(a[:3, :3], b[:3, :3]) for a, b in zip(rel_t, rel_e)]) < 0.12
