"""Render the synthetic world through a pinhole camera.

Every surface is a plane, so each is drawn with one perspective warp of its
texture (texture → image homography) into its projected bounding box, with a
z-buffer of inverse depth (affine in pixel coordinates for a plane) deciding
visibility. Textures are mip-mapped: the ground by distance band, each façade
by its distance, which keeps far surfaces from aliasing. Sky and distance haze
make the horizon plausible. Indoor worlds have a ceiling: a second horizontal
plane, drawn like the ground.
"""

from __future__ import annotations

import cv2
import numpy as np

from deep_vision.geometry.camera import PinholeCamera
from deep_vision.geometry.transforms import invert_transform
from deep_vision.synthetic.world import Face, Ground, World

NEAR_M = 0.3  # near clipping plane


def _level_matrix(level: int) -> np.ndarray:
    """Map level-L texel coordinates to level-0 texel coordinates (pyrDown halves, centres aligned)."""
    f = float(2**level)
    return np.array([[f, 0.0, 0.5 * f - 0.5], [0.0, f, 0.5 * f - 0.5], [0.0, 0.0, 1.0]])


def _clip_near(points_cam: np.ndarray, near: float) -> np.ndarray:
    """Sutherland–Hodgman clip of a polygon [N x 3] (camera frame) to z >= near."""
    out = []
    n = len(points_cam)
    for i in range(n):
        a, b = points_cam[i], points_cam[(i + 1) % n]
        a_in, b_in = a[2] >= near, b[2] >= near
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.asarray(out).reshape(-1, 3)


class Renderer:
    """Renders frames of one world for one camera; reuses pixel grids between frames."""

    def __init__(self, world: World, camera: PinholeCamera, sensor_noise: float = 0.0,
                 haze_distance_m: float = 250.0) -> None:
        self.world = world
        self.camera = camera
        self.sensor_noise = sensor_noise
        self.haze_distance_m = haze_distance_m
        self.K = camera.K
        self.K_inv = np.linalg.inv(self.K)
        w, h = camera.width, camera.height
        self.u = np.arange(w, dtype=np.float32)[None, :]
        self.v = np.arange(h, dtype=np.float32)[:, None]

    def _affine_map(self, coeffs: np.ndarray, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """a·u + b·v + c over the image (or a window of it)."""
        a, b, c = (np.float32(x) for x in coeffs)
        return a * self.u[:, cols] + (b * self.v[rows] + c)

    def render(self, T_world_cam: np.ndarray, rng: np.random.Generator | None = None, *,
               depth: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Render the view of a camera at ``T_world_cam`` (optical frame); [H x W] or [H x W x 3] uint8.

        ``depth``: also return the [H x W] float32 depth of each pixel centre (metres along the optical axis,
        inf where the sky is): ``(image, depth)``.
        """
        C = self.world.channels
        T_cam_world = invert_transform(T_world_cam)
        R_cw, t_cw = T_cam_world[:3, :3], T_cam_world[:3, 3]
        R_wc = T_world_cam[:3, :3]
        centre = T_world_cam[:3, 3]

        # Ray direction z-component in the world, per pixel: (R_wc K⁻¹ [u v 1])_z, affine in (u, v).
        ray_z = self._affine_map(R_wc[2] @ self.K_inv)
        # Ground (z = 0): inverse depth 1/z_cam = -ray_z / camera height.
        inv_depth = -ray_z / np.float32(centre[2])
        image = self._sky(ray_z)
        ground_mask = inv_depth > 1.0 / 5000.0
        zbuf = np.where(ground_mask, inv_depth, np.float32(0.0))
        self._draw_plane(image, self.world.ground, 0.0, inv_depth, ground_mask, R_cw, t_cw, centre[2])
        if self.world.ceiling is not None:
            above = float(self.world.ceiling_z - centre[2])
            inv_depth_c = ray_z / np.float32(above)
            ceiling_mask = inv_depth_c > 1.0 / 5000.0
            zbuf = np.where(ceiling_mask, inv_depth_c, zbuf)
            self._draw_plane(image, self.world.ceiling, self.world.ceiling_z, inv_depth_c, ceiling_mask, R_cw, t_cw,
                             above)
        for face in self._visible_faces(centre):
            self._draw_face(image, zbuf, face, R_cw, t_cw)
        if self.sensor_noise > 0 and rng is not None:
            image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(self.sensor_noise)
        out = np.clip(image, 0, 255).astype(np.uint8)
        out = out[..., 0] if C == 1 else out
        if not depth:
            return out
        z = np.full(zbuf.shape, np.inf, np.float32)
        np.divide(np.float32(1.0), zbuf, out=z, where=zbuf > 0)
        return out, z

    # -- sky and ground ------------------------------------------------------------------
    def _sky(self, ray_z: np.ndarray) -> np.ndarray:
        # Elevation proxy: ray_z of K⁻¹[u v 1] rotated (not normalised: fine for a gradient).
        t = np.clip(2.0 * ray_z, 0.0, 1.0)[..., None]
        horizon, zenith = self._colour(self.world.sky_horizon), self._colour(self.world.sky_zenith)
        return horizon + (zenith - horizon) * t

    def _colour(self, rgb: np.ndarray) -> np.ndarray:
        if self.world.channels == 1:
            return np.float32([0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]])
        return rgb.astype(np.float32)

    def _draw_plane(self, image: np.ndarray, plane: Ground, plane_z: float, inv_depth: np.ndarray,
                    mask: np.ndarray, R_cw: np.ndarray, t_cw: np.ndarray, height: float) -> None:
        """The horizontal textured ``plane`` at ``plane_z`` (the ground, or a ceiling), ``height`` metres from the
        camera."""
        H, W, C = image.shape
        if not mask.any():
            return
        depth = 1.0 / np.maximum(inv_depth, 1e-6)
        # Texel footprint (geometric mean of the two axes on the slanted ground).
        footprint = depth / (self.camera.fx * plane.texel_m) * np.sqrt(np.maximum(depth / height, 1.0))
        level = np.clip(np.floor(np.log2(np.maximum(footprint, 1.0))), 0, len(plane.levels) - 1).astype(np.int32)
        level[~mask] = -1
        plane_to_img = self.K @ np.column_stack([R_cw[:, 0], R_cw[:, 1], R_cw[:, 2] * plane_z + t_cw]) @ \
            plane.texel_to_world
        rows_any = [np.flatnonzero((level == L).any(axis=1)) for L in range(len(plane.levels))]
        for L, rows in enumerate(rows_any):
            if len(rows) == 0:
                continue
            r0, r1 = int(rows[0]), int(rows[-1]) + 1
            shift = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -r0], [0.0, 0.0, 1.0]])
            Hm = shift @ plane_to_img @ _level_matrix(L)
            warped = cv2.warpPerspective(plane.levels[L], Hm, (W, r1 - r0), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REFLECT_101).reshape(r1 - r0, W, C)
            sel = level[r0:r1] == L
            image[r0:r1][sel] = warped[sel]
        haze = np.exp(-depth / self.haze_distance_m)[..., None]
        blended = image * haze + self._colour(self.world.haze) * (1.0 - haze)
        image[mask] = blended[mask]

    # -- buildings -----------------------------------------------------------------------
    def _visible_faces(self, centre: np.ndarray) -> list[Face]:
        faces = [f for f in self.world.faces if f.normal @ (centre - f.origin) > 0]  # back-face culling
        # Far to near is not needed with the z-buffer, but drawing near first skips hidden pixels early.
        return sorted(faces, key=lambda f: np.linalg.norm(f.origin[:2] + f.e_u[:2] * f.width_m / 2 - centre[:2]))

    def _draw_face(self, image: np.ndarray, zbuf: np.ndarray, face: Face, R_cw: np.ndarray, t_cw: np.ndarray) -> None:
        H, W, C = image.shape
        corners_cam = face.corners @ R_cw.T + t_cw
        poly = _clip_near(corners_cam, NEAR_M)
        if len(poly) < 3:
            return
        uv = (poly @ self.K.T)
        uv = uv[:, :2] / uv[:, 2:3]
        x0, y0 = np.floor(uv.min(axis=0)).astype(int)
        x1, y1 = np.ceil(uv.max(axis=0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        if x0 >= x1 or y0 >= y1:
            return
        bw, bh = x1 - x0, y1 - y0
        # Level of detail from the median depth of the visible polygon.
        footprint = float(np.median(poly[:, 2])) / (self.camera.fx * face.texel_m)
        L = int(np.clip(np.floor(np.log2(max(footprint, 1.0))), 0, len(face.levels) - 1))
        s = face.texel_m
        down = np.array([0.0, 0.0, -1.0])
        origin = face.origin + 0.5 * s * face.e_u + 0.5 * s * down
        tex_to_cam = np.column_stack([R_cw @ (face.e_u * s), R_cw @ (down * s), R_cw @ origin + t_cw])
        shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
        Hm = shift @ self.K @ tex_to_cam @ _level_matrix(L)
        warped = cv2.warpPerspective(face.levels[L], Hm, (bw, bh), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE).reshape(bh, bw, C)
        mask = np.zeros((bh, bw), np.uint8)
        pts = np.round((uv - [x0, y0]) * 16).astype(np.int32)
        cv2.fillConvexPoly(mask, pts, 1, lineType=cv2.LINE_8, shift=4)
        # Inverse depth of the face's plane nᵀX = d (camera frame) at each pixel: nᵀK⁻¹[u v 1] / d.
        n_cam = R_cw @ face.normal
        d = float(n_cam @ (R_cw @ face.origin + t_cw))
        coeffs = (n_cam @ self.K_inv) / d
        inv_depth = self._affine_map(coeffs, slice(y0, y1), slice(x0, x1))
        sel = (mask > 0) & (inv_depth > zbuf[y0:y1, x0:x1])
        if not sel.any():
            return
        zbuf[y0:y1, x0:x1][sel] = inv_depth[sel]
        image[y0:y1, x0:x1][sel] = warped[sel] * np.float32(face.shade)
