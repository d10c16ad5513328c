"""Patch sets from the synthetic world's depth: the renderer's depth, exact correspondences, occlusion, layout."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import small_world_config

from deep_vision.eval.patch_sets import LEVELS, warp_affines
from deep_vision.geometry import invert_transform
from deep_vision.geometry.homography import plane_induced_homography
from deep_vision.models.patch_input import PATCH_SIZE, keypoint_affines
from deep_vision.synthetic import SyntheticSequence, SyntheticWorldConfig
from deep_vision.synthetic.patches import depth_sequences, depth_warp_affines, relit_renderer, viewpoint_poses
from deep_vision.synthetic.renderer import Renderer
from deep_vision.synthetic.world import Face, pyramid

COUNT = 150


def ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[K] normalised cross-correlation of corresponding patches of two [K x S x S] arrays."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1) + 1e-9)


@pytest.fixture(scope="module")
def small() -> SyntheticSequence:
    config = small_world_config(frames=40, width=480, height=160)
    config.scene.sensor_noise = 0.0
    return SyntheticSequence(config)


@pytest.fixture(scope="module")
def sets() -> dict:
    """One viewpoint and one illumination sequence of the default world of seed 0 (built once for both)."""
    return {kind: depth_sequences(0, kind, 1, COUNT, np.random.default_rng(0))[0]
            for kind in ("viewpoint", "illumination")}


# -- the renderer's depth --------------------------------------------------------------------------------------
def test_depth_option_leaves_the_image_unchanged(small):
    T = small.T_world_cam[7]
    np.testing.assert_array_equal(small.renderer.render(T, depth=True)[0], small.image(7))
    noisy = Renderer(small.world, small.camera, sensor_noise=1.5)
    plain = noisy.render(T, np.random.default_rng(5))
    image, depth = noisy.render(T, np.random.default_rng(5), depth=True)
    np.testing.assert_array_equal(plain, image)
    assert depth.dtype == np.float32 and depth.shape == plain.shape


def test_depth_puts_every_pixel_on_the_ground_or_a_facade(small):
    """Ground pixels back-project to z = 0 (depth = camera height / ray's drop), the others onto a face's plane,
    the sky is inf."""
    T = small.T_world_cam[20]
    _, depth = small.renderer.render(T, depth=True)
    K_inv = np.linalg.inv(small.camera.K)
    v, u = np.mgrid[0:depth.shape[0], 0:depth.shape[1]]
    rays = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3) @ K_inv.T  # z_cam = 1
    drop = -(rays @ T[:3, :3].T)[:, 2]  # metres down per metre of depth
    z = depth.reshape(-1).astype(np.float64)
    finite = np.isfinite(z)
    assert 0.05 < 1 - finite.mean() < 0.6  # some sky, mostly surfaces
    X = rays[finite] * z[finite, None] @ T[:3, :3].T + T[:3, 3]
    ground = np.abs(X[:, 2]) < 1e-3 * z[finite]
    # the road just ahead is ground: its depth is the camera height over the ray's drop
    bottom = (v.reshape(-1) >= depth.shape[0] - 10) & (np.abs(u.reshape(-1) - small.camera.cx) < 40)
    expected = T[2, 3] / drop[bottom]
    np.testing.assert_allclose(z[bottom], expected, rtol=1e-4)
    assert ground[bottom[finite]].all()
    # every other surface pixel lies on one of the faces' planes
    faces = small.world.faces
    normals = np.array([f.normal for f in faces])
    offsets = np.einsum("fi,fi->f", normals, np.array([f.origin for f in faces]))
    off_plane = np.abs(X[~ground] @ normals.T - offsets).min(axis=1)
    assert (~ground).sum() > 1000
    assert np.quantile(off_plane / z[finite][~ground], 0.999) < 1e-3


# -- correspondences --------------------------------------------------------------------------------------------
def test_ground_correspondences_equal_the_ground_homography(small):
    """On the ground the depth warp is the plane-induced homography's (an independent formula)."""
    K = small.camera.K
    T_ref, T_tgt = small.T_world_cam[25], small.T_world_cam[21]
    _, depth_ref = small.renderer.render(T_ref, depth=True)
    _, depth_tgt = small.renderer.render(T_tgt, depth=True)
    ys, xs = np.mgrid[100:150:5, 40:440:10]
    ys, xs = ys.ravel(), xs.ravel()
    drop = -(np.c_[xs, ys, np.ones(len(xs))] @ np.linalg.inv(K).T @ T_ref[:3, :3].T)[:, 2]
    on_ground = np.abs(depth_ref[ys, xs] * drop / T_ref[2, 3] - 1) < 1e-4
    assert on_ground.sum() > 200
    A = keypoint_affines(np.c_[xs, ys][on_ground], 4.0)
    W, ok = depth_warp_affines(A, depth_ref, T_ref, depth_tgt, T_tgt, K)
    normal = -T_ref[:3, :3].T @ np.array([0.0, 0.0, 1.0])
    H = plane_induced_homography(K, invert_transform(T_tgt) @ T_ref, normal, float(T_ref[2, 3]))
    W_h = warp_affines(H, A)
    assert ok.mean() > 0.8, ok.mean()
    np.testing.assert_allclose(W[ok, :, 2], W_h[ok, :, 2], atol=1e-3)  # centres, pixels
    # Jacobians: central differences at ± a quarter of the patch span, exact to second order
    np.testing.assert_allclose(W[ok, :, :2], W_h[ok, :, :2], rtol=1e-2, atol=1e-3)


def _wall(T_world_cam: np.ndarray, distance_m: float) -> Face:
    """A wall ``distance_m`` ahead of a camera, facing it, hiding the left half of its view."""
    c, ahead = T_world_cam[:3, 3], T_world_cam[:3, 2] * np.array([1.0, 1.0, 0.0])
    ahead /= np.linalg.norm(ahead)
    right = np.cross(ahead, [0.0, 0.0, 1.0])
    origin = c + distance_m * ahead - 20.0 * right
    origin[2] = 12.0
    texture = np.full((64, 64, 1), 90, np.uint8)
    return Face(origin=origin, e_u=right, width_m=20.0, height_m=12.0, texel_m=0.1, levels=pyramid(texture),
                shade=1.0)


def test_occluded_points_are_rejected(small):
    """A wall put in front of the target camera hides the reference points behind it; without it, they match."""
    K, T = small.camera.K, small.T_world_cam[10]
    _, depth_ref = small.renderer.render(T, depth=True)
    walled = Renderer(dataclasses.replace(small.world, faces=[*small.world.faces, _wall(T, 3.0)]), small.camera)
    _, depth_walled = walled.render(T, depth=True)
    assert np.isfinite(depth_walled[:, : int(small.camera.cx)]).all()
    ys, xs = np.mgrid[10:150:8, 10:470:8]
    A = keypoint_affines(np.c_[xs.ravel(), ys.ravel()], 2.0)
    hidden = A[:, 0, 2] < small.camera.cx - 1
    _, ok_open = depth_warp_affines(A, depth_ref, T, depth_ref, T, K)
    _, ok_walled = depth_warp_affines(A, depth_ref, T, depth_walled, T, K)
    assert ok_open[hidden].mean() > 0.5, ok_open[hidden].mean()  # they would be seen
    assert not ok_walled[hidden].any()
    np.testing.assert_array_equal(ok_walled[~hidden & (A[:, 0, 2] > small.camera.cx + 4)],
                                  ok_open[~hidden & (A[:, 0, 2] > small.camera.cx + 4)])


def test_depth_steps_and_sky_are_rejected(small):
    """Keypoints whose difference stencil straddles two surfaces or touches the sky give no correspondence."""
    K, T = small.camera.K, small.T_world_cam[10]
    _, depth = small.renderer.render(T, depth=True)
    ys, xs = np.mgrid[2:158:3, 2:478:3]
    A = keypoint_affines(np.c_[xs.ravel(), ys.ravel()], 2.0)  # stencil ± 3 px
    _, ok = depth_warp_affines(A, depth, T, depth, T, K)
    inv = np.where(np.isfinite(depth), 1.0 / depth, 0.0)
    # the inverse depth's second difference over ±3 px, where it is large, is a crease or a step
    x, y = xs.ravel(), ys.ravel()
    step = np.zeros(len(x), bool)
    for dx, dy in ((3, 0), (0, 3)):
        xp, xm = np.clip(x + dx, 0, 479), np.clip(x - dx, 0, 479)
        yp, ym = np.clip(y + dy, 0, 159), np.clip(y - dy, 0, 159)
        second = np.abs(inv[yp, xp] + inv[ym, xm] - 2 * inv[y, x])
        step |= (second > 0.05 * inv[y, x]) | (inv[yp, xp] == 0) | (inv[ym, xm] == 0)
    assert step.sum() > 50
    assert not ok[step].any()
    assert ok[~step].mean() > 0.95


def test_relighting_changes_only_the_facades_shading(small):
    relit = relit_renderer(small, small.config.scene.sun_azimuth_deg + 150.0, 15.0)
    assert len(relit.world.faces) == len(small.world.faces)
    assert relit.world.ground is small.world.ground
    shades = []
    for a, b in zip(small.world.faces, relit.world.faces):
        np.testing.assert_array_equal(a.corners, b.corners)
        np.testing.assert_array_equal(a.levels[0], b.levels[0])
        shades.append(a.shade != b.shade)
    assert np.mean(shades) > 0.3
    T = small.T_world_cam[5]
    np.testing.assert_array_equal(relit.render(T, depth=True)[1], small.renderer.render(T, depth=True)[1])


# -- the patch sets ----------------------------------------------------------------------------------------------
def test_sequences_have_the_hpatches_layout(sets):
    for kind, s in sets.items():
        assert s.name == f"synthetic-0-{kind[0]}0" and s.kind == kind
        assert set(s.targets) == set(LEVELS)
        assert 100 <= len(s) <= COUNT, len(s)  # measured: 150 of 150 for both kinds (seeds 0 and 1)
        assert s.ref.shape == (len(s), PATCH_SIZE, PATCH_SIZE) and s.ref.dtype == np.uint8
        for t in s.targets.values():
            assert t.shape == (5, len(s), PATCH_SIZE, PATCH_SIZE) and t.dtype == np.uint8
    with pytest.raises(ValueError, match="kind"):
        depth_sequences(0, "scale", 1, 10, np.random.default_rng(0))


@pytest.mark.parametrize("kind", ["viewpoint", "illumination"])
def test_corresponding_patches_correlate_and_shuffled_ones_do_not(sets, kind):
    """Row k of the reference and of every target show the same point: their NCC is high for the easy jitter,
    lower for the hard one, near zero for shuffled rows. Medians measured per target (seeds 0 and 1, rng 0,
    150 keypoints): easy 0.87-0.95, hard 0.65-0.87, shuffled rows within ±0.09; the bounds leave about 0.1."""
    s = sets[kind]
    rng = np.random.default_rng(1)
    for t in range(5):
        easy, hard = s.targets["easy"][t], s.targets["hard"][t]
        e, h = np.median(ncc(s.ref, easy)), np.median(ncc(s.ref, hard))
        shuffled = np.median(ncc(s.ref, easy[rng.permutation(len(s))]))
        assert e > 0.78, (t, e)
        assert h > 0.55, (t, h)
        assert e > h + 0.03, (t, e, h)  # measured 0.08 or more
        assert abs(shuffled) < 0.2, (t, shuffled)
    # rows are aligned across targets too: target 0 and target 4 show the same points (measured 0.82-0.91)
    first, last = s.targets["easy"][0], s.targets["easy"][-1]
    assert np.median(ncc(first, last)) > 0.7
    assert abs(np.median(ncc(first, last[rng.permutation(len(s))]))) < 0.2


def test_illumination_targets_change_more_and_more(sets):
    """Mean absolute patch difference to the reference, measured 15, 21, 25, 29, 29 levels (seed 0)."""
    s = sets["illumination"]
    change = [np.abs(s.ref.astype(int) - s.targets["easy"][t]).mean() for t in range(5)]
    assert change[-1] > change[0] + 7, change
    assert np.all(np.diff(change) > -3), change


def test_viewpoint_targets_move_further_and_further():
    """Targets 1 to 15 m back along the route, turned toward the reference's scene: ever further away."""
    seq = SyntheticSequence(SyntheticWorldConfig())  # poses only: nothing is rendered
    T_ref = seq.T_world_cam[300]
    poses = viewpoint_poses(seq, 300, 5, np.random.default_rng(0), scene_distance_m=15.0)
    dist = [np.linalg.norm(T[:3, 3] - T_ref[:3, 3]) for T in poses]
    assert np.all(np.diff(dist) > 2.0), dist
    assert 0.5 < dist[0] < 2.0 and 13.0 < dist[-1] < 19.0, dist
    for T in poses:  # looking at the scene the reference sees, 15 m ahead of it, give or take the added turn
        to_scene = T_ref[:3, 3] + 15.0 * T_ref[:3, 2] - T[:3, 3]
        angle = np.degrees(np.arccos(T[:2, 2] @ to_scene[:2] / np.linalg.norm(T[:2, 2]) / np.linalg.norm(to_scene[:2])))
        assert angle < 8.5, angle
