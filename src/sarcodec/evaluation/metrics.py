"""Metrics, each with its domain stated.

Benchmark domain (ANCHORS.md): dB = 10 log10(intensity), clipped to the *original* image's own
0.1 / 99.9 percentiles, scaled to [0, 1]. The reconstruction is mapped with the original's
parameters, so both images share one scale. PSNR there uses data range 1.
"""
from __future__ import annotations

import math

import numpy as np

from ..radiometry import Radiometry


class BenchmarkDomain:
    """Maps linear-intensity images to the benchmark domain of one original image."""

    def __init__(self, original_intensity: np.ndarray, low_pct: float = 0.1, high_pct: float = 99.9):
        self.radiometry = Radiometry.fit(original_intensity, "intensity", low_pct=low_pct, high_pct=high_pct)

    def __call__(self, intensity: np.ndarray) -> np.ndarray:
        v, _ = self.radiometry.forward(intensity)
        return v.astype(np.float64)

    def to_uint16(self, intensity: np.ndarray) -> np.ndarray:
        """What traditional codecs are given: the benchmark domain quantised to 16 bits."""
        return np.rint(self(intensity) * 65535).astype(np.uint16)


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0) -> float:
    """10 log10(range^2 / MSE), over all pixels; inf for identical images."""
    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(test, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def bpp(n_bytes: int, n_pixels: int) -> float:
    """Bits per pixel from bytes on disk."""
    return 8.0 * n_bytes / n_pixels
