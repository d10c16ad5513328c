"""Differentiable, batched twins of the 4-point homography functions (PyTorch + kornia).

Kept apart from :mod:`deep_vision.geometry.homography` so numpy users do not import torch.
"""

from __future__ import annotations

import torch
from kornia.geometry.transform import get_perspective_transform


def four_point_to_homography(corners: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """[B x 3 x 3] homographies mapping ``corners`` [B x 4 x 2] to ``corners + offsets`` [B x 4 x 2].

    Differentiable w.r.t. both inputs (kornia's DLT, Hartley & Zisserman (4.1)).
    """
    if corners.shape[-2:] != (4, 2) or offsets.shape[-2:] != (4, 2):
        raise ValueError(f"corners and offsets: expected [B x 4 x 2], got {list(corners.shape)} and {list(offsets.shape)}")
    corners = corners.expand_as(offsets)
    return get_perspective_transform(corners, corners + offsets)


def homography_to_four_point(H: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """Offsets [B x 4 x 2] by which ``H`` [B x 3 x 3] moves ``corners`` [B x 4 x 2] (or [4 x 2])."""
    corners = corners.expand(H.shape[0], 4, 2) if corners.dim() == 2 else corners
    homog = torch.cat([corners, torch.ones_like(corners[..., :1])], dim=-1)
    mapped = homog @ H.transpose(-1, -2)
    return mapped[..., :2] / mapped[..., 2:3] - corners


def corner_error(H_est: torch.Tensor, H_true: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """[B] mean corner distance in pixels between ``H_est`` and ``H_true``."""
    return (homography_to_four_point(H_est, corners) - homography_to_four_point(H_true, corners)).norm(dim=-1).mean(-1)
