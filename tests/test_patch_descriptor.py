"""Patch descriptor: patch cutting, the network's contract, the runtime class and its use in verification."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deep_vision.errors import ConfigError
from deep_vision.models.patch_input import extract_patches, keypoint_affines, to_network


def _texture(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.astype(np.uint8)


def test_patch_of_one_pixel_per_cell_is_the_crop():
    img = _texture()
    # a span of 32 pixels (size 32 / magnification): patch pixel (i, j) is image pixel (85 + j, 185 + i)
    A = keypoint_affines(np.array([[100.5, 200.5]]), 32 / 6.0)
    assert np.array_equal(extract_patches(img, A)[0], img[185:217, 85:117])


def test_angle_turns_the_patch():
    img = _texture()
    A = keypoint_affines(np.array([[160.5, 120.5]]), 32 / 6.0, angles_deg=np.array([90.0]))
    # x axis of the patch along the image's y axis: patch(i, j) = image(row 104.5 + j, col 176 - i) -> rot90
    expected = np.rot90(img[105:137, 145:177], k=-1)[:, ::-1][::-1]
    assert np.abs(extract_patches(img, A)[0].astype(int) - expected.astype(int)).max() <= 1


def test_large_span_is_sampled_from_the_pyramid():
    # 128 pixels -> 32: 4 image pixels per patch pixel, sampled from the second pyramid level
    A = keypoint_affines(np.array([[160.0, 120.0]]), 128 / 6.0)
    # a one-pixel checkerboard: point samples every 4 pixels all land on one colour (0 or 255); anti-aliased
    # samples see its mean (measured: mean 127.5, std 0.5)
    checker = ((np.indices((240, 320)).sum(axis=0) % 2) * 255).astype(np.uint8)
    patch = extract_patches(checker, A)[0].astype(float)
    assert abs(patch.mean() - 127.5) < 5 and patch.std() < 5
    # a ramp along x: each patch pixel shows the image point it maps to (measured mean error 0.0 grey levels;
    # taking pyrDown's pixels as box averages, a half-pixel misalignment, moves the ramp by about 1.1)
    ramp = np.tile(np.arange(320, dtype=np.float64) * 0.75, (240, 1)).astype(np.uint8)
    patch = extract_patches(ramp, A)[0].astype(float)
    assert abs(np.mean(patch[16] - 0.75 * (160 + 4 * (np.arange(32) - 15.5)))) < 0.5


def test_more_patches_than_one_remap_holds():
    img = _texture()
    pts = np.random.default_rng(1).uniform([20, 20], [300, 220], (2100, 2))
    P = extract_patches(img, keypoint_affines(pts, 2.0))
    Q = np.concatenate([extract_patches(img, keypoint_affines(pts[i:i + 700], 2.0)) for i in range(0, 2100, 700)])
    assert P.shape == (2100, 32, 32) and np.array_equal(P, Q)
    x = to_network(P[:3])
    assert x.shape == (3, 1, 32, 32) and x.dtype == np.float32 and x.max() <= 1.0


def test_descriptor_shapes_norms_and_batches(tiny_patch_model):
    from deep_vision.estimators import PatchDescriptor

    desc = PatchDescriptor.from_model(tiny_patch_model, backend="onnxruntime", batch=500)
    assert desc.magnification == 5.0  # from the card
    img = _texture()
    pts = np.random.default_rng(2).uniform([10, 10], [310, 230], (1200, 2))
    d = desc.describe(img, pts, np.full(len(pts), 4.0))
    assert d.shape == (1200, 128) and d.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-4)
    # batching does not change a descriptor; the default span is 32 pixels
    np.testing.assert_allclose(desc.describe(img, pts[:3], np.full(3, 4.0)), d[:3], atol=1e-5)
    np.testing.assert_allclose(desc.describe(img, pts[:2]), desc.describe(img, pts[:2], np.full(2, 32 / 5.0)),
                               atol=1e-6)
    assert desc.describe(img, np.zeros((0, 2))).shape == (0, 128)


def test_bad_keypoints_are_named(tiny_patch_model):
    from deep_vision.estimators import PatchDescriptor

    desc = PatchDescriptor.from_model(tiny_patch_model, backend="onnxruntime")
    img = _texture()
    with pytest.raises(ValueError, match="keypoints contain NaN"):
        desc.describe(img, np.array([[10.0, np.nan]]))
    with pytest.raises(ValueError, match="keypoints must be"):
        desc.describe(img, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="sizes must be"):
        desc.describe(img, np.zeros((2, 2)), np.array([1.0, -1.0]))


def test_learned_features_need_a_model_named_at_start(tmp_path):
    from deep_vision.estimators.loop_closure import GeometricVerifier
    from deep_vision.pipeline.build import build_verifier

    with pytest.raises(ConfigError, match="patch descriptor"):
        GeometricVerifier("learned")
    broken = tmp_path / "patch.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="patch_model_path"):
        build_verifier({"features": "learned", "patch_model_path": str(broken)})


def test_learned_features_verify_a_shifted_view(tiny_patch_model):
    """The verifier's learned path end to end: ORB keypoints, patch descriptors, matching, RANSAC (an untrained
    network still matches a pure shift of a textured image: identical patches give identical descriptors)."""
    from deep_vision.estimators import PatchDescriptor
    from deep_vision.estimators.loop_closure import GeometricVerifier

    v = GeometricVerifier("learned", 500, patch_descriptor=PatchDescriptor.from_model(tiny_patch_model))
    img = _texture(360, 480, seed=3)
    a, b = img[:, :400], img[:, 12:412]
    fa, fb = v.extract(a), v.extract(b)
    assert fa.descriptors.dtype == np.float32 and fa.descriptors.shape[1] == 128
    result = v.verify(fa, fb)
    assert result.verified and result.inliers >= 100


def test_shipped_model_beats_sift_on_held_out_graf(shared_data):
    """The shipped descriptor against SIFT's on the same patches of Oxford graf (never trained on): img1's 300
    strongest DoG keypoints and their hard-jitter correspondences in img2..img6 (HPatches' matching task).
    Measured: learned 0.842, SIFT 0.780 mAP."""
    from deep_vision.estimators import PatchDescriptor
    from deep_vision.eval import patch_eval as pe
    from deep_vision.eval.patch_sets import homography_sequence
    from deep_vision.resources import default_model_path

    pairs = pe.graf_images(shared_data)
    seq = homography_sequence("graf", "viewpoint", pairs[0][1], [(b, H) for _, _, b, H in pairs], 300,
                              np.random.default_rng(0), levels=("hard",))
    scores = {}
    for m in (pe.learned_method("learned", PatchDescriptor.from_model(default_model_path("patch"))),
              pe.sift_method()):
        targets = np.stack([m.patches(t) for t in seq.targets["hard"]])
        scores[m.name] = pe.matching_map([m.patches(seq.ref)], [targets], m.metric)
    assert scores["learned"] > 0.80, scores
    assert scores["learned"] > scores["SIFT"] + 0.03, scores


def test_descriptor_matcher_recovers_the_motion(synthetic):
    """The VO's matched front end (ORB keypoints and descriptors in both frames) on the small world's drive:
    rotation and direction against the ground truth. Measured over 10 pairs 2 frames apart: rotation error
    median 0.21 deg (tracked corners 0.04), direction median 1.9 deg (0.4)."""
    from deep_vision.estimators.two_view import DescriptorMatcher
    from deep_vision.geometry.transforms import invert_transform, rotation_angle

    images = list(synthetic.images())
    T, K = synthetic.T_world_cam, synthetic.renderer.K
    matcher = DescriptorMatcher(max_corners=800, refine=True, descriptor="orb")
    rot, direction = [], []
    for k in range(1, 29, 3):
        m = matcher.motion(images[k - 1], images[k + 1], K)
        assert m is not None, k
        T_rel = invert_transform(T[k - 1]) @ T[k + 1]
        t = T_rel[:3, 3] / np.linalg.norm(T_rel[:3, 3])
        rot.append(np.degrees(rotation_angle(m.R.T @ T_rel[:3, :3])))
        direction.append(np.degrees(np.arccos(np.clip(m.t_dir @ t, -1.0, 1.0))))
    assert np.median(rot) < 0.5 and np.median(direction) < 5.0, (rot, direction)


def test_vo_descriptor_parameter_is_checked_at_start(tmp_path, random_vo_model):
    from deep_vision.geometry.camera import PinholeCamera
    from deep_vision.pipeline.build import build_odometry

    camera = PinholeCamera(320, 120, 300.0, 300.0, 160.0, 60.0)
    base = {"model_path": str(random_vo_model), "mode": "hybrid"}
    with pytest.raises(ConfigError, match="'descriptor' \\(orb\\) applies to geometry 'features'"):
        build_odometry({**base, "descriptor": "orb"}, camera)
    broken = tmp_path / "patch.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="patch_model_path"):
        build_odometry({**base, "geometry": "features", "descriptor": "learned", "patch_model_path": str(broken)},
                       camera)
    vo = build_odometry({**base, "geometry": "features", "descriptor": "orb"}, camera)
    assert type(vo.tracker).__name__ == "DescriptorMatcher" and vo.tracker.descriptor == "orb"
