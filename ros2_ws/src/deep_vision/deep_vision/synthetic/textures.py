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


# ------------------------------------------------------------------------------------ indoor
def wall_paint(rng: np.random.Generator) -> np.ndarray:
    """An indoor wall colour: mostly off-white, grey or beige; one wall in four a stronger colour."""
    if rng.random() < 0.25:
        return rng.uniform(60, 230, 3)
    return rng.uniform(150, 240) + rng.uniform(-12, 12, 3)


def indoor_wall_texture(width_px: int, height_px: int, texel_m: float, rng: np.random.Generator,
                        paint: np.ndarray | None = None) -> np.ndarray:
    """[H x W x 3] uint8 corridor wall panel, floor to ceiling (row 0 at the ceiling): painted wall with a
    skirting board, and some of: doors (frame, handle, glass pane), notice boards and posters, glass windows
    into rooms, lockers, fire equipment, light switches. ``paint``: the wall colour (a corridor shares one)."""
    h, w = height_px, width_px
    px = 1.0 / texel_m
    colour = np.asarray(paint if paint is not None else wall_paint(rng), np.float32)
    wall = colourise(fractal_noise((h, w), rng, (4, 30)), colour, 0.06)

    def rect(x0: float, y0: float, x1: float, y1: float, c, thickness: int = -1) -> None:
        """Metres from the panel's left edge and from the floor (y up)."""
        cv2.rectangle(wall, (int(x0 * px), int(h - y1 * px)), (int(x1 * px), int(h - y0 * px)),
                      np.asarray(c, np.float64).tolist(), thickness)

    width_m = w / px
    skirting = rng.uniform(0.05, 0.15)
    rect(0, 0, width_m, skirting, colour * rng.uniform(0.3, 0.8))
    if rng.random() < 0.25:  # a dado rail or a two-tone wall
        y = rng.uniform(0.8, 1.2)
        lower = colour * rng.uniform(0.5, 1.1, 3) if rng.random() < 0.5 else colour * 0.8
        rect(0, skirting, width_m, y, lower)
        rect(0, y, width_m, y + 0.04, colour * 0.6)
    x = rng.uniform(0.1, 0.8)
    while x < width_m - 0.4:
        kind = rng.choice(["door", "board", "window", "lockers", "fire", "switch", "blank"],
                          p=[0.3, 0.2, 0.12, 0.08, 0.06, 0.09, 0.15])
        if kind == "door":
            dw, dh = rng.uniform(0.8, 1.0), rng.uniform(2.0, 2.2)
            if x + dw > width_m - 0.1:
                break
            frame = rng.uniform(20, 240, 3)
            leaf = rng.uniform(30, 220, 3) if rng.random() < 0.7 else frame * 0.9
            rect(x - 0.06, 0, x + dw + 0.06, dh + 0.06, frame)
            rect(x, 0, x + dw, dh, leaf)
            if rng.random() < 0.5:  # glass pane
                rect(x + 0.15, 1.1, x + dw - 0.15, 1.8, rng.uniform(20, 90, 3))
            hx = x + (0.08 if rng.random() < 0.5 else dw - 0.12)
            rect(hx, 0.95, hx + 0.04, 1.05, rng.uniform(120, 230, 3))
            if rng.random() < 0.6:  # room sign
                rect(x + dw + 0.15, 1.45, x + dw + 0.4, 1.65, rng.uniform(0, 255, 3))
            x += dw + 0.5
        elif kind == "board":
            bw, bh = rng.uniform(0.5, 2.0), rng.uniform(0.4, 1.2)
            if x + bw > width_m - 0.1:
                x += 0.3
                continue
            y0 = rng.uniform(1.0, 1.5)
            rect(x, y0, x + bw, y0 + bh, rng.uniform(60, 200, 3))
            for _ in range(int(rng.integers(1, 7))):  # pinned sheets and posters
                sw, sh = rng.uniform(0.15, 0.5), rng.uniform(0.2, 0.6)
                sx, sy = x + rng.uniform(0, max(0.01, bw - sw)), y0 + rng.uniform(0, max(0.01, bh - sh))
                sheet = colourise(fractal_noise((max(2, int(sh * px)), max(2, int(sw * px))), rng, (2, 5)),
                                  rng.uniform(60, 255, 3), 0.5)
                r0, c0 = int(h - (sy + sh) * px), int(sx * px)
                r1, c1 = min(h, r0 + sheet.shape[0]), min(w, c0 + sheet.shape[1])
                if r0 >= 0 and c0 >= 0:
                    wall[r0:r1, c0:c1] = sheet[: r1 - r0, : c1 - c0]
            x += bw + rng.uniform(0.3, 1.0)
        elif kind == "window":
            ww = rng.uniform(0.8, 2.5)
            if x + ww > width_m - 0.1:
                x += 0.3
                continue
            y0 = rng.uniform(0.8, 1.1)
            rect(x - 0.05, y0 - 0.05, x + ww + 0.05, 2.15, rng.uniform(30, 230, 3))
            room = colourise(fractal_noise((max(2, int((2.1 - y0) * px)), max(2, int(ww * px))), rng, (3, 10, 30)),
                             rng.uniform(50, 200, 3), 0.6)
            r0, c0 = int(h - 2.1 * px), int(x * px)
            r1, c1 = min(h, r0 + room.shape[0]), min(w, c0 + room.shape[1])
            if r0 >= 0:
                wall[r0:r1, c0:c1] = room[: r1 - r0, : c1 - c0]
            x += ww + rng.uniform(0.3, 1.5)
        elif kind == "lockers":
            n, lw = int(rng.integers(2, 8)), rng.uniform(0.3, 0.45)
            if x + n * lw > width_m - 0.1:
                x += 0.3
                continue
            body = rng.uniform(40, 220, 3)
            lh = rng.uniform(1.2, 1.9)
            rect(x, 0, x + n * lw, lh, body)
            for k in range(n + 1):
                rect(x + k * lw, 0, x + k * lw + 0.01, lh, body * 0.5)
            for k in range(n):
                rect(x + k * lw + 0.05, lh - 0.25, x + k * lw + 0.2, lh - 0.2, body * 0.4)
            x += n * lw + rng.uniform(0.3, 1.0)
        elif kind == "fire":
            rect(x, 0.9, x + 0.2, 1.4, (200, 30, 25))
            rect(x - 0.05, 1.6, x + 0.3, 1.8, (30, 150, 60) if rng.random() < 0.5 else (200, 30, 25))
            x += 0.6
        elif kind == "switch":
            rect(x, 1.1, x + 0.08, 1.22, colour * 1.05 + 10)
            rect(x, 1.1, x + 0.08, 1.22, colour * 0.6, 1)
            x += 0.3
        else:
            x += rng.uniform(0.5, 2.5)
    return to_uint8(wall)


def floor_texture(height_px: int, width_px: int, texel_m: float, rng: np.random.Generator,
                  plain: bool = False) -> np.ndarray:
    """[H x W x 3] uint8 indoor floor: carpet, tiles or linoleum (one per world); ``plain``: an even carpet
    without wear patches (nothing on it marks a place)."""
    h, w = height_px, width_px
    if plain:
        return to_uint8(colourise(fractal_noise((h, w), rng, (1, 3)), rng.uniform(40, 190, 3), 0.3))
    kind = rng.integers(0, 3)
    colour = rng.uniform(40, 190, 3)
    if kind == 0:  # carpet: fine grain and wear
        floor = colourise(fractal_noise((h, w), rng, (1, 3, 60, 300), (1.0, 0.6, 0.3, 0.3)), colour, 0.35)
    elif kind == 1:  # tiles with grout and per-tile shade
        tile = max(3, int(round(rng.uniform(0.3, 0.6) / texel_m)))
        shade = rng.uniform(0.85, 1.15, (h // tile + 1, w // tile + 1)).astype(np.float32)
        floor = colourise(fractal_noise((h, w), rng, (2, 8)), colour, 0.12)
        floor *= shade[np.arange(h)[:, None] // tile, np.arange(w)[None, :] // tile][..., None]
        grout = ((np.arange(h) % tile) < 1)[:, None] | ((np.arange(w) % tile) < 1)[None, :]
        floor[grout] *= 0.6
    else:  # linoleum: smooth, mottled
        floor = colourise(fractal_noise((h, w), rng, (2, 20, 120), (0.4, 1.0, 0.7)), colour, 0.25)
    return to_uint8(floor)


def ceiling_texture(height_px: int, width_px: int, texel_m: float, rng: np.random.Generator,
                    regular: bool = False) -> np.ndarray:
    """[H x W x 3] uint8 suspended ceiling: tile grid, light panels, vents (one per world); ``regular``: light
    panels on a fixed grid (every few tiles), no vents, so the ceiling looks the same everywhere."""
    h, w = height_px, width_px
    base = rng.uniform(170, 240) * np.array([1.0, 1.0, 1.0]) * rng.uniform(0.92, 1.05, 3)
    ceiling = colourise(fractal_noise((h, w), rng, (1, 4)), base, 0.08)
    tile = max(3, int(round(0.6 / texel_m)))
    grid = ((np.arange(h) % tile) < 2)[:, None] | ((np.arange(w) % tile) < 2)[None, :]
    ceiling[grid] *= 0.8
    rows, cols = h // tile, w // tile
    if regular:
        every = int(rng.integers(2, 5))
        lights = ((np.arange(rows) % every) == 0)[:, None] & ((np.arange(cols) % every) == 0)[None, :]
        vents = np.zeros_like(lights)
    else:
        lights = rng.random((rows, cols)) < rng.uniform(0.05, 0.15)
        vents = rng.random((rows, cols)) < 0.03
    for r, c in zip(*np.nonzero(lights | vents)):
        y0, x0 = r * tile + 3, c * tile + 3
        if lights[r, c]:
            long_ = rng.random() < 0.5
            y1 = y0 + (2 * tile if long_ and r + 1 < rows else tile) - 6
            cv2.rectangle(ceiling, (x0, y0), (x0 + tile - 6, y1), (255, 255, 250), -1)
        else:
            for k in range(4):
                cv2.rectangle(ceiling, (x0 + 2, y0 + 2 + k * (tile // 5)), (x0 + tile - 8, y0 + 4 + k * (tile // 5)),
                              (base * 0.5).tolist(), -1)
    return to_uint8(ceiling)
