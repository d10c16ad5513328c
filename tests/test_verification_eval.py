"""Verification benchmark (eval/verification_eval): pairs, metrics, the ORB verifier's decisions, the report."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import small_world_config

from deep_vision.errors import ConfigError
from deep_vision.estimators.loop_closure import Verification
from deep_vision.eval import verification_eval as ve
from deep_vision.geometry.transforms import make_transform


def _rz(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _rx(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[1.0, 0.0, 0.0], [0.0, math.cos(a), -math.sin(a)], [0.0, math.sin(a), math.cos(a)]])


# ============================================================================ metrics on hand-made inputs
def test_precision_recall_and_recall_at_full_precision():
    # 5 positives; verified: 4 true (100, 80, 60, 40 inliers), 2 false (60, 30); one positive not verified
    inliers = np.array([100, 80, 60, 60, 40, 30, 0])
    verified = np.array([1, 1, 1, 1, 1, 1, 0], bool)
    positive = np.array([1, 1, 1, 0, 1, 0, 1], bool)
    m = ve.verification_pr(verified, inliers, positive)
    assert (m["pairs"], m["positives"], m["negatives"]) == (7, 5, 2)
    assert (m["verified"], m["true_positives"], m["false_positives"]) == (6, 4, 2)
    assert m["precision"] == pytest.approx(4 / 6) and m["recall"] == pytest.approx(4 / 5)
    # thresholds 100, 80, 60, 40, 30; at 60 the tie accepts the true and the false pair together
    assert m["curve"]["threshold"] == [100, 80, 60, 40, 30]
    assert m["curve"]["precision"] == pytest.approx([1, 1, 3 / 4, 4 / 5, 4 / 6])
    assert m["curve"]["recall"] == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.8])
    # a stepwise sweep through the tie would claim recall 0.6 at precision 1: no threshold gives that
    assert m["recall_at_100_precision"] == pytest.approx(0.4) and m["threshold_at_100_precision"] == 80
    assert (m["weakest_positive_inliers"], m["strongest_negative_inliers"]) == (40, 60)


def test_precision_recall_edge_cases():
    none = ve.verification_pr(np.zeros(3, bool), np.array([10, 0, 5]), np.array([1, 1, 0], bool))
    assert math.isnan(none["precision"]) and none["recall"] == 0.0
    assert none["recall_at_100_precision"] == 0.0 and none["threshold_at_100_precision"] is None
    assert none["weakest_positive_inliers"] is None and none["strongest_negative_inliers"] == 5
    clean = ve.verification_pr(np.array([1, 1, 0], bool), np.array([50, 30, 20]), np.array([1, 1, 0], bool))
    assert clean["precision"] == 1.0 and clean["recall_at_100_precision"] == 1.0
    worst_first = ve.verification_pr(np.array([1, 1], bool), np.array([90, 30]), np.array([0, 1], bool))
    assert worst_first["recall_at_100_precision"] == 0.0 and worst_first["threshold_at_100_precision"] is None
    with pytest.raises(ValueError, match="one shape"):
        ve.verification_pr(np.ones(2, bool), np.ones(3), np.ones(2, bool))


def test_rotation_and_direction_errors_against_known_poses():
    assert ve.rotation_error_deg(_rz(10), _rz(25)) == pytest.approx(15.0)
    assert ve.rotation_error_deg(_rx(90), np.eye(3)) == pytest.approx(90.0)
    assert ve.rotation_error_deg(_rz(30) @ _rx(20), _rz(30) @ _rx(20)) == pytest.approx(0.0, abs=1e-6)
    assert ve.direction_error_deg([1, 0, 0], [1, 1, 0]) == pytest.approx(45.0)
    assert ve.direction_error_deg([0, 0, 1], [0, 0, -3]) == pytest.approx(180.0)
    assert ve.direction_error_deg([0, 0, 2], [0, 0, 5]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="zero length"):
        ve.direction_error_deg([0, 0, 0], [1, 0, 0])


def test_pose_errors_use_the_verifiers_conventions():
    # truth: the query camera 2 m ahead (z) and 1 m right of the match camera, turned 20° about y
    R_true = np.array([[math.cos(0.349), 0, math.sin(0.349)], [0, 1, 0], [-math.sin(0.349), 0, math.cos(0.349)]])
    T_mq = make_transform(R_true, [1.0, 0.0, 2.0])
    pair = ve.Pair("q", "m", True, "test", T_mq)
    exact = Verification(True, 50, 60, "essential", R_true, np.array([1.0, 0.0, 2.0]) / math.sqrt(5))
    e = ve.pose_errors(pair, exact)
    assert e["rotation_err_deg"] == pytest.approx(0.0, abs=1e-6)
    assert e["direction_err_deg"] == pytest.approx(0.0, abs=1e-5)
    off = Verification(True, 50, 60, "essential", R_true @ _rz(3), np.array([0.0, 0.0, 1.0]))
    e = ve.pose_errors(pair, off)
    assert e["rotation_err_deg"] == pytest.approx(3.0)
    assert e["direction_err_deg"] == pytest.approx(math.degrees(math.atan2(1.0, 2.0)))
    # a 0.3 m baseline: the direction is not scored; an unverified pair: nothing is
    short = ve.Pair("q", "m", True, "test", make_transform(R_true, [0.0, 0.0, 0.3]))
    assert ve.pose_errors(short, exact)["direction_err_deg"] is None
    assert ve.pose_errors(pair, Verification(False, 3, 10, "essential")) == \
        {"rotation_err_deg": None, "direction_err_deg": None, "angle_err_deg": None}
    # only the angle known (EuRoC): |estimated − true angle|
    angle_only = ve.Pair("q", "m", True, "test", None, 37.5)
    assert ve.pose_errors(angle_only, Verification(True, 50, 60, "essential", _rz(40), np.array([1.0, 0, 0]))
                          )["angle_err_deg"] == pytest.approx(2.5)


# ============================================================================ synthetic pairs and the ORB verifier
@pytest.fixture(scope="module")
def small_pairs():
    """8 revisits and 16 far pairs of the small world (300 frames: 1.2 laps), 620 x 188."""
    settings = ve.Settings(synthetic_positives=8, negative_ratio=2)
    return ve.synthetic_pairs([9001], settings,
                              config_for=lambda s: small_world_config(frames=300, seed=s, width=620, height=188))


def test_synthetic_pairs_are_revisits_and_far_frames(small_pairs):
    ps = small_pairs
    pos = [p for p in ps.pairs if p.positive]
    neg = [p for p in ps.pairs if not p.positive]
    assert len(pos) == 8 and len(neg) == 16
    for p in pos:
        q, m = (int(k.split("/")[1]) for k in (p.query, p.match))
        assert q - m >= 200  # at least 20 s apart at 10 Hz
        assert np.linalg.norm(p.T_mq[:3, 3]) <= 4.0 + 1.0  # camera centres within 4 m on the ground
    for p in neg:
        assert np.linalg.norm(p.T_mq[:3, 3]) > 50.0
    assert len(ps.keys) == len({k for p in ps.pairs for k in (p.query, p.match)})
    assert "300 frames at 620x188" in ps.description
    K, D = ps.camera(ps.keys[0])
    assert K.shape == (3, 3) and D is None and ps.load(ps.keys[0]).shape == (188, 620)


def test_orb_verifier_accepts_revisits_and_rejects_far_pairs(small_pairs):
    m = ve.run_variant(ve.build_variant({"features": "orb"}), small_pairs,
                       {k: small_pairs.load(k) for k in small_pairs.keys})
    # measured (seed 9001, 8 + 16 pairs): 8 / 8 revisits verified with 227-382 inliers (of 236-392 matches);
    # no far pair verified: 8-24 matches after the ratio test, below min_inliers (25), so 0 inliers.
    # Bounds: at most one revisit lost; no false pair; the weakest revisit above 100 inliers (half the measured
    # 227, 4x min_inliers).
    assert m["false_positives"] == 0
    assert m["true_positives"] >= 7
    assert m["recall_at_100_precision"] >= 7 / 8
    assert m["weakest_positive_inliers"] >= 100
    assert m["strongest_negative_inliers"] < 25
    # relative pose of the verified revisits (measured: rotation p50 0.2°, p95 3.5°; direction p50 2.3°,
    # p95 41° from baselines under 1 m): bounds 3-5x the medians
    assert m["rotation_err_deg"]["p50"] < 1.0 and m["rotation_err_deg"]["p95"] < 8.0
    assert m["direction_err_deg"]["n"] >= 4 and m["direction_err_deg"]["p50"] < 10.0
    assert m["extract_ms"]["n"] == len(small_pairs.keys) and m["verify_ms"]["n"] == len(small_pairs.pairs)
    assert len(m["rows"]) == 24


# ============================================================================ run + report, learned plumbing
def test_run_and_report_with_orb_and_learned(tmp_path, tiny_patch_model, caplog):
    settings = ve.Settings(synthetic_frames=300, synthetic_size=(320, 120), synthetic_positives=3, euroc=True)
    variants = {"orb": {"features": "orb"},
                "learned": {"features": "learned", "patch_model_path": str(tiny_patch_model)}}
    steps: list[tuple[str, int]] = []

    def progress(total, desc):
        return lambda n: steps.append((desc, n))

    with caplog.at_level(logging.WARNING, logger="deep_vision.eval.verification_eval"):
        result = ve.run(variants, tmp_path / "no-data", synthetic_seeds=(9001,), settings=settings, progress=progress)
    # the absent real data sets are skipped, each with one line naming it
    assert result["skipped"] == ["kitti", "euroc"]
    assert any("KITTI skipped" in r.message for r in caplog.records)
    assert any("EuRoC loop pairs skipped" in r.message for r in caplog.records)
    ds = result["datasets"]["synthetic"]
    assert (ds["positives"], ds["negatives"]) == (3, 6)
    orb, learned = ds["variants"]["orb"], ds["variants"]["learned"]
    # the same pairs for every variant
    assert [(r["query"], r["match"]) for r in orb["rows"]] == [(r["query"], r["match"]) for r in learned["rows"]]
    assert learned["features_per_image"]["p50"] > 0 and learned["extract_ms"]["n"] == ds["images"]
    assert any(d.startswith("synthetic: learned") for d, _ in steps)

    md = ve.write_report(result, tmp_path / "report")
    assert md.name == "verification.md"
    text = md.read_text()
    assert "| orb |" in text and "| learned |" in text and "Skipped" in text and "kitti, euroc" in text
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert set(metrics["datasets"]["synthetic"]["variants"]) == {"orb", "learned"}
    assert metrics["header"]["variants"]["learned"]["patch_model_path"] == str(tiny_patch_model)
    png = tmp_path / "report" / "pr-synthetic.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


def test_learned_without_a_model_names_the_parameter(tmp_path):
    with pytest.raises(ConfigError, match="patch_model_path"):
        ve.build_variant({"features": "learned", "patch_model_path": str(tmp_path / "absent.onnx")})


def test_main_writes_a_report_when_every_data_set_is_absent(tmp_path, capsys):
    out = tmp_path / "out"
    assert ve.main(["--out", str(out), "--seeds", "--data", str(tmp_path / "none"), "--patch-model", "none"]) == 0
    assert (out / "verification.md").is_file() and (out / "metrics.json").is_file()
    assert "report:" in capsys.readouterr().out


# ============================================================================ real data (../shared/data)
def test_kitti_pairs_from_the_shared_data(shared_data):
    if ve.kitti_available(shared_data):
        pytest.skip(f"KITTI files absent under {shared_data}: {ve.kitti_available(shared_data)[0]}")
    ps = ve.kitti_pairs(shared_data, ve.QUICK)
    pos = [p for p in ps.pairs if p.positive]
    far = [p for p in ps.pairs if p.kind.startswith("far")]
    other = [p for p in ps.pairs if p.kind == "other sequence"]
    assert len(far) + len(other) == 2 * len(pos) and abs(len(far) - len(other)) <= 1
    assert {p.kind for p in pos} == {"gap 5", "gap 10", "gap 15"}
    # forward driving: the query camera ahead of the match camera (03 slows to 0.3 m per 5 frames at its end)
    assert all(0.2 < p.T_mq[2, 3] < 15.0 for p in pos)
    assert 3.0 < np.median([p.T_mq[2, 3] for p in pos if p.kind == "gap 10"]) < 10.0
    assert all(np.linalg.norm(p.T_mq[:3, 3]) > 100 for p in far)
    assert all(p.query.split("/")[0] != p.match.split("/")[0] for p in other)
    assert ps.camera("00/100")[0][0, 0] == pytest.approx(718.856)
    assert ps.camera("03/550")[0][0, 0] == pytest.approx(721.5377)
    assert ps.load("00/100").shape == (376, 1241) and ps.load("03/550").shape == (375, 1242)  # PNG and JPEG

    # ORB on a few of them: overlapping views verified (measured 85-227 inliers), other places not (11-22 matches,
    # below min_inliers); rotation error p50 0.3°, max 2.2°; direction error p50 2.5°, max 4.4°
    sub = ve.PairSet("kitti", "", [p for p in pos if p.kind == "gap 5"][:2] + [p for p in pos if p.kind == "gap 10"][:2]
                     + far[:2] + other[:2], ps.load, ps.camera)
    m = ve.run_variant(ve.build_variant({"features": "orb"}), sub, {k: sub.load(k) for k in sub.keys})
    assert m["true_positives"] == 4 and m["false_positives"] == 0
    assert m["weakest_positive_inliers"] >= 50
    assert m["rotation_err_deg"]["p50"] < 1.0 and m["rotation_err_deg"]["p95"] < 5.0
    assert m["direction_err_deg"]["p50"] < 6.0 and m["direction_err_deg"]["p95"] < 10.0


def test_euroc_pairs_from_the_shared_data(shared_data):
    folder = shared_data / "euroc_loop_pairs"
    if not (folder / "sensorLeft.yaml").is_file():
        pytest.skip(f"EuRoC loop pairs absent: {folder}")
    ps = ve.euroc_pairs(shared_data)
    assert [p.positive for p in ps.pairs] == [True, True, False]
    assert ps.pairs[0].true_angle_deg == 37.5 and ps.pairs[0].T_mq is None
    K, D = ps.camera("left_img_0")
    assert K.shape == (3, 3) and D is not None and np.any(D)
    assert isinstance(ps.load("left_img_0"), np.ndarray) and Path(folder / "left_img_0.png").is_file()
