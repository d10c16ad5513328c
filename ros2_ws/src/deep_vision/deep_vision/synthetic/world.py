"""The synthetic world: a textured ground plane and box-shaped buildings along a closed route
(``scene.kind: street``), or a corridor along the route: walls, floor and ceiling (``indoor``).

World frame: x, y on the ground, z up (metres). The ground texture is a
top-down map: texel (column c, row r) covers the point
``x = x_min + (c + ½)·s, y = y_max − (r + ½)·s`` with ``s`` the texel size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from deep_vision.synthetic.config import SceneConfig, SyntheticWorldConfig
from deep_vision.synthetic.route import ClosedRoute
from deep_vision.synthetic.textures import (
    ceiling_texture,
    facade_texture,
    floor_texture,
    fractal_noise,
    indoor_wall_texture,
    wall_paint,
)

logger = logging.getLogger(__name__)

Z = np.array([0.0, 0.0, 1.0])


def pyramid(texture: np.ndarray, min_size: int = 8) -> list[np.ndarray]:
    """Mip-map levels of a texture (level 0 first), each [h x w x C] uint8."""
    levels = [texture]
    while min(levels[-1].shape[:2]) >= 2 * min_size:
        down = cv2.pyrDown(levels[-1])
        levels.append(down.reshape(down.shape[0], down.shape[1], -1))
    return levels


@dataclass
class Face:
    """A vertical textured rectangle (one side of a building).

    ``origin`` is the top-left corner seen from outside, ``e_u`` the unit
    direction of texture columns (left to right seen from outside); rows run
    down the wall. The outward normal is ``e_u × z``.
    """

    origin: np.ndarray  # [3]
    e_u: np.ndarray  # [3]
    width_m: float
    height_m: float
    texel_m: float
    levels: list[np.ndarray]  # texture pyramid
    shade: float  # sunlight factor applied to the texture

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.e_u, Z)

    @property
    def corners(self) -> np.ndarray:
        """[4 x 3] corners: top-left, top-right, bottom-right, bottom-left."""
        o, u, h = self.origin, self.e_u * self.width_m, Z * self.height_m
        return np.stack([o, o + u, o + u - h, o - h])


@dataclass
class Ground:
    levels: list[np.ndarray]
    x_min: float
    y_max: float
    texel_m: float

    @property
    def texel_to_world(self) -> np.ndarray:
        """[3 x 3] map from level-0 texel (c, r, 1) to ground point (x, y, 1)."""
        s = self.texel_m
        return np.array([[s, 0.0, self.x_min + 0.5 * s], [0.0, -s, self.y_max - 0.5 * s], [0.0, 0.0, 1.0]])


@dataclass
class World:
    ground: Ground
    faces: list[Face]
    route: ClosedRoute
    channels: int  # 1 (grey) or 3 (RGB)
    sky_horizon: np.ndarray = field(default_factory=lambda: np.array([205.0, 215.0, 225.0]))
    sky_zenith: np.ndarray = field(default_factory=lambda: np.array([110.0, 150.0, 210.0]))
    haze: np.ndarray = field(default_factory=lambda: np.array([185.0, 190.0, 195.0]))
    ceiling: Ground | None = None  # indoor: the ceiling plane's texture (seen from below)
    ceiling_z: float = 0.0  # its height (m)


def _to_channels(texture: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        return cv2.cvtColor(texture, cv2.COLOR_RGB2GRAY)[..., None]
    return texture


def _ground_texture(route: ClosedRoute, conf: SceneConfig, bounds: tuple[float, float, float, float],
                    rng: np.random.Generator) -> np.ndarray:
    """[H x W x 3] uint8 top-down map: grass, pavement, asphalt with markings, crossings and patches."""
    x_min, x_max, y_min, y_max = bounds
    s = conf.ground_texel_m
    W, H = int(np.ceil((x_max - x_min) / s)), int(np.ceil((y_max - y_min) / s))
    # Nearest centre-line sample of every texel, through a labelled distance transform.
    samples = np.arange(0.0, route.length, s / 2)
    pts, tangents = route.centre(samples)
    cols = np.clip(((pts[:, 0] - x_min) / s).astype(int), 0, W - 1)
    rows = np.clip(((y_max - pts[:, 1]) / s).astype(int), 0, H - 1)
    src = np.full((H, W), 255, np.uint8)
    src[rows, cols] = 0
    _, labels = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    # Label k belongs to the k-th zero pixel in raster order.
    zero_r, zero_c = np.nonzero(src == 0)
    sample_of_pixel = np.full((H, W), -1, np.int64)
    sample_of_pixel[rows, cols] = np.arange(len(samples))
    label_sample = np.zeros(labels.max() + 1, np.int64)
    label_sample[labels[zero_r, zero_c]] = sample_of_pixel[zero_r, zero_c]
    nearest = label_sample[labels]
    del labels, src, sample_of_pixel
    xs = (x_min + (np.arange(W, dtype=np.float32) + 0.5) * s)[None, :]
    ys = (y_max - (np.arange(H, dtype=np.float32) + 0.5) * s)[:, None]
    dx = xs - pts[nearest, 0].astype(np.float32)
    dy = ys - pts[nearest, 1].astype(np.float32)
    # Signed lateral coordinate (left of the driving direction positive) and arc length.
    lateral = tangents[nearest, 0].astype(np.float32) * dy - tangents[nearest, 1].astype(np.float32) * dx
    along = samples[nearest].astype(np.float32)
    del dx, dy, nearest
    dist = np.abs(lateral)

    half_road = conf.road_width_m / 2
    # Material per texel (0 grass, 1 pavement, 2 asphalt), each with its own noise; one RGB pass at the end.
    material = np.zeros((H, W), np.uint8)
    material[dist < half_road + conf.sidewalk_m] = 1
    material[dist < half_road] = 2
    value = fractal_noise((H, W), rng, (2, 9, 60, 400), (1.0, 0.8, 0.6, 0.5))
    pavement = fractal_noise((H, W), rng, (1.5, 6, 120))
    tile = max(2, int(round(0.6 / s)))
    grid = ((np.arange(W) % tile) == 0)[None, :] | ((np.arange(H) % tile) == 0)[:, None]
    pavement[grid] -= 1.4
    np.copyto(value, pavement, where=material == 1)
    del pavement, grid
    asphalt = fractal_noise((H, W), rng, (1, 3, 25, 250), (1.0, 0.7, 0.5, 0.6))
    np.copyto(value, asphalt, where=material == 2)
    del asphalt
    base = np.array([[95, 120, 70], [170, 165, 150], [85, 85, 88]], np.float32)
    contrast = np.array([0.55, 0.18, 0.35], np.float32)
    gain = 1.0 + contrast[material] * value
    image = np.empty((H, W, 3), np.uint8)
    for ch in range(3):
        image[..., ch] = np.clip(base[material, ch] * gain, 0, 255)
    del gain, value, material
    # Patches, manholes and stains at random places along the road.
    for _ in range(int(route.length / 6)):
        a = rng.uniform(0, route.length)
        (p,), (t,) = route.centre(np.array([a]))
        off = rng.uniform(-half_road + 0.5, half_road - 0.5)
        cx = (p[0] - t[1] * off - x_min) / s
        cy = (y_max - (p[1] + t[0] * off)) / s
        kind = rng.integers(0, 3)
        colour = (rng.uniform(40, 130),) * 3
        if kind == 0:
            cv2.circle(image, (int(cx), int(cy)), int(0.35 / s), colour, -1)
            cv2.circle(image, (int(cx), int(cy)), int(0.35 / s), (30, 30, 30), 2)
        else:
            w, h = rng.uniform(0.5, 3.0) / s, rng.uniform(0.5, 2.0) / s
            box = cv2.boxPoints(((cx, cy), (w, h), rng.uniform(0, 180)))
            cv2.fillConvexPoly(image, box.astype(np.int32), colour)
    # Lane markings: solid edge lines, dashed centre line, zebra crossings.
    paint = np.zeros((H, W), bool)
    paint |= (dist > half_road - 0.35) & (dist < half_road - 0.2)
    paint |= (dist < 0.07) & (np.mod(along, 9.0) < 3.0)
    for a in rng.uniform(0, route.length, max(1, int(route.length / 120))):
        crossing = (np.abs(along - a) < 2.0) & (dist < half_road - 0.4)
        paint |= crossing & (np.mod(lateral + 20.0, 1.0) < 0.5)
    image[paint] = (0.25 * image[paint] + 0.75 * 235.0).astype(np.uint8)
    return image


def _buildings(route: ClosedRoute, corners: np.ndarray, conf: SceneConfig, rng: np.random.Generator,
               channels: int) -> list[Face]:
    """Box buildings along both sides of every edge of the route polygon."""
    sun_az, sun_el = np.deg2rad(conf.sun_azimuth_deg), np.deg2rad(conf.sun_elevation_deg)
    sun = np.array([np.cos(sun_el) * np.cos(sun_az), np.cos(sun_el) * np.sin(sun_az), np.sin(sun_el)])
    faces: list[Face] = []
    s = conf.facade_texel_m
    n = len(corners)
    for i in range(n):
        p0, p1 = corners[i], corners[(i + 1) % n]
        length = float(np.linalg.norm(p1 - p0))
        d = (p1 - p0) / length
        left = np.array([-d[1], d[0]])
        for side in ("outer", "inner"):
            out = -left if side == "outer" else left  # away from the road, on this side
            setback_range = conf.setback_m if side == "outer" else conf.inner_setback_m
            depth_max = conf.building_depth_m[1] if side == "outer" else min(conf.building_depth_m[1], 8.0)
            margin = 0.0 if side == "outer" else setback_range[1] + depth_max + 1.0
            u = margin + rng.uniform(*conf.building_gap_m)
            while True:
                width = rng.uniform(*conf.building_width_m)
                if u + width > length - margin:
                    break
                setback = rng.uniform(*setback_range)
                depth = rng.uniform(conf.building_depth_m[0], depth_max)
                height = rng.uniform(*conf.building_height_m)
                # Footprint corners: front edge (near the road) then back edge.
                fa = p0 + d * u + out * setback
                fb = p0 + d * (u + width) + out * setback
                ba, bb = fa + out * depth, fb + out * depth
                # Each face's columns run left to right seen from outside (normal = e_u × z).
                for a, b, front in ((fa, fb, True), (fb, bb, False), (ba, fa, False), (bb, ba, False)):
                    e2 = b - a
                    w_m = float(np.linalg.norm(e2))
                    e_u = np.array([e2[0], e2[1], 0.0]) / w_m
                    if np.cross(e_u, Z)[:2] @ ((a + b) / 2 - (fa + fb + ba + bb) / 4) < 0:
                        a, b = b, a
                        e_u = -e_u
                    tex = facade_texture(max(4, int(w_m / s)), max(4, int(height / s)), s, rng, side=not front)
                    normal = np.cross(e_u, Z)
                    shade = 0.55 + 0.45 * max(0.0, float(normal @ sun))
                    faces.append(Face(
                        origin=np.array([a[0], a[1], height]), e_u=e_u, width_m=w_m, height_m=height,
                        texel_m=s, levels=pyramid(_to_channels(tex, channels)), shade=shade,
                    ))
                u += width + rng.uniform(*conf.building_gap_m)
    return faces


def building_faces(config: SyntheticWorldConfig) -> list[Face]:
    """The building faces (indoor: wall panels) of ``config``'s world (their own random stream: cheap to rebuild
    alone)."""
    rng = np.random.default_rng([config.seed, 3])
    route = ClosedRoute(config.route.corners, config.route.corner_radius_m)
    corners = np.asarray(config.route.corners, dtype=np.float64)
    channels = 1 if config.camera.encoding == "mono8" else 3
    if config.scene.kind == "indoor":
        return _corridor_walls(corners, config.scene, ceiling_height(config), rng, channels)
    return _buildings(route, corners, config.scene, rng, channels)


def ceiling_height(config: SyntheticWorldConfig) -> float:
    """Indoor worlds: the ceiling's height (m), drawn from ``scene.ceiling_m`` by the seed."""
    return float(np.random.default_rng([config.seed, 4]).uniform(*config.scene.ceiling_m))


def _offset_polygon(corners: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Vertices of the polygon whose edge i runs parallel to ``corners``' edge i, ``offsets[i]`` to its left."""
    n = len(corners)
    d = np.roll(corners, -1, axis=0) - corners
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    left = np.c_[-d[:, 1], d[:, 0]]
    out = np.empty_like(corners)
    for j in range(n):
        i = j - 1  # the edges meeting at vertex j: i (incoming) and j (outgoing)
        a, b = corners[j] + left[i] * offsets[i], corners[j] + left[j] * offsets[j]
        A = np.column_stack([d[i], -d[j]])
        if abs(np.linalg.det(A)) < 1e-9:  # straight through
            out[j] = b
        else:
            s = np.linalg.solve(A, b - a)
            out[j] = a + s[0] * d[i]
    return out


class _NewPanels:
    """Corridor wall panels, each its own texture (``indoor_wall_texture``) in the corridor's paint; the paint
    changes on a new wall and, one edge in three or so, on a new stretch of the corridor."""

    def __init__(self, conf: SceneConfig, ceiling_z: float, s: float, rng: np.random.Generator,
                 channels: int) -> None:
        self.conf, self.ceiling_z, self.s, self.rng, self.channels = conf, ceiling_z, s, rng, channels
        self.paint: np.ndarray | None = None

    def new_wall(self) -> None:
        self.paint = wall_paint(self.rng)

    def new_edge(self) -> None:
        if self.rng.random() < 0.3:
            self.paint = wall_paint(self.rng)  # another stretch of the corridor, another colour

    def width(self) -> float:
        return float(self.rng.uniform(*self.conf.wall_panel_m))

    def texture(self, w_m: float) -> np.ndarray:
        tex = indoor_wall_texture(max(4, round(w_m / self.s)), max(4, round(self.ceiling_z / self.s)), self.s,
                                  self.rng, paint=self.paint)
        return _to_channels(tex, self.channels)


class _RepeatedPanels(_NewPanels):
    """``scene.wall_designs`` panel designs in one paint, drawn again and again along both walls (a panel longer
    than its design, at the end of an edge, repeats the design; one shorter shows its left part)."""

    def __init__(self, conf: SceneConfig, ceiling_z: float, s: float, rng: np.random.Generator,
                 channels: int) -> None:
        super().__init__(conf, ceiling_z, s, rng, channels)
        super().new_wall()  # the one paint
        self.designs = []
        for _ in range(conf.wall_designs):
            w_m = super().width()
            self.designs.append((w_m, super().texture(w_m)))
        self.chosen = self.designs[0][1]

    def new_wall(self) -> None:
        pass

    def new_edge(self) -> None:
        pass

    def width(self) -> float:
        w_m, self.chosen = self.designs[int(self.rng.integers(len(self.designs)))]
        return w_m

    def texture(self, w_m: float) -> np.ndarray:
        cols = max(4, round(w_m / self.s))
        return np.ascontiguousarray(np.tile(self.chosen, (1, -(-cols // self.chosen.shape[1]), 1))[:, :cols])


def _corridor_walls(corners: np.ndarray, conf: SceneConfig, ceiling_z: float, rng: np.random.Generator,
                    channels: int) -> list[Face]:
    """Walls floor to ceiling on both sides of every route edge (the route runs counter-clockwise: its inside is
    on the left), cut into panels of ``wall_panel_m`` facing the corridor: each with a texture of its own, or
    (``scene.wall_designs``) one of a few designs repeated."""
    n = len(corners)
    widths = rng.uniform(*conf.corridor_width_m, n)
    s = conf.facade_texel_m / 2.5  # walls are seen from a metre or two
    panels = (_RepeatedPanels if conf.wall_designs else _NewPanels)(conf, ceiling_z, s, rng, channels)
    faces: list[Face] = []
    for side in (1.0, -1.0):  # left (inner) wall, right (outer) wall
        poly = _offset_polygon(corners, side * widths / 2)
        panels.new_wall()
        for i in range(n):
            a, b = (poly[i], poly[(i + 1) % n]) if side > 0 else (poly[(i + 1) % n], poly[i])
            # Columns run left to right seen from the corridor: the normal e_u x z points into the corridor.
            length = float(np.linalg.norm(b - a))
            e2 = (b - a) / length
            e_u = np.array([e2[0], e2[1], 0.0])
            panels.new_edge()
            u = 0.0
            while u < length - 1e-6:
                w_m = min(panels.width(), length - u)
                if length - u - w_m < 0.5:  # no sliver at the end
                    w_m = length - u
                tex = panels.texture(w_m)
                o = a + e2 * u
                faces.append(Face(origin=np.array([o[0], o[1], ceiling_z]), e_u=e_u, width_m=w_m,
                                  height_m=ceiling_z, texel_m=s, levels=pyramid(tex),
                                  shade=float(rng.uniform(0.8, 1.0))))
                u += w_m
    return faces


def _build_indoor(config: SyntheticWorldConfig, route: ClosedRoute, corners: np.ndarray, channels: int) -> World:
    conf = config.scene
    rng = np.random.default_rng([config.seed, 1])
    ceiling_z = ceiling_height(config)
    m = max(conf.corridor_width_m) + 1.0
    bounds = (corners[:, 0].min() - m, corners[:, 0].max() + m, corners[:, 1].min() - m, corners[:, 1].max() + m)
    texel = conf.ground_texel_m / 2  # the camera is close to the floor
    W, H = int(np.ceil((bounds[1] - bounds[0]) / texel)), int(np.ceil((bounds[3] - bounds[2]) / texel))
    repetitive = conf.wall_designs > 0
    floor = Ground(levels=pyramid(_to_channels(floor_texture(H, W, texel, rng, plain=repetitive), channels)),
                   x_min=bounds[0], y_max=bounds[3], texel_m=texel)
    ceiling = Ground(levels=pyramid(_to_channels(ceiling_texture(H, W, texel, rng, regular=repetitive), channels)),
                     x_min=bounds[0], y_max=bounds[3], texel_m=texel)
    faces = building_faces(config)
    logger.info("synthetic indoor world: route %.0f m, %d wall panels, ceiling %.2f m", route.length, len(faces),
                ceiling_z)
    return World(ground=floor, faces=faces, route=route, channels=channels, ceiling=ceiling, ceiling_z=ceiling_z)


def build_world(config: SyntheticWorldConfig) -> World:
    """Generate the world of ``config`` (deterministic from ``config.seed``)."""
    route = ClosedRoute(config.route.corners, config.route.corner_radius_m)
    corners = np.asarray(config.route.corners, dtype=np.float64)
    channels = 1 if config.camera.encoding == "mono8" else 3
    if config.scene.kind == "indoor":
        return _build_indoor(config, route, corners, channels)
    rng = np.random.default_rng([config.seed, 1])
    m = config.scene.margin_m
    bounds = (corners[:, 0].min() - m, corners[:, 0].max() + m, corners[:, 1].min() - m, corners[:, 1].max() + m)
    ground_rgb = _ground_texture(route, config.scene, bounds, rng)
    ground = Ground(
        levels=pyramid(_to_channels(ground_rgb, channels)), x_min=bounds[0], y_max=bounds[3],
        texel_m=config.scene.ground_texel_m,
    )
    del ground_rgb
    faces = building_faces(config)
    logger.info("synthetic world: route %.0f m, %d building faces, ground %dx%d texels",
                route.length, len(faces), ground.levels[0].shape[1], ground.levels[0].shape[0])
    return World(ground=ground, faces=faces, route=route, channels=channels)
