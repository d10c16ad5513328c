"""The mutants a review found surviving the tests (issue #27), applied one at a time: each must be killed.

Each mutant is a one-line change of real behaviour (an exact search and replace in one source file) and
the test files that guard it. The script applies it, runs those tests, restores the file (also on Ctrl-C),
and prints which test killed it. Exit status 1 when any mutant survives.

    .venv/bin/python mutation/known_mutants.py [NAME ...]

Runs in place (the tests import the editable install); a file that does not contain a mutant's text stops
the run before anything is changed, so a refactoring that moves the code shows up here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = "ros2_ws/src/deep_vision/deep_vision"


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository
    old: str
    new: str
    tests: tuple[str, ...]
    why: str


MUTANTS = [
    Mutant("odometry_cov_identity", f"{PKG}/nodes/odometry_node.py",
           "A = adjoint(X)", "A = np.eye(6)", ("tests/test_odometry_node.py",),
           "odometry covariance published in camera axes, not transformed into base_link"),
    Mutant("homography_feed_x_over_255", f"{PKG}/estimators/homography.py",
           "x = normalize(np.stack([prev_small, curr_small]))[None]",
           "x = (np.stack([prev_small, curr_small]).astype(np.float32) / np.float32(255.0))[None]",
           ("tests/test_homography_estimator.py",), "homography network fed x / 255 instead of x / 127.5 - 1"),
    Mutant("homography_normalize_x_over_255", f"{PKG}/models/homography_input.py",
           "/ np.float32(127.5) - np.float32(1.0)", "/ np.float32(255.0)",
           ("tests/test_homography_estimator.py",), "the shared input scale (training and run time) changed"),
    Mutant("verify_min_inliers_div10", f"{PKG}/estimators/loop_closure.py",
           "self.min_inliers = int(min_inliers)", "self.min_inliers = int(min_inliers) // 10",
           ("tests/test_place_verification.py",), "loop-closure verification needs 10x fewer inliers"),
    Mutant("verify_min_ratio_div10", f"{PKG}/estimators/loop_closure.py",
           "self.min_inlier_ratio = float(min_inlier_ratio)", "self.min_inlier_ratio = float(min_inlier_ratio) / 10",
           ("tests/test_place_verification.py",), "loop-closure verification needs a 10x lower inlier ratio"),
    Mutant("pose_graph_no_robust_kernel", f"{PKG}/estimators/pose_graph.py",
           'if self.loop_kernel == "none":\n            return noise',
           'if True:\n            return noise', ("tests/test_pose_graph.py",),
           "loop factors without their robust kernel"),
    Mutant("kitti_no_start_time", f"{PKG}/io/convert.py",
           "np.round((start_time_s + seq.times[idx]) * 1e9)", "np.round((seq.times[idx]) * 1e9)",
           ("tests/test_convert.py",), "KITTI bag stamps start at 0 instead of the sequence's start time"),
    Mutant("kitti_cy_plus_10", f"{PKG}/io/kitti.py",
           'PinholeCamera.from_K(self.calib[f"P{self.camera_index}"][:, :3], w, h)',
           'PinholeCamera.from_K(self.calib[f"P{self.camera_index}"][:, :3] + [[0, 0, 0], [0, 0, 10], [0, 0, 0]], w, h)',
           ("tests/test_convert.py",), "KITTI camera_info cy off by 10 px"),
    Mutant("kitti_cx_plus_10", f"{PKG}/io/kitti.py",
           'PinholeCamera.from_K(self.calib[f"P{self.camera_index}"][:, :3], w, h)',
           'PinholeCamera.from_K(self.calib[f"P{self.camera_index}"][:, :3] + [[0, 0, 10], [0, 0, 0], [0, 0, 0]], w, h)',
           ("tests/test_convert.py",), "KITTI camera_info cx off by 10 px (without ../shared/data)"),
    Mutant("vo_flow_pairs_reversed", "training/train_vo.py",
           "pair_input(a, b, model_conf, flow) for a, b in zip(frames[:-1], frames[1:])",
           "pair_input(b, a, model_conf, flow) for a, b in zip(frames[:-1], frames[1:])",
           ("tests/test_vo_training.py",), "VO training flow computed from the later frame to the earlier"),
    Mutant("vo_flow_pairs_shifted", "training/train_vo.py",
           "pair_input(a, b, model_conf, flow) for a, b in zip(frames[:-1], frames[1:])",
           "pair_input(a, b, model_conf, flow) for a, b in zip(frames[1:], np.concatenate([frames[2:], frames[-1:]]))",
           ("tests/test_vo_training.py",), "VO training flow of the next pair, not the labelled one"),
]


def run(m: Mutant) -> tuple[bool, str, float]:
    """(killed, the first failing test or the tail of the output, seconds)."""
    path = REPO / m.path
    original = path.read_text()
    if original.count(m.old) != 1:
        raise SystemExit(f"{m.name}: {m.path} holds its text {original.count(m.old)} times, not once; "
                         f"update the mutant to the code")
    t0 = time.perf_counter()
    try:
        path.write_text(original.replace(m.old, m.new))
        env = {**os.environ, "DEEP_VISION_REQUIRE_ROS": "1"}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m.tests], cwd=REPO, env=env, capture_output=True, text=True)
    finally:
        path.write_text(original)
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, flags=re.M)
    killed = proc.returncode != 0
    detail = failed[0] if failed else proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return killed, detail, time.perf_counter() - t0


def main(names: list[str]) -> int:
    chosen = [m for m in MUTANTS if not names or m.name in names]
    unknown = set(names) - {m.name for m in MUTANTS}
    if unknown:
        print(f"unknown mutant(s): {', '.join(sorted(unknown))}; known: {', '.join(m.name for m in MUTANTS)}")
        return 2
    survivors = 0
    print("| mutant | change | killed by |\n|---|---|---|")
    for m in chosen:
        killed, detail, seconds = run(m)
        survivors += not killed
        print(f"| {m.name} | {m.why} | {detail if killed else 'SURVIVED: ' + detail} |", flush=True)
    print(f"\n{len(chosen) - survivors} of {len(chosen)} killed")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
