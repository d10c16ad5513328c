"""Probe: what limits the ground-plane step length's accuracy - the step's rotation and direction, or the
ground measurement itself?

On training ranges (KITTI 03 frames 0-549, KITTI 00 frames 0-99; synthetic worlds 1-3 for the settings), the
dense-flow two-view step and its inlier correspondences are computed once per frame (cached under --cache). The
ground-plane length is then computed with the estimated rotation / direction or the ground truth's; from ground
corners tracked at full resolution by LK, on the next frame as it is or warped back by the ground's homography;
with other tilt bounds and minimum angles below the horizon (integrated into trajectories: ATE); and with a plane
fitted in the image (the ground homography's transfer error) instead of in 3D.
Prints the per-frame length error (RMS, median |error|, bias, lag-1 autocorrelation) per variant.

    .venv/bin/python experiments/vo_ground_diagnosis.py
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import cv2
import numpy as np

from deep_vision.estimators.ground_scale import GroundPlaneScale
from deep_vision.estimators.two_view import DenseFlowTracker
from deep_vision.eval.trajectory_metrics import ate_rpe
from deep_vision.eval.vo_eval import kitti_sequence, synthetic_sequence
from deep_vision.geometry.transforms import invert_transform

sys.path.insert(0, str(Path(__file__).parent))
from vo_scale_filters import held, poses_with_lengths  # noqa: E402  (the probes' shared trajectory builder)


def record(seq, cache: Path):
    path = cache / f"{seq.name}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    tracker, out, prev = DenseFlowTracker(width=400, refine=True), [], None
    for frame in seq.frames():
        if prev is not None:
            m = tracker.motion(prev, frame, seq.camera.K)
            out.append(None if m is None else (m.R, m.t_dir, m.p0, m.p1))
        prev = frame
    path.write_bytes(pickle.dumps(out))
    return out


def ground_tracks(prev, curr, K, up, win, H=None, min_below_deg=6.0):
    """Corners below the horizon tracked at full resolution by pyramidal LK, forward-backward checked; with H (the
    ground's homography prev -> curr), tracked on curr warped back by H and mapped forward through it."""
    if H is not None:
        curr = cv2.warpPerspective(curr, H, curr.shape[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    h, w = prev.shape
    v = np.arange(h, dtype=np.float64)
    rays = np.c_[np.full(h, K[0, 2]), v, np.ones(h)] @ np.linalg.inv(K).T
    below = rays @ -up > np.sin(np.radians(min_below_deg)) * np.linalg.norm(rays, axis=1)
    mask = np.zeros_like(prev)
    mask[below] = 255
    p0 = cv2.goodFeaturesToTrack(prev, 400, 0.005, 7, mask=mask)
    if p0 is None:
        return np.zeros((0, 2)), np.zeros((0, 2))
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
    p1, st, _ = cv2.calcOpticalFlowPyrLK(prev, curr, p0, None, winSize=(win, win), maxLevel=4, criteria=crit)
    pb, st2, _ = cv2.calcOpticalFlowPyrLK(curr, prev, p1, None, winSize=(win, win), maxLevel=4, criteria=crit)
    ok = (st[:, 0] == 1) & (st2[:, 0] == 1) & (np.linalg.norm(pb - p0, axis=2)[:, 0] < 0.3)
    q0, q1 = p0[ok, 0].astype(np.float64), p1[ok, 0].astype(np.float64)
    if H is not None and len(q1):
        q1 = cv2.perspectiveTransform(q1[None], H)[0]
    return q0, q1


def ground_homography(K, R_pc, t_pc, down, height_m):
    """Pixel map prev -> curr of the ground plane (down . X = height in the previous camera), for the step
    (R_pc, metric t_pc: the current camera in the previous one's frame)."""
    return K @ R_pc.T @ (np.eye(3) - np.outer(t_pc, down) / height_m) @ np.linalg.inv(K)


def stats(name: str, est: np.ndarray, gt: np.ndarray) -> None:
    ok = np.isfinite(est) & (gt > 0.1)
    e = est[ok] / gt[ok] - 1
    ac = np.corrcoef(e[:-1], e[1:])[0, 1]
    print(f"  {name:40s} found {ok.sum():4d}/{(gt > 0.1).sum()}  rms {np.sqrt(np.mean(e ** 2)):.3f}  "
          f"median |e| {np.median(np.abs(e)):.3f}  bias {np.median(e):+.3f}  lag-1 ac {ac:+.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--cache", default="/tmp/gdiag")
    args = ap.parse_args()
    root = Path(args.data) / "kitti" / "sequences"
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    settings(root, Path(args.cache))
    for seq in (kitti_sequence(root / "03", 0, 549), kitti_sequence(root / "00", 0, 99)):
        rec = record(seq, Path(args.cache))
        rel = [invert_transform(seq.poses_gt[k]) @ seq.poses_gt[k + 1] for k in range(len(rec))]
        gt = np.array([np.linalg.norm(T[:3, 3]) for T in rel])
        ground = GroundPlaneScale(seq.camera_height_m, max_tilt_deg=10.0)  # the bound before 2026-12-07
        K = seq.camera.K
        print(f"{seq.name}:")
        variants = {
            "estimated R, estimated t": lambda r, T: (r[0], r[1]),
            "true R, estimated t": lambda r, T: (T[:3, :3], r[1]),
            "estimated R, true t direction": lambda r, T: (r[0], T[:3, 3] / max(np.linalg.norm(T[:3, 3]), 1e-9)),
            "true R, true t direction": lambda r, T: (T[:3, :3], T[:3, 3] / max(np.linalg.norm(T[:3, 3]), 1e-9)),
        }
        for name, pick in variants.items():
            est = np.full(len(rec), np.nan)
            for k, r in enumerate(rec):
                if r is None:
                    continue
                R, t = pick(r, rel[k])
                e = ground.estimate(R, t, K, r[2], r[3])
                est[k] = np.nan if e is None else e.scale_m
            stats(name, est, gt)
        frames = list(seq.frames())
        for win in (15, 21, 31):
            est = np.full(len(rec), np.nan)
            for k, r in enumerate(rec):
                if r is not None:
                    q0, q1 = ground_tracks(frames[k], frames[k + 1], K, ground._up, win)
                    e = ground.estimate(r[0], r[1], K, q0, q1) if len(q0) else None
                    est[k] = np.nan if e is None else e.scale_m
            stats(f"full-resolution LK ground points, window {win}", est, gt)
        base = np.full(len(rec), np.nan)
        for k, r in enumerate(rec):
            if r is not None:
                e = ground.estimate(r[0], r[1], K, r[2], r[3])
                base[k] = np.nan if e is None else e.scale_m
        for win in (9, 15, 21):
            for iters in (1, 2):
                est = np.full(len(rec), np.nan)
                for k, r in enumerate(rec):
                    if r is None:
                        continue
                    s = base[k] if np.isfinite(base[k]) else np.nanmedian(base)
                    for _ in range(iters):
                        H = ground_homography(K, r[0], r[1] * s, -ground._up, seq.camera_height_m)
                        q0, q1 = ground_tracks(frames[k], frames[k + 1], K, ground._up, win, H)
                        e = ground.estimate(r[0], r[1], K, q0, q1) if len(q0) else None
                        s = e.scale_m if e is not None else s
                        if e is None:
                            break
                    est[k] = np.nan if e is None else e.scale_m
                stats(f"LK on the ground-warped frame, window {win}, {iters} pass(es)", est, gt)


def ground_fit_image(R, t, K, p0, p1, height_m, up, min_below_deg=6.0, max_tilt_deg=5.0, px=1.0, iters=200,
                     min_inliers=15, seed=0):
    """Step length from the ground plane fitted in the image: m = n / d (the plane in units of the step) by RANSAC
    over point triplets and iterated least squares on the ground homography's transfer error (pixels)."""
    t = np.asarray(t, float) / np.linalg.norm(t)
    down = -np.asarray(up, float) / np.linalg.norm(up)
    Ki = np.linalg.inv(K)
    y0, y1 = np.c_[p0, np.ones(len(p0))] @ Ki.T, np.c_[p1, np.ones(len(p1))] @ Ki.T
    below = y0 @ down > np.sin(np.radians(min_below_deg)) * np.linalg.norm(y0, axis=1)
    y0, y1 = y0[below], y1[below]
    if len(y0) < min_inliers:
        return None
    a, b = y0 @ R, t @ R  # R^T y0 (rows), R^T t: the current camera's ray is a - q b, q = m . y0
    c = b[None, :2] - y1[:, :2] * b[2]
    r = a[:, :2] - y1[:, :2] * a[:, 2:3]
    cc = np.einsum("ij,ij->i", c, c)
    q = np.einsum("ij,ij->i", c, r) / np.maximum(cc, 1e-18)  # each point's inverse depth
    ok = (q > 0) & np.isfinite(q) & (cc > 1e-12)
    y0, a, c, r, q = y0[ok], a[ok], c[ok], r[ok], q[ok]
    if len(y0) < min_inliers:
        return None

    def resid(m):  # [H x 3] planes -> [H x N] pixel residuals
        qm = y0 @ m.T
        num = r[:, None, :] - qm[:, :, None] * c[:, None, :]
        den = a[:, 2:3] - qm * b[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            e = K[0, 0] * np.linalg.norm(num, axis=2) / np.abs(den)
        return np.where(np.isfinite(e) & (den > 0), e, np.inf).T

    idx = np.argsort(np.random.default_rng(seed).random((iters, len(y0))), axis=1)[:, :3]
    good = np.abs(np.linalg.det(y0[idx])) > 1e-12
    if not good.any():
        return None
    m = np.linalg.solve(y0[idx][good], q[idx][good][..., None])[..., 0]
    m = m[(m @ down) >= np.cos(np.radians(max_tilt_deg)) * np.linalg.norm(m, axis=1)]
    if not len(m):
        return None
    mb = m[int(np.argmax((resid(m) < px).sum(axis=1)))]
    for _ in range(3):
        inl = resid(mb[None])[0] < px
        if inl.sum() < min_inliers:
            return None
        w = a[inl, 2] - (y0[inl] @ mb) * b[2]
        A = ((c[inl][:, :, None] * y0[inl][:, None, :]) / w[:, None, None]).reshape(-1, 3)
        mb = np.linalg.lstsq(A, (r[inl] / w[:, None]).reshape(-1), rcond=None)[0]
        if mb @ down < np.cos(np.radians(max_tilt_deg)) * np.linalg.norm(mb):
            return None
    return height_m * np.linalg.norm(mb) if (resid(mb[None])[0] < px).sum() >= min_inliers else None


def training_ranges(root: Path) -> list:
    """The probes' training sequences: KITTI 03 frames 0-549, KITTI 00 frames 0-99, synthetic worlds 1-3."""
    return [kitti_sequence(root / "03", 0, 549), kitti_sequence(root / "00", 0, 99)] + \
        [synthetic_sequence(s, 300) for s in (1, 2, 3)]


def training_steps(data: str, cache: str):
    """For each training range: (sequence, cached two-view steps, ground-truth step lengths, steps' (R, unit t));
    the steps cached under ``cache`` (:func:`recorded_steps`)."""
    cache_dir = Path(cache)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for seq in training_ranges(Path(data) / "kitti" / "sequences"):
        yield (seq, *recorded_steps(seq, cache_dir))


def recorded_steps(seq, cache: Path):
    """(the cached two-view steps, the ground truth's step lengths, the steps' (R, unit t) or None)."""
    rec = record(seq, cache)
    rel = [invert_transform(seq.poses_gt[k]) @ seq.poses_gt[k + 1] for k in range(len(rec))]
    gt = np.array([np.linalg.norm(T[:3, 3]) for T in rel])
    return rec, gt, [None if r is None else (r[0], r[1]) for r in rec]


def report_lengths(seq, steps, name: str, est: np.ndarray, gt: np.ndarray) -> None:
    """Per-frame error of the lengths ``est`` and the ATE of the steps' trajectory with them."""
    stamps = (seq.stamps_ns - seq.stamps_ns[0]) / 1e9
    poses = poses_with_lengths(steps, held(est))
    sim3 = ate_rpe(seq.poses_gt, poses, stamps, correct_scale=True)["ate_m"]
    se3 = ate_rpe(seq.poses_gt, poses, stamps)["ate_m"]
    stats(f"{name}: ATE Sim(3) {sim3:.2f} SE(3) {se3:.2f}", est, gt)


def settings(root: Path, cache: Path) -> None:
    """Tilt bound and minimum angle below the horizon (several: the first that finds a plane), and the image-space
    fit: per-frame error and the ATE of the trajectory with those lengths."""
    for seq, rec, gt, steps in training_steps(str(root.parents[1]), str(cache)):
        K, up = seq.camera.K, GroundPlaneScale(seq.camera_height_m)._up
        print(f"{seq.name} (settings):", flush=True)

        def report(name, est, seq=seq, steps=steps, gt=gt):
            report_lengths(seq, steps, name, est, gt)

        for below in ((6,), (7,), (8,), (8, 6), (9, 6)):
            for tilt in (10, 5, 4):
                planes = [GroundPlaneScale(seq.camera_height_m, min_below_deg=b, max_tilt_deg=tilt) for b in below]
                est = np.full(len(rec), np.nan)
                for k, r in enumerate(rec):
                    for g in planes if r is not None else ():
                        e = g.estimate(r[0], r[1], K, r[2], r[3])
                        if e is not None:
                            est[k] = e.scale_m
                            break
                report(f"3D fit, below {below} deg, tilt {tilt}", est)
        for tilt in (10, 5):
            for px in (0.5, 1.0, 2.0):
                est = np.array([np.nan if r is None else ground_fit_image(r[0], r[1], K, r[2], r[3],
                                seq.camera_height_m, up, max_tilt_deg=tilt, px=px) or np.nan for r in rec])
                report(f"image fit, tilt {tilt}, {px} px", est)


if __name__ == "__main__":
    main()
