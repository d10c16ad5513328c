"""Patch sets in the HPatches layout from the synthetic world, with correspondences given by its depth.

A reference frame of the drive and a few target views of the same place are rendered with their depth maps
(:meth:`Renderer.render` ``depth=True``). Each reference keypoint is back-projected with its depth, moved into
every target camera and projected; the target patch's affine map is the reference map carried through the
Jacobian of that reference → target pixel mapping (central differences of back-projected neighbours, which is
exact to first order because every surface of the world is a plane). A keypoint is dropped where the mapping is
not one plane's (sky, a depth step or a crease inside the difference stencil), where a target sees something
else in front of it (occlusion), or where its patch leaves an image. The rest follows
:func:`deep_vision.eval.patch_sets.homography_sequence`: HPatches-style jitter per level, patches cut by
:func:`deep_vision.models.patch_input.extract_patches`.

Two kinds of sequences, HPatches' two, each with targets of growing difficulty:

- ``viewpoint``: the same place from further back along the route (1 to 15 m), on this or another lap (the laps
  are driven at other lateral offsets), and shifted sideways, turned and raised or lowered a little more each
  target (``VIEWPOINT``);
- ``illumination``: (almost) the reference pose under another sun (only the façades' shading changes: the
  world's geometry and textures do not depend on ``scene.sun_*``), then a global photometric change: gain,
  gamma, offset, a smooth shading ramp and more sensor noise (``ILLUMINATION``).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, replace
from functools import lru_cache

import cv2
import numpy as np

from deep_vision.eval.patch_sets import LEVELS, PatchSequence, compose, detect, jitter_affines, visible
from deep_vision.geometry.transforms import invert_transform, make_transform, rotation_z
from deep_vision.models.patch_input import MAGNIFICATION, PATCH_SIZE, extract_patches, keypoint_affines
from deep_vision.synthetic.config import SyntheticWorldConfig
from deep_vision.synthetic.renderer import NEAR_M, Renderer
from deep_vision.synthetic.sequence import SyntheticSequence
from deep_vision.synthetic.world import building_faces

logger = logging.getLogger(__name__)

KINDS = ("viewpoint", "illumination")
#: A projected point is hidden when the target's depth there differs from its own by more than this fraction.
OCCLUSION_TOLERANCE = 0.03
#: A stencil lies on one plane when the inverse depth's second difference is below this fraction of its value
#: (inverse depth is exactly affine in the pixel coordinates on a plane).
PLANE_TOLERANCE = 0.005
#: Central-difference step of the Jacobian: this fraction of the patch span, at least MIN_STEP_PX pixels; the
#: stencil also tests that this much of the patch lies on one surface.
STEP_FRACTION = 0.25
MIN_STEP_PX = 2.0
#: Largest patch scale change (either singular value of the Jacobian, or its inverse) kept.
MAX_SCALE_CHANGE = 4.0

#: Viewpoint targets: distance back along the route (m, easiest to hardest target), and the largest sideways
#: shift (m), turn away from the reference's scene (deg) and height change (m) of the hardest target; target t
#: of T gets (t + 1) / T of them (times a random 0.5-1, random sides; the height change ±).
VIEWPOINT = {"back_m": (1.0, 15.0), "lateral_m": 1.5, "yaw_deg": 8.0, "height_m": 0.3}
#: Illumination targets, hardest target's values (target t of T gets (t + 1) / T of them): the sun's turn
#: (deg) and elevation change (deg); log2 gain and gamma, offset (levels), shading ramp (fraction across the
#: image), added sensor noise (std, levels); and every target pose's tiny motion (up to, m and deg).
ILLUMINATION = {"sun_turn_deg": 160.0, "sun_elevation_deg": 30.0, "log2_gain": 0.7, "log2_gamma": 0.5,
                "offset": 15.0, "shading": 0.3, "noise": 3.0, "motion_m": 0.05, "motion_deg": 0.3}


# -- geometry ---------------------------------------------------------------------------------------------------
def _sample(image: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Bilinear samples of a float32 [H x W] image at [N x 2] points (x, y); 0 outside."""
    p = np.asarray(pts, np.float32).reshape(-1, 2)
    n, cols = len(p), 1024  # OpenCV's maps hold fewer than 32767 rows and columns
    if n == 0:
        return np.zeros(0, np.float32)
    m = np.full((-(-n // cols) * cols, 2), -1.0, np.float32)
    m[:n] = p
    m = m.reshape(-1, cols, 2)
    return cv2.remap(image, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0.0).reshape(-1)[:n]


def _inverse_depth(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse depth (0 for the sky) and a map that is 1 on surfaces, 0 on the sky, both float32 [H x W]."""
    depth = np.asarray(depth, np.float32)
    finite = np.isfinite(depth) & (depth > 0)
    inv = np.zeros(depth.shape, np.float32)
    np.divide(np.float32(1.0), depth, out=inv, where=finite)
    return inv, finite.astype(np.float32)


def _back_project(pts: np.ndarray, inv_depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray) -> np.ndarray:
    """[N x 3] world points of pixels [N x 2] at inverse depths [N]."""
    rays = np.c_[pts, np.ones(len(pts))] @ np.linalg.inv(K).T
    X_cam = rays / inv_depth[:, None]
    return X_cam @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]


def _project(X_world: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels [N x 2] and depths [N] of world points [N x 3] in a camera."""
    T = invert_transform(T_world_cam)
    X = X_world @ T[:3, :3].T + T[:3, 3]
    z = X[:, 2]
    uv = (X @ K.T)[:, :2] / np.where(np.abs(z) > 1e-9, z, 1e-9)[:, None]
    return uv, z


def depth_warp_affines(A: np.ndarray, depth_ref: np.ndarray, T_world_ref: np.ndarray, depth_target: np.ndarray,
                       T_world_target: np.ndarray, K: np.ndarray, *,
                       occlusion_tolerance: float = OCCLUSION_TOLERANCE, plane_tolerance: float = PLANE_TOLERANCE,
                       max_scale_change: float = MAX_SCALE_CHANGE) -> tuple[np.ndarray, np.ndarray]:
    """The affine maps ([n x 2 x 3], patch → target image) that follow reference maps ``A`` into a target view
    through the scene's depth, and [n] bool: the correspondence is valid.

    ``depth_*``: [H x W] metres along the optical axis (inf: sky) at pixel centres; ``T_world_*``: camera
    (optical frame) poses; ``K``: [3 x 3], both views. A map is linearised at its centre with central
    differences at ± a step (``STEP_FRACTION`` of the patch span) along the image axes. Invalid: a stencil point
    on the sky or off the reference plane (depth step or crease), behind a target's near plane, hidden in the
    target (its depth there differs by more than ``occlusion_tolerance``) or a scale change beyond
    ``max_scale_change``. Only valid rows are meaningful.
    """
    A = np.asarray(A, np.float64).reshape(-1, 2, 3)
    K = np.asarray(K, np.float64)
    if depth_ref.ndim != 2 or depth_target.ndim != 2:
        raise ValueError(f"expected [H x W] depth maps, got {list(depth_ref.shape)} and {list(depth_target.shape)}")
    n = len(A)
    c = A[:, :, 2]
    span = PATCH_SIZE * np.sqrt(np.abs(np.linalg.det(A[:, :, :2])))
    h = np.maximum(STEP_FRACTION * span, MIN_STEP_PX)
    # stencil: centre, +x, -x, +y, -y
    offsets = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], np.float64)
    pts = (c[:, None, :] + offsets[None] * h[:, None, None]).reshape(-1, 2)

    inv_ref, sky_ref = _inverse_depth(depth_ref)
    rho = _sample(inv_ref, pts).astype(np.float64).reshape(n, 5)
    ok = (_sample(sky_ref, pts).reshape(n, 5) > 1 - 1e-6).all(axis=1) & (rho > 0).all(axis=1)
    second = np.abs(np.c_[rho[:, 1] + rho[:, 2], rho[:, 3] + rho[:, 4]] - 2 * rho[:, :1])
    ok &= (second <= plane_tolerance * rho[:, :1]).all(axis=1)

    X = _back_project(pts, np.where(rho.reshape(-1) > 0, rho.reshape(-1), 1.0), K, T_world_ref)
    uv, z = _project(X, K, T_world_target)
    uv, z = uv.reshape(n, 5, 2), z.reshape(n, 5)
    ok &= (z > NEAR_M).all(axis=1)

    inv_t, sky_t = _inverse_depth(depth_target)
    rho_t = _sample(inv_t, uv.reshape(-1, 2)).astype(np.float64).reshape(n, 5)
    on_surface = _sample(sky_t, uv.reshape(-1, 2)).reshape(n, 5) > 1 - 1e-6
    ok &= (on_surface & (np.abs(rho_t * z - 1.0) <= occlusion_tolerance)).all(axis=1)

    J = np.stack([(uv[:, 1] - uv[:, 2]), (uv[:, 3] - uv[:, 4])], axis=2) / (2.0 * h[:, None, None])
    sv = np.linalg.svd(np.where(ok[:, None, None], J, np.eye(2)), compute_uv=False)
    ok &= (sv[:, 0] <= max_scale_change) & (sv[:, 1] >= 1.0 / max_scale_change)

    out = np.empty_like(A)
    out[:, :, :2] = J @ A[:, :, :2]
    out[:, :, 2] = uv[:, 0]
    return out, ok


def depth_sequence(name: str, kind: str, ref: np.ndarray, depth_ref: np.ndarray, T_world_ref: np.ndarray,
                   targets: list[tuple[np.ndarray, np.ndarray, np.ndarray]], K: np.ndarray, count: int,
                   rng: np.random.Generator, *, levels: tuple[str, ...] = LEVELS,
                   magnification: float = MAGNIFICATION, min_size: float = 2.0,
                   max_size: float = 40.0) -> PatchSequence:
    """Patches of ``ref`` (grey uint8, depth, pose) around up to ``count`` keypoints and their correspondences
    in each ``(target grey image, depth, pose)`` (``K`` for all); only keypoints valid in every target
    (:func:`depth_warp_affines`) whose patches lie inside every image are kept, so that row k of every array
    shows the same scene point. The depth-map counterpart of ``patch_sets.homography_sequence``."""
    pts, sizes = detect(ref, 4 * count, min_size=min_size, max_size=max_size)
    A = keypoint_affines(pts, sizes, magnification=magnification)
    keep = visible(A, ref.shape)
    warped = []
    for img, depth, T in targets:
        W, ok = depth_warp_affines(A, depth_ref, T_world_ref, depth, T, K)
        keep &= ok & visible(W, img.shape[:2])
        warped.append(W)
    idx = np.flatnonzero(keep)[:count]
    logger.debug("%s: %d of %d keypoints valid in all %d targets, %d kept", name, int(keep.sum()), len(A),
                 len(targets), len(idx))
    out = {}
    for level in levels:
        out[level] = np.stack([
            extract_patches(img, compose(W[idx], jitter_affines(len(idx), level, rng)))
            for (img, _, _), W in zip(targets, warped)])
    return PatchSequence(name, kind, extract_patches(ref, A[idx]), out)


# -- views ------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _drive(seed: int, frames: int) -> SyntheticSequence:
    """The default world of ``seed`` (kept: both kinds of one seed share the few seconds its build takes)."""
    return SyntheticSequence(SyntheticWorldConfig(seed=seed, frames=frames))


def _camera_motion(lateral_m: float, up_m: float, yaw_deg: float) -> np.ndarray:
    """Camera-frame (optical: x right, y down, z ahead) motion: shifted right and up, turned right (yaw > 0)."""
    a = np.radians(yaw_deg)
    R = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    return make_transform(R, [lateral_m, -up_m, 0.0])


def _frames_at(seq: SyntheticSequence, distance_m: float) -> np.ndarray:
    """Frames, on every lap driven, nearest to the route position ``distance_m`` (metres driven, lap 0)."""
    L, step = seq.route.length, seq.config.route.speed_mps / seq.config.camera.fps
    laps = np.arange(-1, int(np.ceil(len(seq) * step / L)) + 2)
    j = np.round((distance_m + laps * L) / step).astype(int)
    return j[(j >= 0) & (j < len(seq))]


def _difficulty(targets: int) -> np.ndarray:
    """[T] share of the largest change each target gets: 1/T, 2/T, ..., 1."""
    return (np.arange(targets) + 1.0) / targets


def _back_m(targets: int) -> np.ndarray:
    """[T] distances (m) of the viewpoint targets back along the route."""
    lo, hi = VIEWPOINT["back_m"]
    return np.linspace(lo, hi, targets) if targets > 1 else np.array([lo])


def viewpoint_poses(seq: SyntheticSequence, frame: int, targets: int, rng: np.random.Generator,
                    scene_distance_m: float = 15.0) -> list[np.ndarray]:
    """[4 x 4] camera poses of ``targets`` views of ``frame``'s place, hardest last (``VIEWPOINT``): from
    further back along the route, the first on the reference's lap, the others on a random lap, moved sideways
    and up or down, turned to the point ``scene_distance_m`` ahead of the reference camera (in a turn the route
    looks elsewhere) and then away from it by a random yaw."""
    v = VIEWPOINT
    back = _back_m(targets)
    s = float(seq.trajectory.distance[frame])
    T_ref = seq.T_world_cam[frame]
    scene = T_ref[:3, 3] + scene_distance_m * T_ref[:3, 2]
    poses = []
    for t, d in enumerate(_difficulty(targets)):
        cands = _frames_at(seq, s - back[t])
        if len(cands) == 0:
            raise ValueError(f"no frame {back[t]:.1f} m before frame {frame} on any lap")
        same = cands[np.argmin(np.abs(cands - (frame - back[t])))]
        j = int(same if t == 0 else rng.choice(cands))
        lateral = rng.choice([-1.0, 1.0]) * d * v["lateral_m"] * rng.uniform(0.5, 1.0)
        T = seq.T_world_cam[j] @ make_transform(np.eye(3), [lateral, 0.0, 0.0])
        T[2, 3] += d * v["height_m"] * rng.uniform(-1.0, 1.0)
        to_scene, axis = scene[:2] - T[:2, 3], T[:2, 2]
        turn = np.arctan2(to_scene[1], to_scene[0]) - np.arctan2(axis[1], axis[0])
        turn += np.radians(rng.choice([-1.0, 1.0]) * d * v["yaw_deg"] * rng.uniform(0.5, 1.0))
        T[:3, :3] = rotation_z(float(turn)) @ T[:3, :3]
        poses.append(T)
    return poses


def relit_renderer(seq: SyntheticSequence, sun_azimuth_deg: float, sun_elevation_deg: float) -> Renderer:
    """A noise-free renderer of ``seq``'s world under another sun: the same ground, the building faces rebuilt
    (their geometry and textures come from the seed alone; only their shading follows ``scene.sun_*``)."""
    config = copy.deepcopy(seq.config)
    config.scene.sun_azimuth_deg, config.scene.sun_elevation_deg = sun_azimuth_deg, sun_elevation_deg
    world = replace(seq.world, faces=building_faces(config))
    return Renderer(world, seq.camera, 0.0, config.scene.haze_distance_m)


@dataclass(frozen=True)
class Lighting:
    """One illumination target's lighting: the sun, then a photometric change of the rendered image."""

    sun_azimuth_deg: float
    sun_elevation_deg: float
    gain: float
    gamma: float  # applied to intensities in [0, 1] before the gain
    offset: float  # levels
    shading: float  # brightness change from one side of the image to the other (fraction)
    shading_angle: float  # direction of that change (rad, image x toward y)
    noise: float  # sensor noise std (levels)


def lightings(targets: int, rng: np.random.Generator, sun_azimuth_deg: float, sun_elevation_deg: float,
              sensor_noise: float) -> list[Lighting]:
    """``targets`` lightings of growing difficulty (``ILLUMINATION``), each change in one direction for the
    whole sequence (the sun turning one way, the image getting brighter or darker) so that it grows from target
    to target; target t of T gets a random 0.75-1 of (t + 1) / T of the largest change."""
    p = ILLUMINATION
    turn, rise, bright, contrast = rng.choice([-1.0, 1.0], 4)
    angle = rng.uniform(0, 2 * np.pi)
    out = []
    for d in _difficulty(targets):
        f = d * rng.uniform(0.75, 1.0)
        out.append(Lighting(
            sun_azimuth_deg=sun_azimuth_deg + turn * f * p["sun_turn_deg"],
            sun_elevation_deg=float(np.clip(sun_elevation_deg + rise * f * p["sun_elevation_deg"], 5.0, 85.0)),
            gain=2.0 ** (bright * f * p["log2_gain"]), gamma=2.0 ** (contrast * f * p["log2_gamma"]),
            offset=bright * f * p["offset"], shading=f * p["shading"], shading_angle=angle,
            noise=sensor_noise + f * p["noise"]))
    return out


def photometric(image: np.ndarray, lighting: Lighting, rng: np.random.Generator) -> np.ndarray:
    """A grey uint8 image under ``lighting``'s photometric change: gamma, gain, a linear shading ramp, offset,
    then sensor noise."""
    h, w = image.shape[:2]
    ramp = (np.cos(lighting.shading_angle) * np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
            + np.sin(lighting.shading_angle) * np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None])
    x = (image.astype(np.float32) / 255.0) ** np.float32(lighting.gamma)
    x *= np.float32(255.0 * lighting.gain) * (1.0 + np.float32(lighting.shading) * ramp)
    x += np.float32(lighting.offset) + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(lighting.noise)
    return np.clip(x, 0, 255).astype(np.uint8)


def _reference_frames(seq: SyntheticSequence, kind: str, sequences: int, targets: int,
                      rng: np.random.Generator) -> np.ndarray:
    """``sequences`` frames spread along the drive (one per stretch, at random within it)."""
    frames = np.arange(len(seq))
    if kind == "viewpoint":
        s = seq.trajectory.distance
        frames = np.array([f for f in frames if all(len(_frames_at(seq, s[f] - b)) for b in _back_m(targets))])
    if len(frames) < sequences:
        raise ValueError(f"{sequences} {kind} sequences need as many frames, the drive has {len(frames)}")
    edges = np.linspace(0, len(frames), sequences + 1)
    return frames[np.floor(rng.uniform(edges[:-1], edges[1:])).astype(int)]


def depth_sequences(seed: int, kind: str, sequences: int, count: int, rng: np.random.Generator, *,
                    targets: int = 5, levels: tuple[str, ...] = LEVELS, magnification: float = MAGNIFICATION,
                    frames: int = 600) -> list[PatchSequence]:
    """``sequences`` patch sequences of ``kind`` (viewpoint | illumination) of the default street world of
    ``seed`` (a ``frames``-frame drive, grey camera), each a reference frame and ``targets`` views of growing
    difficulty, at most ``count`` keypoints each; named ``synthetic-{seed}-{v|i}{i}``. Only the frames needed
    are rendered."""
    if kind not in KINDS:
        raise ValueError(f"kind must be viewpoint or illumination, got {kind!r}")
    if sequences < 1 or count < 1 or targets < 1:
        raise ValueError(f"sequences, count and targets must be positive, got {sequences}, {count}, {targets}")
    seq = _drive(seed, frames)
    K = seq.camera.K
    renderer = seq.renderer
    sun_az, sun_el = seq.config.scene.sun_azimuth_deg, seq.config.scene.sun_elevation_deg
    base_noise = seq.config.scene.sensor_noise
    out = []
    for i, frame in enumerate(_reference_frames(seq, kind, sequences, targets, rng)):
        start = time.perf_counter()
        T_ref = seq.T_world_cam[frame]
        ref, depth_ref = renderer.render(T_ref, rng, depth=True)
        views = []
        if kind == "viewpoint":
            distance = float(np.clip(np.median(depth_ref[np.isfinite(depth_ref)]), 5.0, 40.0))
            for T in viewpoint_poses(seq, int(frame), targets, rng, distance):
                img, depth = renderer.render(T, rng, depth=True)
                views.append((img, depth, T))
        else:
            p = ILLUMINATION
            for light in lightings(targets, rng, sun_az, sun_el, base_noise):
                relit = relit_renderer(seq, light.sun_azimuth_deg, light.sun_elevation_deg)
                shift, up = rng.uniform(-1, 1, 2) * p["motion_m"]
                T = T_ref @ _camera_motion(shift, up, rng.uniform(-1, 1) * p["motion_deg"])
                img, depth = relit.render(T, depth=True)
                views.append((photometric(img, light, rng), depth, T))
        ps = depth_sequence(f"synthetic-{seed}-{kind[0]}{i}", kind, ref, depth_ref, T_ref, views, K, count, rng,
                            levels=levels, magnification=magnification)
        logger.info("%s: frame %d, %d patches, %.1f s", ps.name, frame, len(ps), time.perf_counter() - start)
        out.append(ps)
    return out
