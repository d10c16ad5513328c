"""Probe: metric loop-closure constraints from the ground, variant by variant, on one bag.

Runs the loop_closure stage of ``config/perception.yaml`` over BAG, keeps each verified candidate's two top
views, then re-aligns them with the variants of :func:`deep_vision.estimators.loop_scale.align_ground` named on
the command line (a JSON list of keyword arguments; null for None) and prints, over the candidates within 10 m of their match (as ``evaluate`` counts them), the
metric share, the translation and rotation errors against the ground truth and the NEES of the covariance.

    .venv/bin/python experiments/loop_scale_variants.py demo_output/synthetic_bag \
        '[{}, {"tilt_prior_rad": 1e-9}, {"direction": null}, {"tilt_sigma_rad": 0.001}]'

Tune on training worlds only (the demo's seed 0), never on the held-out seeds (9001+).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from deep_vision.estimators import loop_closure as lc
from deep_vision.estimators.loop_scale import align_ground, planar_constraint
from deep_vision.geometry.transforms import invert_transform, rotation_angle
from deep_vision.io.bag import BagSequence
from deep_vision.params import load_params
from deep_vision.pipeline import report
from deep_vision.pipeline.run import Pipeline


def candidates(bag_path: str):
    views = {}
    original = lc.GeometricVerifier._constrain

    def keep(self, v, query, match):
        original(self, v, query, match)
        views[id(v)] = (query.ground, match.ground)

    lc.GeometricVerifier._constrain = keep
    bag = BagSequence(bag_path)
    pipe = Pipeline(load_params("config/perception.yaml"), ("loop_closure",))
    out = pipe.run(bag, "offline")
    lc.GeometricVerifier._constrain = original
    gt = report.GroundTruth(bag, report.camera_frame_of(bag))
    verifier = pipe.place.detector.verifier
    rows = []
    for r in out.keyframes:
        for c in r.candidates:
            v = c.verification
            if not c.verified or id(v) not in views or not gt.close(r.stamp_ns, c.match_stamp_ns, 10.0):
                continue
            ok, P = gt.at(np.array([r.stamp_ns, c.match_stamp_ns]))
            if ok.all():
                rows.append((v, *views[id(v)], report.GroundTruth.base_relative(P, verifier.camera_pose)))
    return rows, verifier


def evaluate(rows, verifier, **kw) -> str:
    X = verifier.camera_pose
    res = []
    for v, qg, mg, T_true in rows:
        R_b = X[:3, :3] @ v.rotation @ X[:3, :3].T
        yaw_var = (X[:3, :3] @ v.covariance[3:, 3:] @ X[:3, :3].T)[2, 2]
        args = {"yaw_sigma": float(np.sqrt(yaw_var)), "direction": X[:3, :3] @ (-(v.rotation.T @ v.translation))}
        args.update(kw)
        a = align_ground(qg, mg, verifier.ground_view, float(np.arctan2(R_b[1, 0], R_b[0, 0])), **args)
        if a is None:
            res.append((np.nan,) * 3)
            continue
        T, C = planar_constraint(a)
        E = T_true @ invert_transform(T)
        xi = np.r_[E[:3, 3], E[2, 1] - E[1, 2], E[0, 2] - E[2, 0], E[1, 0] - E[0, 1]] * np.r_[1, 1, 1, .5, .5, .5]
        res.append((np.linalg.norm(E[:3, 3]), np.degrees(rotation_angle(E[:3, :3])), xi @ np.linalg.solve(C, xi)))
    a = np.array(res)
    m = np.isfinite(a[:, 0])
    return (f"{kw}: metric {m.mean():.3f} of {len(a)}, translation p50 {np.nanmedian(a[:, 0]):.3f} "
            f"p95 {np.nanpercentile(a[m, 0], 95):.2f} m, rotation p50 {np.nanmedian(a[:, 1]):.3f} deg, "
            f"NEES p50 {np.nanmedian(a[:, 2]):.2f}")


if __name__ == "__main__":
    rows, verifier = candidates(sys.argv[1])
    for variant in json.loads(sys.argv[2]) if len(sys.argv) > 2 else [{}]:
        print(evaluate(rows, verifier, **variant), flush=True)
