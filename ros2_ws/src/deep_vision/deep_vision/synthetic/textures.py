"""Procedural textures (uint8 RGB): fractal noise, asphalt, pavement, grass, façades.

Every texture is drawn from a numpy ``Generator`` so a seed fixes it; each
façade gets its own colours, window grid, shop signs and wall pattern so that
places along the route look different from each other.
"""

from __future__ import annotations

import cv2
import numpy as np


def fractal_noise(shape: tuple[int, int], rng: np.random.Generator, scales: tuple[float, ...],
                  weights: tuple[float, ...] | None = None) -> np.ndarray:
    """[H x W] float32 noise, roughly in [-1, 1]: a weighted sum of smooth noise at feature sizes ``scales`` (px)."""
    h, w = shape
    weights = weights or tuple(1.0 / (i + 1) for i in range(len(scales)))
    out = np.zeros((h, w), np.float32)
    for scale, weight in zip(scales, weights):
        gh, gw = max(2, int(np.ceil(h / scale)) + 1), max(2, int(np.ceil(w / scale)) + 1)
        grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
        layer = cv2.resize(grid, (int(gw * scale), int(gh * scale)), interpolation=cv2.INTER_CUBIC)[:h, :w]
        out += weight * layer
    return out / float(sum(weights))


def colourise(value: np.ndarray, colour: np.ndarray, contrast: float) -> np.ndarray:
    """[H x W x 3] float32 colour image: ``colour`` modulated by ``value`` in [-1, 1]."""
    return np.asarray(colour, np.float32)[None, None, :] * (1.0 + contrast * value[..., None])


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0, 255).astype(np.uint8)


def facade_texture(width_px: int, height_px: int, texel_m: float, rng: np.random.Generator,
                   side: bool = False) -> np.ndarray:
    """[H x W x 3] uint8 building face: wall, floors of windows, ground-floor shops and signs.

    Row 0 is the top of the wall. ``side=True`` gives a plainer side wall.
    """
    h, w = height_px, width_px
    wall_colour = rng.uniform(60, 210, 3)
    wall = colourise(fractal_noise((h, w), rng, (3, 12, 40)), wall_colour, 0.25)
    pattern = rng.integers(0, 3)
    if pattern == 1:  # brick courses
        course = max(2, int(round(0.08 / texel_m)))
        rows = (np.arange(h) // course) % 2
        wall *= (0.88 + 0.12 * rows)[:, None, None]
    elif pattern == 2:  # vertical panels
        panel = max(3, int(round(rng.uniform(0.6, 1.5) / texel_m)))
        cols = (np.arange(w) % panel) < max(1, panel // 10)
        wall[:, cols] *= 0.7
    px = 1.0 / texel_m
    floor_h = rng.uniform(2.8, 3.6)
    n_floors = int((h / px) // floor_h)
    if not side or rng.random() < 0.5:
        win_w = rng.uniform(0.8, 1.8)
        win_h = rng.uniform(1.0, 1.8)
        spacing = win_w + rng.uniform(0.6, 2.5)
        n_cols = max(1, int((w / px - 0.8) // spacing))
        margin = (w / px - n_cols * spacing) / 2 + (spacing - win_w) / 2
        frame_colour = rng.uniform(20, 240, 3)
        for f in range(1 if not side else 0, n_floors):
            top = h - (f + 1) * floor_h * px + 0.6 * px
            for c in range(n_cols):
                if rng.random() < 0.08:
                    continue
                x0 = int((margin + c * spacing) * px)
                y0 = int(top)
                x1, y1 = int(x0 + win_w * px), int(y0 + win_h * px)
                if y0 < 0 or x1 >= w:
                    continue
                glass = rng.uniform(15, 180) * np.array([0.9, 0.95, 1.05]) * rng.uniform(0.8, 1.2, 3)
                cv2.rectangle(wall, (x0 - 2, y0 - 2), (x1 + 2, y1 + 2), frame_colour.tolist(), -1)
                cv2.rectangle(wall, (x0, y0), (x1, y1), glass.tolist(), -1)
                if rng.random() < 0.5:  # mullion
                    xm = (x0 + x1) // 2
                    cv2.line(wall, (xm, y0), (xm, y1), frame_colour.tolist(), 2)
    if not side:
        # Ground floor: shop windows, doors and signs with text-like stripes.
        g_top = int(h - min(floor_h, h / px) * px)
        x = int(rng.uniform(0.3, 1.5) * px)
        while x < w - int(1.5 * px):
            shop_w = int(rng.uniform(2.0, 6.0) * px)
            x1 = min(w - 2, x + shop_w)
            glass = rng.uniform(10, 90, 3)
            cv2.rectangle(wall, (x, g_top + int(1.0 * px)), (x1, h - 1), glass.tolist(), -1)
            sign_colour = rng.uniform(0, 255, 3)
            sy0, sy1 = g_top + int(0.2 * px), g_top + int(0.8 * px)
            cv2.rectangle(wall, (x, sy0), (x1, sy1), sign_colour.tolist(), -1)
            letter_colour = (255 - sign_colour).tolist()
            lx = x + 4
            while lx < x1 - 6:
                lw = int(rng.integers(3, 9))
                if rng.random() < 0.8:
                    cv2.rectangle(wall, (lx, sy0 + 3), (min(lx + lw, x1 - 2), sy1 - 3), letter_colour, -1)
                lx += lw + int(rng.integers(2, 5))
            x = x1 + int(rng.uniform(0.5, 3.0) * px)
    if rng.random() < 0.35:  # a poster or mural
        pw, ph = int(rng.uniform(1.5, 4) * px), int(rng.uniform(1.5, 3) * px)
        if pw < w - 4 and ph < h - 4:
            x0, y0 = int(rng.integers(0, w - pw)), int(rng.integers(0, h - ph))
            mural = colourise(fractal_noise((ph, pw), rng, (4, 16)), rng.uniform(40, 230, 3), 0.9)
            wall[y0 : y0 + ph, x0 : x0 + pw] = mural
    return to_uint8(wall)
