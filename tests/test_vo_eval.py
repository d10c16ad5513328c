"""VO metrics (KITTI t_rel/r_rel, ATE/RPE via evo) on known trajectories, and the evaluation run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deep_vision.eval.trajectory_metrics import ate_rpe, kitti_relative_errors, segment_lengths, write_tum
from deep_vision.eval.vo_eval import evaluate, synthetic_sequence, with_gt_scale
from deep_vision.geometry.transforms import invert_transform, make_transform, rotation_z


def straight(n=101, step=1.0, yaw_rate=0.0):
    poses = [np.eye(4)]
    for _ in range(n - 1):
        poses.append(poses[-1] @ make_transform(rotation_z(yaw_rate), [0.0, 0.0, step]))
    return np.stack(poses)


def test_perfect_trajectory_has_zero_errors():
    gt = straight(yaw_rate=0.01)
    e = kitti_relative_errors(gt, gt)
    # 100 m: shorter than the devkit's first segment, so the snippet protocol, under its own names
    assert "t_rel_pct" not in e
    assert e["t_rel_snippet_pct"] == pytest.approx(0.0, abs=1e-9)
    assert e["r_rel_snippet_deg_per_100m"] == pytest.approx(0.0, abs=1e-6)
    m = ate_rpe(gt, gt, np.arange(len(gt)) * 0.1)
    assert m["ate_m"] < 1e-9 and m["rpe_trans_m"] < 1e-9


def test_scale_error_gives_its_percentage():
    gt = straight()
    est = straight(step=1.05)  # 5 % too long
    assert kitti_relative_errors(gt, est)["t_rel_snippet_pct"] == pytest.approx(5.0, rel=1e-3)
    long_gt, long_est = straight(n=401), straight(n=401, step=1.05)  # 400 m: the devkit's 100-400 m segments fit
    devkit = kitti_relative_errors(long_gt, long_est)
    assert devkit["t_rel_pct"] == pytest.approx(5.0, rel=1e-3) and devkit["lengths_m"][0] == 100.0
    assert devkit["segments"] == 31 + 21 + 11 + 1  # start frames every 10 m whose segment ends on the path
    # Ground-truth scaling removes it.
    rel = [invert_transform(est[k]) @ est[k + 1] for k in range(len(est) - 1)]
    fixed = [np.eye(4)]
    for T in with_gt_scale(rel, gt):
        fixed.append(fixed[-1] @ T)
    assert kitti_relative_errors(gt, np.stack(fixed))["t_rel_snippet_pct"] == pytest.approx(0.0, abs=1e-6)


def test_segment_lengths():
    assert segment_lengths(straight(n=2001)) == (100, 200, 300, 400, 500, 600, 700, 800)
    assert segment_lengths(straight(n=302)) == (100, 200, 300, 400, 500, 600, 700, 800)  # 301 m: devkit too
    short = segment_lengths(straight(n=101))
    assert short[0] == pytest.approx(10.0) and short[-1] == pytest.approx(80.0)


def test_tum_file(tmp_path):
    gt = straight(n=3)
    path = write_tum(tmp_path / "t.tum", np.array([1.0, 1.1, 1.2]), gt)
    rows = np.loadtxt(path)
    assert rows.shape == (3, 8) and rows[2, 3] == pytest.approx(2.0) and rows[0, 7] == pytest.approx(1.0)


def test_classical_evaluation_run(tmp_path):
    seq = synthetic_sequence(9005, 25)
    md = evaluate(None, [seq], tmp_path)
    text = md.read_text()
    assert "classical, GT scale" in text and "t_rel" in text
    assert (tmp_path / f"{md.stem}-{seq.name}.png").is_file()
    assert (tmp_path / f"{md.stem}-trajectories" / f"{seq.name}_ground_truth.tum").is_file()
    # ATE both ways: SE(3) keeps the estimate's scale, Sim(3) corrects it (one more degree of freedom: never worse)
    m = json.loads(md.with_suffix(".json").read_text())["sequences"][seq.name]["methods"]["classical, GT scale"]
    assert 0 <= m["ate_sim3_m"] <= m["ate_m"] + 1e-9 and "ATE Sim(3) m" in text


def test_varied_synthetic_route_differs_from_the_default():
    default, varied = synthetic_sequence(9101, 300), synthetic_sequence(9101, 300, varied=True)
    assert varied.name == "synthetic_seed9101_varied" and default.name == "synthetic_seed9101"
    assert varied.poses_gt.shape == default.poses_gt.shape
    # Same world seed, another route: the trajectories part at the first corner (poses only, nothing rendered).
    assert np.abs(varied.poses_gt[:, :3, 3] - default.poses_gt[:, :3, 3]).max() > 5.0


def test_kitti_ranges():
    from deep_vision.errors import ConfigError
    from deep_vision.eval.vo_eval import kitti_ranges

    assert kitti_ranges("00:100:159,03:550:800") == [("00", 100, 159), ("03", 550, 800)]
    assert kitti_ranges("100:159") == [("00", 100, 159)]
    for bad in ("x:1", "a:b", "00:9:3", "1:2:3:4"):
        with pytest.raises(ConfigError, match="--kitti-frames"):
            kitti_ranges(bad)



def test_speed_change_reaches_the_evaluations_synthetic_routes():
    """--speed-change: evaluate vo's and vo-cases' synthetic routes swing their speed, named so."""
    import argparse

    from deep_vision.eval.vo_cases import sources_from_cli

    seq = synthetic_sequence(9005, 40, speed_change_mps=4.0)
    steps = np.linalg.norm(np.diff(seq.poses_gt[:, :3, 3], axis=0), axis=1)
    assert seq.name == "synthetic_seed9005_speed+-4" and steps[-1] > 1.25 > 1.05 > steps[0] > 0.95
    args = argparse.Namespace(kitti_frames="", data="../shared/data", synthetic_seeds="9005", synthetic_frames=3,
                              speed_change=4.0)
    (source,) = sources_from_cli(args)
    assert source.name == seq.name and source.synthetic.config.route.speed_change_mps == 4.0
    np.testing.assert_allclose(source.seq.poses_gt, seq.poses_gt[:3], atol=1e-9)
