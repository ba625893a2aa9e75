"""Traditional codecs through imagecodecs, on the benchmark domain given as uint16."""
from __future__ import annotations

from typing import Callable

import numpy as np


def jpeg2000(img_u16: np.ndarray, level: float) -> tuple[bytes, np.ndarray]:
    """OpenJPEG, 16-bit, irreversible 9/7, fixed-quality mode (``level`` = target PSNR in dB)."""
    import imagecodecs

    data = imagecodecs.jpeg2k_encode(img_u16, level=float(level), codecformat="j2k", numthreads=1)
    return data, imagecodecs.jpeg2k_decode(data)


def jpegxl(img_u16: np.ndarray, distance: float) -> tuple[bytes, np.ndarray]:
    """libjxl, 16-bit, effort 7, butteraugli ``distance`` (lower = better)."""
    import imagecodecs

    data = imagecodecs.jpegxl_encode(img_u16, distance=float(distance), effort=7, numthreads=1)
    return data, imagecodecs.jpegxl_decode(data)


def match_bytes(codec: Callable[[np.ndarray, float], tuple[bytes, np.ndarray]], img_u16: np.ndarray,
                target_bytes: int, lo: float, hi: float, increasing: bool = True, iters: int = 18
                ) -> tuple[bytes, np.ndarray, float]:
    """Bisect the quality knob for the largest output not exceeding ``target_bytes``."""
    best = None
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        data, dec = codec(img_u16, mid)
        fits = len(data) <= target_bytes
        if fits:
            best = (data, dec, mid)
        if fits == increasing:
            lo = mid
        else:
            hi = mid
    if best is None:
        data, dec = codec(img_u16, lo)
        best = (data, dec, lo)
    return best
