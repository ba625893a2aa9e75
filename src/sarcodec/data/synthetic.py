"""Synthetic Sentinel-1-like SAR: multiplicative gamma speckle over a procedural reflectivity map.

The map has agricultural fields (piecewise-constant polygons), smooth terrain texture, water
(dark, low backscatter), sharp edges, and bright point targets (ships, buildings: +20-35 dB).
Speckle with L looks: I = R * G, G ~ Gamma(L, 1/L) (unit mean), so ENL of a homogeneous area is L.
"""
from __future__ import annotations

import numpy as np


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: int) -> np.ndarray:
    h, w = shape
    gh, gw = max(2, h // scale + 2), max(2, w // scale + 2)
    g = rng.standard_normal((gh, gw))
    yi = np.linspace(0, gh - 1.001, h)
    xi = np.linspace(0, gw - 1.001, w)
    y0, x0 = yi.astype(int), xi.astype(int)
    fy, fx = (yi - y0)[:, None], (xi - x0)[None, :]
    a = g[y0][:, x0]
    b = g[y0][:, x0 + 1]
    c = g[y0 + 1][:, x0]
    d = g[y0 + 1][:, x0 + 1]
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)  # smoothstep
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def reflectivity_map(shape: tuple[int, int], seed: int = 0, *, n_fields: int | None = None,
                     water_fraction: float = 0.2, n_targets: int | None = None) -> np.ndarray:
    """Noise-free backscatter (linear intensity, median around 0.05 like sigma0)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    # Voronoi fields with distinct mean backscatter (-18 .. -6 dB)
    n_fields = n_fields or max(4, (h * w) // 6000)
    cy, cx = rng.uniform(0, h, n_fields), rng.uniform(0, w, n_fields)
    field_db = rng.uniform(-18, -6, n_fields)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    best = np.full(shape, np.inf, np.float32)
    lab = np.zeros(shape, np.int32)
    for i in range(n_fields):
        d = (yy - cy[i]) ** 2 + (xx - cx[i]) ** 2
        closer = d < best
        best[closer] = d[closer]
        lab[closer] = i
    db = field_db[lab] + 1.5 * _smooth_noise(rng, shape, 24)
    # water: low, smooth region from thresholded large-scale noise
    if water_fraction > 0:
        wn = _smooth_noise(rng, shape, 96)
        thr = np.quantile(wn, 1 - water_fraction)
        db = np.where(wn > thr, -24 + 0.5 * _smooth_noise(rng, shape, 32), db)
    # bright point targets
    n_targets = n_targets if n_targets is not None else max(2, (h * w) // 20000)
    for _ in range(n_targets):
        ty, tx = rng.integers(0, h), rng.integers(0, w)
        r = int(rng.integers(1, 4))
        db[max(0, ty - r):ty + r + 1, max(0, tx - r):tx + r + 1] = rng.uniform(8, 20)
    return (10.0 ** (db / 10.0)).astype(np.float64)


def synthetic_sar(shape: tuple[int, int] = (256, 256), seed: int = 0, looks: float = 4.4,
                  reflectivity: np.ndarray | None = None) -> np.ndarray:
    """Linear-intensity SAR image (float32): reflectivity x unit-mean gamma speckle of ``looks``."""
    rng = np.random.default_rng(seed + 1_000_003)
    r = reflectivity if reflectivity is not None else reflectivity_map(shape, seed)
    speckle = rng.gamma(looks, 1.0 / looks, size=r.shape)
    return (r * speckle).astype(np.float32)
