"""4-point parameterisation ↔ H (numpy and torch), resolution conjugation, corner error, pair sampling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from deep_vision.eval.homography_pairs import photometric, sample_pair
from deep_vision.geometry import homography_torch as ht
from deep_vision.geometry.homography import (
    apply_homography,
    conjugate_homography,
    corner_error,
    four_point_to_homography,
    homography_to_four_point,
    patch_corners,
    resize_matrix,
)

RNG = np.random.default_rng(3)
C = patch_corners(128)


def test_known_transforms():
    # A pure translation moves every corner by the same offset.
    H = four_point_to_homography(C, np.tile([5.0, -3.0], (4, 1)))
    np.testing.assert_allclose(H, [[1, 0, 5], [0, 1, -3], [0, 0, 1]], atol=1e-12)
    # A scaling about the origin by 2.
    H = four_point_to_homography(C, C)
    np.testing.assert_allclose(H, np.diag([2.0, 2.0, 1.0]), atol=1e-12)
    assert np.allclose(four_point_to_homography(C, np.zeros((4, 2))), np.eye(3))


def test_round_trip_batched_and_agrees_with_opencv():
    offsets = RNG.uniform(-32, 32, (16, 4, 2))
    H = four_point_to_homography(C, offsets)
    assert H.shape == (16, 3, 3)
    np.testing.assert_allclose(homography_to_four_point(H, C), offsets, atol=1e-9)
    ref = cv2.getPerspectiveTransform(C.astype(np.float32), (C + offsets[0]).astype(np.float32))
    np.testing.assert_allclose(H[0], ref, atol=1e-5)


def test_torch_twin_matches_numpy_and_has_gradients():
    offsets = RNG.uniform(-32, 32, (4, 4, 2))
    o = torch.tensor(offsets, requires_grad=True)
    c = torch.tensor(C).expand(4, 4, 2)
    H = ht.four_point_to_homography(c, o)
    np.testing.assert_allclose(H.detach().numpy(), four_point_to_homography(C, offsets), atol=1e-9)
    np.testing.assert_allclose(ht.homography_to_four_point(H, torch.tensor(C)).detach().numpy(), offsets, atol=1e-8)
    H.sum().backward()
    assert o.grad is not None and torch.isfinite(o.grad).all() and o.grad.abs().sum() > 0
    # Gradient check in double precision.
    o1 = torch.tensor(offsets[:1], requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: ht.four_point_to_homography(c[:1], x), (o1,))


def test_batched_corners_and_offsets():
    """[B x 4 x 2] corners with [B x 4 x 2] offsets, and [4 x 2] corners broadcast over a batch of offsets."""
    offsets = RNG.normal(0, 8, (3, 4, 2))
    H = four_point_to_homography(np.stack([C, C + 10, C * 0.5]), offsets)
    for k, corners in enumerate([C, C + 10, C * 0.5]):
        np.testing.assert_allclose(H[k], four_point_to_homography(corners, offsets[k]), atol=1e-9)
        np.testing.assert_allclose(apply_homography(H[k], corners), corners + offsets[k], atol=1e-6)
    np.testing.assert_allclose(four_point_to_homography(C, offsets)[1], four_point_to_homography(C, offsets[1]),
                               atol=1e-12)


def test_patch_corners_are_the_pixel_centres_of_the_corners():
    np.testing.assert_array_equal(patch_corners(128), [[0, 0], [127, 0], [127, 127], [0, 127]])
    np.testing.assert_array_equal(patch_corners(64, 48), [[0, 0], [63, 0], [63, 47], [0, 47]])


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\[B x 4 x 2\]"):
        four_point_to_homography(np.zeros((3, 2)), np.zeros((3, 2)))
    for corners, offsets in [(C, np.zeros((3, 2))), (np.zeros((3, 2)), np.zeros((4, 2)))]:  # either one wrong
        with pytest.raises(ValueError, match=r"\[B x 4 x 2\]"):
            four_point_to_homography(corners, offsets)
    with pytest.raises(ValueError, match=r"\[B x 4 x 2\]"):
        ht.four_point_to_homography(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))


def test_conjugation_between_resolutions():
    """H estimated on a half-size image, conjugated to full size, maps full-size points correctly."""
    H_full = four_point_to_homography(patch_corners(640, 480), RNG.uniform(-20, 20, (4, 2)))
    S = resize_matrix(0.5, 0.5)
    H_small = conjugate_homography(H_full, np.linalg.inv(S))  # S H S⁻¹
    pts = RNG.uniform(0, 640, (20, 2))
    small_pts = apply_homography(S, pts)
    np.testing.assert_allclose(apply_homography(H_small, small_pts), apply_homography(S, apply_homography(H_full, pts)),
                               atol=1e-9)
    np.testing.assert_allclose(conjugate_homography(H_small, S), H_full, atol=1e-9)
    # resize_matrix follows cv2.resize's pixel-centre convention.
    img = np.zeros((8, 8), np.float32)
    img[4, 6] = 1.0
    small = cv2.resize(img, (4, 4), interpolation=cv2.INTER_LINEAR)
    cy, cx = np.unravel_index(np.argmax(small), small.shape)
    np.testing.assert_allclose(apply_homography(resize_matrix(0.5, 0.5), np.array([[6.0, 4.0]])), [[2.75, 1.75]])
    assert (cx, cy) in ((2, 1), (3, 2), (3, 1), (2, 2))


def test_corner_error():
    H = four_point_to_homography(C, np.tile([3.0, 4.0], (4, 1)))
    assert corner_error(H, np.eye(3), C) == pytest.approx(5.0)
    assert corner_error(np.stack([H, H]), np.stack([H, np.eye(3)]), C).tolist() == pytest.approx([0.0, 5.0])


def test_sampled_pairs_follow_their_homography():
    """The previous patch warped by the label homography reproduces the current patch."""
    yy, xx = np.mgrid[0:600, 0:800]
    image = (127 + 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + 40 * np.sin((xx + yy) / 31.0)).astype(np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(5):
        pair = sample_pair(image, rng)
        assert pair.prev.shape == pair.curr.shape == (128, 128)
        assert np.abs(pair.offsets).max() <= 32
        np.testing.assert_allclose(homography_to_four_point(pair.H, C), pair.offsets, atol=1e-9)
        warped = cv2.warpPerspective(pair.prev.astype(np.float32), pair.H, (128, 128))
        # Compare inside the region covered by the warped previous patch.
        mask = cv2.warpPerspective(np.ones((128, 128), np.float32), pair.H, (128, 128)) > 0.999
        mask = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert mask.mean() > 0.3
        assert np.abs(warped - pair.curr)[mask].mean() < 4.0
    aug = photometric(pair.prev, rng)
    assert aug.dtype == np.uint8 and aug.shape == pair.prev.shape
