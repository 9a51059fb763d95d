"""The embedded default dataset ``synthetic``: two procedurally drawn subsets in MVTec AD
layout, generated on first use into the cache (no download, no committed images).

* ``weave`` — a plain-woven fabric: warp and weft threads with per-thread brightness jitter,
  waviness, a small random rotation and an arbitrary phase shift. Defects: ``hole`` (dark
  irregular blob of missing threads), ``stain`` (soft colour shift), ``thread`` (a loose,
  slightly curved thread: bright, dark or coloured line), ``contamination`` (a cluster of
  specks) and ``misweave`` (a float: one set of threads passes over the other in a small band,
  a structural defect that keeps the colour statistics).
* ``disc`` — a turned metal washer on a dark mottled background, with a small random shift,
  size, pose (six bolt holes) and light direction. Defects: ``scratch`` (thin straight line),
  ``crack`` (dark polyline from a rim), ``missing_piece`` (a chip out of the rim showing the
  background), ``stain`` (soft discolouration) and ``contamination`` (specks on or next to
  the part).

Every defect draws its own size (``defect_scale`` × a per-image factor) and contrast (uniform
in ``contrast``), so some anomalies are obvious and some barely visible, and normals carry the
nuisance variation (lighting gain and gradient, shifts, pose, sensor noise) that keeps a plain
pixel statistic from separating them. Each mask (0/255) is exactly the set of pixels the
defect changed.

Determinism: each image has its own ``numpy.random.RandomState`` seeded from (seed, subset,
folder, index), and rendering uses only IEEE-exact arithmetic (+ − × ÷ sqrt floor, uniform
draws, linear interpolation) — no sin/exp/log from the maths library and no reductions — so
the decoded pixels are the same on every platform. PNG bytes are identical for the same
Pillow/zlib build (fixed encoder settings, no metadata); a different zlib may compress the
same pixels into other bytes.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from bench.registry import register_dataset

from ..base import Dataset, default_cache_dir

# Bump whenever the generated pixels or the layout change: the cache folder is versioned, so
# old copies are never mistaken for the new output.
GENERATOR_VERSION = 2  # v2: 20 anomalies per class, larger and stronger defects (demo)
MARKER = ".prepared"

# Anomaly classes of each subset, in the order they are generated.
SUBSET_CLASSES: dict[str, tuple[str, ...]] = {
    "weave": ("contamination", "hole", "misweave", "stain", "thread"),
    "disc": ("contamination", "crack", "missing_piece", "scratch", "stain"),
}
DEFAULT_SUBSETS = ("weave", "disc")
# v2 defaults, for the demo's 64 px (half the stored side): at scale 1 the thinnest strokes
# (scratch, crack) fall under one pixel there and the faintest defects under the sensor noise.
DEFAULT_CONTRAST = (0.3, 1.0)
DEFAULT_DEFECT_SCALE = 1.5
# 20 per class: at 10 shots the hard setting's seen-class check set keeps 10 images.
DEFAULT_N_PER_CLASS = 20

# Seconds after which a leftover temporary folder is taken to be from a crashed generator
# (a normal generation takes a few seconds) and may be removed.
_STALE_TMP_S = 3600.0


# -- exact-arithmetic drawing helpers --------------------------------------------------------
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), in pixels."""
    c = np.arange(size, dtype=np.float64) + 0.5
    return c[:, None] + 0.0 * c[None, :], 0.0 * c[:, None] + c[None, :]


def _rot(t: float) -> tuple[float, float]:
    """(cos θ, sin θ) for θ = 2·atan(t), by the rational parametrisation (no libm call)."""
    d = 1.0 + t * t
    return (1.0 - t * t) / d, 2.0 * t / d


def _direction(rng: np.random.RandomState) -> tuple[float, float]:
    """A uniformly random unit vector over the full circle (t ∈ [-1, 1] covers half of it)."""
    c, s = _rot(rng.uniform(-1.0, 1.0))
    return (-c, -s) if rng.randint(2) else (c, s)


def _wave(x: np.ndarray) -> np.ndarray:
    """A smooth sine-like wave of period 1 and range [-1, 1], built from parabolic arches."""
    g = x - np.floor(x)
    h = 2.0 * g - np.floor(2.0 * g)
    return np.where(g < 0.5, 1.0, -1.0) * 4.0 * h * (1.0 - h)


def _bump(q: np.ndarray) -> np.ndarray:
    """Smooth bump with compact support of a squared normalised radius ``q``: 1 at 0, 0 from 1."""
    b = np.clip(1.0 - q, 0.0, 1.0)
    return b * b


def _smooth_noise(rng: np.random.RandomState, size: int, cells: int) -> np.ndarray:
    """Low-frequency value noise in [-1, 1]: a random (cells+1)² grid, smoothstep-interpolated."""
    grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1))
    x = (np.arange(size, dtype=np.float64) + 0.5) / size * cells
    i = np.minimum(np.floor(x).astype(int), cells - 1)
    f = x - i
    f = f * f * (3.0 - 2.0 * f)
    rows = grid[i] * (1.0 - f)[:, None] + grid[i + 1] * f[:, None]          # (size, cells+1)
    return rows[:, i] * (1.0 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _disc_cov(yy, xx, cy: float, cx: float, radius: float) -> np.ndarray:
    """Anti-aliased coverage of a filled circle."""
    d = np.sqrt((xx - cx) * (xx - cx) + (yy - cy) * (yy - cy))
    return np.clip(radius - d + 0.5, 0.0, 1.0)


def _ellipse_cov(yy, xx, cy, cx, a, b, cs: tuple[float, float], soft: bool) -> np.ndarray:
    """Coverage of an ellipse with half-axes ``a``, ``b`` (pixels) turned by ``cs`` = (cos, sin);
    ``soft`` gives a smooth bump instead of an anti-aliased hard edge."""
    c, s = cs
    u = ((xx - cx) * c + (yy - cy) * s) / a
    v = (-(xx - cx) * s + (yy - cy) * c) / b
    q = u * u + v * v
    if soft:
        return _bump(q)
    return np.clip((1.0 - np.sqrt(q)) * min(a, b) + 0.5, 0.0, 1.0)


def _polyline_cov(yy, xx, pts: Sequence[tuple[float, float]], width: float) -> np.ndarray:
    """Anti-aliased coverage of a polyline of (x, y) points with stroke ``width`` (pixels)."""
    dmin = None
    for (ax, ay), (bx, by) in zip(pts[:-1], pts[1:]):
        dx, dy = bx - ax, by - ay
        ll = dx * dx + dy * dy
        if ll > 0:
            t = np.clip(((xx - ax) * dx + (yy - ay) * dy) / ll, 0.0, 1.0)
        else:
            t = 0.0 * xx
        ex, ey = xx - ax - t * dx, yy - ay - t * dy
        d = np.sqrt(ex * ex + ey * ey)
        dmin = d if dmin is None else np.minimum(dmin, d)
    return np.clip(width / 2.0 - dmin + 0.5, 0.0, 1.0)


def _blob(rng, yy, xx, cy, cx, r0, soft: bool, n: tuple[int, int] = (2, 5)) -> np.ndarray:
    """An irregular blob: the union of a few overlapping random ellipses around (cy, cx)."""
    out = 0.0 * xx
    for _ in range(rng.randint(*n)):
        ox, oy = rng.uniform(-0.6, 0.6, size=2) * r0
        a, b = rng.uniform(0.55, 1.1, size=2) * r0
        out = np.maximum(out, _ellipse_cov(yy, xx, cy + oy, cx + ox, max(a, 0.8), max(b, 0.8),
                                           _rot(rng.uniform(-1, 1)), soft))
    return out


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


# -- normal scenes -----------------------------------------------------------------------------
@dataclass
class _Scene:
    """A rendered normal image (float RGB in [0, 1], lit, before sensor noise) and what the
    defects need to know about it."""

    img: np.ndarray
    surface: np.ndarray                 # H×W coverage of the part (where defects may sit)
    layers: dict[str, np.ndarray]       # alternative renderings a defect may reveal
    gain: float                         # global lighting gain (defect colours are lit too)
    geom: dict                          # subset-specific geometry


def _lighting(rng, yy, xx, size: int) -> tuple[np.ndarray, float]:
    """Global gain and a linear illumination gradient: the normals' lighting nuisance."""
    gain = rng.uniform(0.85, 1.12)
    gx, gy = rng.uniform(-0.16, 0.16, size=2)
    return gain * (1.0 + gx * (xx / size - 0.5) + gy * (yy / size - 0.5)), gain


def _weave_scene(rng: np.random.RandomState, size: int) -> _Scene:
    """Plain weave: warp (vertical) and weft threads alternate over/under like a chessboard."""
    k = size / 128.0
    yy, xx = _grid(size)
    period = k * rng.uniform(7.7, 8.3)
    c, s = _rot(rng.uniform(-0.03, 0.03))           # about ±3.4 degrees
    ox, oy = rng.uniform(0.0, 2.0 * period, size=2)  # the pattern repeats every two threads
    u = (c * xx + s * yy + ox) / period
    v = (-s * xx + c * yy + oy) / period
    amp = rng.uniform(0.04, 0.1)                    # thread waviness, in thread widths
    wl = rng.uniform(5.0, 9.0)
    p1, p2 = rng.uniform(0.0, 1.0, size=2)
    u, v = u + amp * _wave(v / wl + p1), v + amp * _wave(u / wl + p2)
    i, j = np.floor(u), np.floor(v)
    fu, fv = u - i, v - j
    gains_w = 1.0 + rng.uniform(-0.08, 0.08, size=64)   # per-thread yarn brightness
    gains_f = 1.0 + rng.uniform(-0.08, 0.08, size=64)
    gw = gains_w[np.mod(i, 64).astype(int)]
    gf = gains_f[np.mod(j, 64).astype(int)]
    # Round yarn: brightest along its centre line, dark gaps between threads; a thread is
    # darker where it dives under its neighbour (ends of its cell along its length).
    warp = np.sqrt(4.0 * fu * (1.0 - fu)) * (0.7 + 1.2 * fv * (1.0 - fv)) * gw
    weft = np.sqrt(4.0 * fv * (1.0 - fv)) * (0.7 + 1.2 * fu * (1.0 - fu)) * gf
    tint = 1.0 + rng.uniform(-0.025, 0.025, size=3)
    warp_col = np.array([0.72, 0.66, 0.55]) * tint
    weft_col = np.array([0.80, 0.74, 0.62]) * tint
    warp_rgb = 0.08 + warp[..., None] * warp_col
    weft_rgb = 0.08 + weft[..., None] * weft_col
    top_warp = (np.mod(i + j, 2) == 0)[..., None]
    light, gain = _lighting(rng, yy, xx, size)
    img = np.where(top_warp, warp_rgb, weft_rgb) * light[..., None]
    # A float (misweave): in the faulty band one thread system lies on top, unbound, so it
    # shows continuous glossy stripes without the crossing gaps of the weave.
    float_warp = bool(rng.randint(2))
    if float_warp:
        straight = (np.sqrt(4.0 * fu * (1.0 - fu)) * 1.1 * gw)[..., None] * warp_col
    else:
        straight = (np.sqrt(4.0 * fv * (1.0 - fv)) * 1.1 * gf)[..., None] * weft_col
    float_img = (0.08 + straight) * light[..., None]
    return _Scene(img, np.ones((size, size)), {"float": float_img}, gain,
                  {"cos": c, "sin": s, "period": period, "float_warp": float_warp})


def _disc_scene(rng: np.random.RandomState, size: int) -> _Scene:
    """A turned metal washer with six bolt holes, lit from a random side, on a dark mat."""
    k = size / 128.0
    yy, xx = _grid(size)
    bg_col = np.array([0.19, 0.20, 0.23]) * (1.0 + rng.uniform(-0.06, 0.06, size=3))
    bg = bg_col * (1.0 + 0.15 * _smooth_noise(rng, size, 4))[..., None]
    cx, cy = size / 2.0 + k * rng.uniform(-3.0, 3.0, size=2)
    R = k * rng.uniform(43.0, 47.0)
    r_in = R * rng.uniform(0.30, 0.34)
    dx, dy = xx - cx, yy - cy
    r = np.sqrt(dx * dx + dy * dy)
    lc, ls = _direction(rng)
    strength = rng.uniform(0.12, 0.25)
    shade = 0.8 + strength * (dx * lc + dy * ls) / R
    # Lathe marks: fine concentric rings, a 1-D random profile along the radius.
    step = 0.7 * k
    profile = rng.uniform(-1.0, 1.0, size=int(size / step) + 2)
    rings = np.interp(r, np.arange(profile.size) * step, profile)
    hx, hy = cx + 0.35 * R * lc, cy + 0.35 * R * ls
    spec = rng.uniform(0.06, 0.18) * _bump(((xx - hx) ** 2 + (yy - hy) ** 2) / (0.5 * R) ** 2)
    metal_col = np.array([0.66, 0.63, 0.58]) * (1.0 + rng.uniform(-0.04, 0.04, size=3))
    metal = metal_col * (shade + 0.035 * rings)[..., None] + spec[..., None]
    groove = np.clip(0.9 * k - np.abs(r - 0.62 * R) + 0.5, 0.0, 1.0)
    bevel = np.clip((r - (R - 3.0 * k)) / (3.0 * k), 0.0, 1.0)
    holes = 0.0 * xx
    c0, s0 = _rot(rng.uniform(-1.0, 1.0))           # pose; the 6-fold symmetry covers the rest
    c60, s60 = 0.5, math.sqrt(3.0) / 2.0
    for _ in range(6):
        holes = np.maximum(holes, _disc_cov(yy, xx, cy + 0.8 * R * s0, cx + 0.8 * R * c0,
                                            0.07 * R))
        c0, s0 = c0 * c60 - s0 * s60, s0 * c60 + c0 * s60
    metal = metal * ((1.0 - 0.45 * groove) * (1.0 - 0.3 * bevel) * (1.0 - 0.6 * holes))[..., None]
    cov = np.clip(R - r + 0.5, 0.0, 1.0) * np.clip(r - r_in + 0.5, 0.0, 1.0)
    # The part's soft shadow on the mat, opposite the light.
    sh = _disc_cov(yy, xx, cy - 2.5 * k * ls, cx - 2.5 * k * lc, R + 1.5 * k)
    bg_lit = bg * (1.0 - 0.35 * sh)[..., None]
    light, gain = _lighting(rng, yy, xx, size)
    img = (bg_lit * (1.0 - cov)[..., None] + metal * cov[..., None]) * light[..., None]
    return _Scene(img, cov, {"background": bg_lit * light[..., None]}, gain,
                  {"cx": cx, "cy": cy, "R": R, "r_in": r_in})


# -- defects -----------------------------------------------------------------------------------
# A defect returns (shape, target, amplitude): shape ∈ [0, 1] is where it sits, target the
# colour it pulls those pixels towards, amplitude (from the image's contrast c) how far.
_Defect = Callable[..., tuple[np.ndarray, np.ndarray, float]]


def _const(col, scene: _Scene) -> np.ndarray:
    return np.broadcast_to(np.asarray(col, dtype=np.float64) * scene.gain, scene.img.shape)


def _point_in_image(rng, size: int, margin: float) -> tuple[float, float]:
    return tuple(rng.uniform(margin, size - margin, size=2))


def _point_on_disc(rng, scene: _Scene, margin: float) -> tuple[float, float]:
    g = scene.geom
    rad = rng.uniform(g["r_in"] + margin, g["R"] - margin)
    c, s = _direction(rng)
    return g["cx"] + rad * c, g["cy"] + rad * s


def _weave_hole(rng, scene, yy, xx, size, c, z):
    k = size / 128.0
    x0, y0 = _point_in_image(rng, size, 12 * k)
    shape = _blob(rng, yy, xx, y0, x0, k * rng.uniform(4.5, 9.0) * z, soft=False)
    return shape, _const([0.05, 0.045, 0.04], scene), 0.35 + 0.65 * c


def _stain(rng, scene, yy, xx, size, c, z, palette, where, r_lo, r_hi):
    """Soft multiplicative colour shift; ``where`` picks its centre."""
    k = size / 128.0
    x0, y0 = where()
    shape = _blob(rng, yy, xx, y0, x0, k * rng.uniform(r_lo, r_hi) * z, soft=True, n=(2, 4))
    tint = np.asarray(palette[rng.randint(len(palette))])
    return shape * scene.surface, scene.img * tint, 0.15 + 0.85 * c


def _weave_stain(rng, scene, yy, xx, size, c, z):
    palette = [(0.8, 0.55, 0.2), (0.45, 0.55, 0.95), (0.5, 0.5, 0.5), (0.9, 0.4, 0.35)]
    return _stain(rng, scene, yy, xx, size, c, z, palette,
                  lambda: _point_in_image(rng, size, 10 * size / 128.0), 9.0, 18.0)


def _weave_thread(rng, scene, yy, xx, size, c, z):
    """A loose thread: a gently curved stroke (quadratic Bézier)."""
    k = size / 128.0
    x0, y0 = _point_in_image(rng, size, 14 * k)
    dc, ds = _direction(rng)
    length = k * rng.uniform(30.0, 70.0) * z
    bend = rng.uniform(-0.3, 0.3) * length
    x2, y2 = x0 + length * dc, y0 + length * ds
    x1, y1 = (x0 + x2) / 2 - bend * ds, (y0 + y2) / 2 + bend * dc
    pts = []
    for n in range(9):
        t = n / 8.0
        a, b, d = (1 - t) * (1 - t), 2 * t * (1 - t), t * t
        pts.append((a * x0 + b * x1 + d * x2, a * y0 + b * y1 + d * y2))
    width = max(1.0, k * rng.uniform(1.6, 3.0) * math.sqrt(z))
    cols = [(0.95, 0.93, 0.88), (0.12, 0.1, 0.08), (0.7, 0.18, 0.15), (0.2, 0.3, 0.65)]
    col = cols[rng.randint(len(cols))]
    return _polyline_cov(yy, xx, pts, width), _const(col, scene), 0.3 + 0.7 * c


def _specks(rng, scene, yy, xx, size, c, z, x0, y0, palette):
    """A cluster of one to five small round specks around (x0, y0)."""
    k = size / 128.0
    col = palette[rng.randint(len(palette))]
    shape = 0.0 * xx
    for _ in range(rng.randint(1, 6)):
        ox, oy = rng.uniform(-12.0, 12.0, size=2) * k * z
        rad = max(0.9, k * rng.uniform(1.3, 3.0) * math.sqrt(z))
        shape = np.maximum(shape, _disc_cov(yy, xx, y0 + oy, x0 + ox, rad))
    return shape, _const(col, scene), 0.4 + 0.6 * c


def _weave_contamination(rng, scene, yy, xx, size, c, z):
    x0, y0 = _point_in_image(rng, size, 14 * size / 128.0)
    palette = [(0.03, 0.03, 0.03), (0.15, 0.45, 0.15), (0.1, 0.15, 0.5), (0.45, 0.25, 0.1)]
    return _specks(rng, scene, yy, xx, size, c, z, x0, y0, palette)


def _weave_misweave(rng, scene, yy, xx, size, c, z):
    """A float: in a band a few threads wide, one thread system stays on top."""
    k = size / 128.0
    g = scene.geom
    x0, y0 = _point_in_image(rng, size, 14 * k)
    p = g["period"]
    half_across = p * rng.uniform(1.0, 2.5) * math.sqrt(z)
    half_along = p * rng.uniform(2.5, 5.0) * z
    cc, ss = g["cos"], g["sin"]
    du = (xx - x0) * cc + (yy - y0) * ss            # across the warp threads
    dv = -(xx - x0) * ss + (yy - y0) * cc           # along the warp threads
    a, b = (half_across, half_along) if g["float_warp"] else (half_along, half_across)
    shape = (np.clip(a - np.abs(du) + 0.5, 0.0, 1.0) * np.clip(b - np.abs(dv) + 0.5, 0.0, 1.0))
    return shape, scene.layers["float"], 0.5 + 0.5 * c


def _disc_scratch(rng, scene, yy, xx, size, c, z):
    k = size / 128.0
    x0, y0 = _point_on_disc(rng, scene, 3 * k)
    dc, ds = _direction(rng)
    half = k * rng.uniform(10.0, 26.0) * z
    pts = [(x0 - half * dc, y0 - half * ds), (x0 + half * dc, y0 + half * ds)]
    width = max(0.9, k * rng.uniform(1.2, 2.2) * math.sqrt(z))
    col = (0.97, 0.96, 0.93) if rng.randint(2) else (0.2, 0.19, 0.18)
    return _polyline_cov(yy, xx, pts, width) * scene.surface, _const(col, scene), 0.25 + 0.75 * c


def _disc_crack(rng, scene, yy, xx, size, c, z):
    """A dark jagged polyline that starts at the outer or inner rim and runs into the part."""
    k = size / 128.0
    g = scene.geom
    dc, ds = _direction(rng)
    outer = rng.rand() < 0.7
    rad = g["R"] - 1.0 if outer else g["r_in"] + 1.0
    x, y = g["cx"] + rad * dc, g["cy"] + rad * ds
    hx, hy = (-dc, -ds) if outer else (dc, ds)       # heading into the material
    tc, ts = _rot(rng.uniform(-0.3, 0.3))
    hx, hy = hx * tc - hy * ts, hy * tc + hx * ts
    pts = [(x, y)]
    for _ in range(rng.randint(4, 8)):
        step = k * rng.uniform(3.5, 7.0) * z
        tc, ts = _rot(rng.uniform(-0.35, 0.35))
        hx, hy = hx * tc - hy * ts, hy * tc + hx * ts
        x, y = x + step * hx, y + step * hy
        pts.append((x, y))
    width = max(0.9, k * rng.uniform(1.2, 2.2) * math.sqrt(z))
    shape = _polyline_cov(yy, xx, pts, width) * scene.surface
    return shape, _const([0.05, 0.045, 0.04], scene), 0.45 + 0.55 * c


def _disc_missing_piece(rng, scene, yy, xx, size, c, z):
    """A chip out of the outer rim: the background shows where the metal was."""
    k = size / 128.0
    g = scene.geom
    dc, ds = _direction(rng)
    rad = g["R"] * rng.uniform(0.97, 1.06)
    rho = k * rng.uniform(6.0, 13.0) * z
    chip = _disc_cov(yy, xx, g["cy"] + rad * ds, g["cx"] + rad * dc, max(rho, 1.5))
    return chip * scene.surface, scene.layers["background"], 0.6 + 0.4 * c


def _disc_stain(rng, scene, yy, xx, size, c, z):
    palette = [(0.95, 0.5, 0.25), (0.45, 0.5, 0.95), (0.45, 0.42, 0.38), (0.55, 0.85, 0.5)]
    return _stain(rng, scene, yy, xx, size, c, z, palette,
                  lambda: _point_on_disc(rng, scene, 4 * size / 128.0), 7.0, 14.0)


def _disc_contamination(rng, scene, yy, xx, size, c, z):
    """Specks on the part or on the mat next to it; colours chosen to differ from the ground."""
    g = scene.geom
    dc, ds = _direction(rng)
    rad = g["R"] * rng.uniform(0.0, 1.2)
    x0, y0 = g["cx"] + rad * dc, g["cy"] + rad * ds
    on_part = g["r_in"] < rad < g["R"]
    palette = ([(0.03, 0.03, 0.03), (0.2, 0.5, 0.2), (0.55, 0.3, 0.1)] if on_part else
               [(0.95, 0.95, 0.9), (0.35, 0.75, 0.35), (0.95, 0.6, 0.2)])
    return _specks(rng, scene, yy, xx, size, c, z, x0, y0, palette)


_SCENES: dict[str, Callable[[np.random.RandomState, int], _Scene]] = {
    "weave": _weave_scene, "disc": _disc_scene}
_DEFECTS: dict[str, dict[str, _Defect]] = {
    "weave": {"contamination": _weave_contamination, "hole": _weave_hole,
              "misweave": _weave_misweave, "stain": _weave_stain, "thread": _weave_thread},
    "disc": {"contamination": _disc_contamination, "crack": _disc_crack,
             "missing_piece": _disc_missing_piece, "scratch": _disc_scratch,
             "stain": _disc_stain},
}
assert all(tuple(sorted(_DEFECTS[s])) == SUBSET_CLASSES[s] for s in SUBSET_CLASSES)


# -- one image ---------------------------------------------------------------------------------
@dataclass
class Sample:
    """One generated image: ``image`` (uint8 H×W×3), ``mask`` (uint8 H×W, 0/255; None for a
    normal image) and ``clean`` (the same image without its defect, noise included)."""

    image: np.ndarray
    mask: Optional[np.ndarray]
    clean: np.ndarray


def _image_rng(seed: int, subset: str, group: str, index: int) -> np.random.RandomState:
    # crc32, not hash(): Python salts str hashes per process.
    key = [seed & 0xFFFFFFFF, zlib.crc32(subset.encode()), zlib.crc32(group.encode()),
           index & 0xFFFFFFFF]
    return np.random.RandomState(np.array(key, dtype=np.uint32))


def _check_subset(subset: str, defect: Optional[str] = None) -> None:
    if subset not in SUBSET_CLASSES:
        raise ValueError(f"unknown synthetic subset {subset!r}; known: "
                         f"{', '.join(SUBSET_CLASSES)}")
    if defect is not None and defect not in SUBSET_CLASSES[subset]:
        raise ValueError(f"unknown defect class {defect!r} of synthetic subset {subset!r}; "
                         f"known: {', '.join(SUBSET_CLASSES[subset])}")


def render_sample(subset: str, defect: Optional[str] = None, *, split: str = "test",
                  index: int = 0, seed: int = 0, size: int = 128,
                  contrast: tuple[float, float] = DEFAULT_CONTRAST,
                  defect_scale: float = DEFAULT_DEFECT_SCALE) -> Sample:
    """Render one image exactly as :func:`generate_layout` writes it.

    ``defect`` None gives a normal image of ``split`` ("train" or "test"); otherwise an anomaly
    of that class (``split`` is then always "test"). ``index`` is the file number in its folder;
    ``contrast`` the range the per-image contrast is drawn from (0 invisible … 1 full);
    ``defect_scale`` multiplies every defect's size (pixels scale with ``size`` / 128)."""
    _check_subset(subset, defect)
    group = f"{split}/good" if defect is None else f"test/{defect}"
    rng = _image_rng(seed, subset, group, index)
    scene = _SCENES[subset](rng, size)
    img = scene.img
    mask = None
    if defect is not None:
        yy, xx = _grid(size)
        # Redraw the rare defect that lands (almost) entirely off the part, so every anomaly
        # has a non-empty mask; the retries come from the same stream, so stay deterministic.
        for _ in range(50):
            c = rng.uniform(*contrast)
            z = defect_scale * rng.uniform(0.5, 1.5)
            shape, target, amp = _DEFECTS[subset][defect](rng, scene, yy, xx, size, c, z)
            # Cut the faint fringe so the mask is exactly the set of changed pixels.
            shape = np.where(shape >= 0.1, shape, 0.0)
            if np.count_nonzero(shape) >= 4:
                break
        else:  # pragma: no cover - needs a degenerate size/scale
            raise RuntimeError(f"could not place a {defect!r} defect on {subset!r} at size "
                               f"{size} with defect_scale {defect_scale}")
        alpha = (min(amp, 1.0) * shape)[..., None]
        img = img + alpha * (target - img)
        mask = np.where(shape > 0, 255, 0).astype(np.uint8)
    # Sensor noise (triangular, per channel), the same for the clean and the defective image.
    sigma = rng.uniform(0.008, 0.022)
    noise = sigma * (rng.uniform(-1.0, 1.0, size=img.shape) + rng.uniform(-1.0, 1.0,
                                                                           size=img.shape))
    return Sample(_to_uint8(img + noise), mask, _to_uint8(scene.img + noise))


# -- the whole layout --------------------------------------------------------------------------
def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    # Fixed encoder settings and no metadata chunks: same pixels → same bytes (same zlib).
    Image.fromarray(arr).save(path, format="PNG", compress_level=1, optimize=False)


def _params(subsets, size, n_train, n_test_good, n_per_class, contrast, defect_scale,
            seed) -> dict:
    return {"version": GENERATOR_VERSION, "subsets": list(subsets), "size": int(size),
            "n_train": int(n_train), "n_test_good": int(n_test_good),
            "n_per_class": int(n_per_class), "contrast": [float(contrast[0]),
                                                          float(contrast[1])],
            "defect_scale": float(defect_scale), "seed": int(seed)}


def _read_marker(root: Path) -> Optional[dict]:
    try:
        return json.loads((root / MARKER).read_text()).get("params")
    except (OSError, ValueError, AttributeError):
        return None


def _remove_stale_tmp(out: Path) -> None:
    """Remove temporary folders of generators that crashed long ago (best effort)."""
    now = time.time()
    for p in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            if now - p.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _write_layout(root: Path, p: dict) -> None:
    for subset in p["subsets"]:
        kw = dict(seed=p["seed"], size=p["size"], contrast=tuple(p["contrast"]),
                  defect_scale=p["defect_scale"])
        for split, n in (("train", p["n_train"]), ("test", p["n_test_good"])):
            folder = root / subset / split / "good"
            folder.mkdir(parents=True)
            for i in range(n):
                _save_png(render_sample(subset, None, split=split, index=i, **kw).image,
                          folder / f"{i:03d}.png")
        for cls in SUBSET_CLASSES[subset]:
            img_dir = root / subset / "test" / cls
            mask_dir = root / subset / "ground_truth" / cls
            img_dir.mkdir(parents=True)
            mask_dir.mkdir(parents=True)
            for i in range(p["n_per_class"]):
                s = render_sample(subset, cls, index=i, **kw)
                _save_png(s.image, img_dir / f"{i:03d}.png")
                _save_png(s.mask, mask_dir / f"{i:03d}_mask.png")


def generate_layout(out: Path | str, *, subsets: Sequence[str] = DEFAULT_SUBSETS,
                    size: int = 128, n_train: int = 48, n_test_good: int = 20,
                    n_per_class: int = DEFAULT_N_PER_CLASS,
                    contrast: tuple[float, float] = DEFAULT_CONTRAST,
                    defect_scale: float = DEFAULT_DEFECT_SCALE, seed: int = 0) -> None:
    """Write the synthetic dataset in MVTec AD layout to ``out`` (one folder per subset).

    ``size``: image side in pixels; ``n_train`` / ``n_test_good``: normal images per subset in
    train/good and test/good; ``n_per_class``: anomalies per defect class; ``contrast``:
    (lo, hi) in [0, 1], each anomaly's contrast is uniform in it (use e.g. (0.8, 1.0) for
    obvious defects); ``defect_scale``: multiplies all defect sizes (2.0 large, 0.5 tiny);
    ``seed``: changes every image.

    Atomic: the files are written to a temporary sibling folder, which is renamed to ``out``
    with the ``.prepared`` marker already inside, so a crash never leaves a folder that looks
    complete. If ``out`` already holds a finished layout with the same parameters (e.g. a
    concurrent process won the race) nothing is written; any other existing non-empty ``out``
    is an error."""
    out = Path(out).expanduser()
    subsets = tuple(subsets)
    for s in subsets:
        _check_subset(s)
    if not subsets or len(set(subsets)) != len(subsets):
        raise ValueError(f"subsets must be a non-empty list without repeats, got {subsets}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    if n_train < 1 or n_test_good < 1 or n_per_class < 1:
        raise ValueError(f"n_train, n_test_good and n_per_class must be >= 1, got "
                         f"{n_train}, {n_test_good}, {n_per_class}")
    lo, hi = (float(x) for x in contrast)
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"contrast must be (lo, hi) with 0 <= lo <= hi <= 1, got {contrast}")
    if not defect_scale > 0:
        raise ValueError(f"defect_scale must be > 0, got {defect_scale}")
    params = _params(subsets, size, n_train, n_test_good, n_per_class, (lo, hi), defect_scale,
                     seed)

    if out.is_dir() and any(out.iterdir()):
        if _read_marker(out) == params:
            return
        raise FileExistsError(f"{out} already exists and is not an identical synthetic "
                              f"layout; remove it or choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(out)
    # Sibling of ``out`` (same file system, so the rename is atomic), hidden and named after
    # it so a leftover from a crash is recognisable and never read as a dataset.
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        _write_layout(tmp, params)
        (tmp / MARKER).write_text(json.dumps(
            {"generator": "osad-bench synthetic", "params": params}, indent=1) + "\n")
        try:
            # POSIX rename replaces an empty directory and fails on a non-empty one.
            os.rename(tmp, out)
        except OSError:
            if _read_marker(out) == params:
                return  # another process finished first; its copy is identical
            raise FileExistsError(f"cannot move the generated dataset into {out}: the folder "
                                  f"appeared meanwhile with other content; remove it and "
                                  f"retry") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def synthetic_root() -> Path:
    """Cache folder of the default synthetic dataset (``$BENCH_CACHE_DIR/synthetic/v<N>``)."""
    return default_cache_dir() / "synthetic" / f"v{GENERATOR_VERSION}"


@register_dataset("synthetic")
class Synthetic(Dataset):
    """The embedded demo dataset, generated into the cache on first use."""

    title = "Synthetic woven fabric and machined disc with painted defects (demo)"
    source = "generated by osad-bench (no download)"
    license = "Apache-2.0 (generated by this project)"
    subsets = list(DEFAULT_SUBSETS)
    paper_img_size = 64           # a demo dataset: small images keep the quick preset fast
    paper_outliers = None
    exposure_outliers = "synthetic"  # SAOE: the other subset
    expected_counts = {s: {"train_good": 48, "test_good": 20,
                           "anomalies": {c: DEFAULT_N_PER_CLASS for c in SUBSET_CLASSES[s]}}
                       for s in DEFAULT_SUBSETS}
    # The demo preset's hard-setting known class per subset: the class with the largest mean
    # defect area (tests/datasets/test_synthetic.py checks the rule on the generated masks),
    # a rule about the data, not about any method's result.
    demo_known_classes = {"weave": ["misweave"], "disc": ["stain"]}

    def root(self, data_root: Path) -> Path:
        # Generated data lives in the cache, not under the data root of real datasets.
        return synthetic_root()

    def is_prepared(self, data_root: Path) -> bool:
        return (self.root(data_root) / MARKER).is_file()

    def locate(self, data_root: Path) -> Path:
        """The dataset root, generated first if missing (a few seconds)."""
        root = self.root(data_root)
        if not self.is_prepared(data_root):
            try:
                generate_layout(root)
            except OSError as exc:
                raise OSError(f"cannot generate the synthetic dataset under {root}: {exc}. "
                              f"Set BENCH_CACHE_DIR to a writable folder.") from exc
        return root
