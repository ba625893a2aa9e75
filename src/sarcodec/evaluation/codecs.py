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


def htj2k(img_u16: np.ndarray, qstep: float) -> tuple[bytes, np.ndarray]:
    """High-throughput JPEG 2000 (OpenJPH), 16-bit, irreversible, 5 decompositions; ``qstep`` =
    quantisation step (larger = fewer bits). imagecodecs defaults to 0 decompositions, which makes
    a degenerate stream, so they are set explicitly."""
    import imagecodecs

    data = imagecodecs.htj2k_encode(img_u16, level=float(qstep), resolutions=5, reversible=False)
    return data, imagecodecs.htj2k_decode(data)


def jpeg8(img_u16: np.ndarray, quality: float) -> tuple[bytes, np.ndarray]:
    """Baseline JPEG (libjpeg-turbo) on the domain quantised to 8 bits; decoded back to the 16-bit
    scale so that every codec is measured the same way."""
    import imagecodecs

    u8 = np.rint(img_u16 / 257.0).astype(np.uint8)
    data = imagecodecs.jpeg8_encode(u8, level=int(round(quality)))
    return data, imagecodecs.jpeg8_decode(data).astype(np.float64) * 257.0


def avif(img_u16: np.ndarray, quality: float) -> tuple[bytes, np.ndarray]:
    """AVIF (libavif + libaom), 12-bit monochrome (YUV 4:0:0), speed 6, ``quality`` 0-100.
    The domain is rounded to 12 bits (AV1's deepest profile), decoded back to the 16-bit scale.
    imagecodecs codes a 2-D array losslessly whatever the quality, so the image goes in as equal
    R=G=B planes and ``pixelformat=yuv400`` keeps the luma plane only (no chroma bits)."""
    import imagecodecs

    u12 = np.rint(img_u16.astype(np.float64) * (4095.0 / 65535.0)).astype(np.uint16)
    data = imagecodecs.avif_encode(np.dstack([u12] * 3), level=int(round(quality)), bitspersample=12,
                                   pixelformat="yuv400", speed=6, numthreads=1)
    dec = np.asarray(imagecodecs.avif_decode(data), np.float64)
    if dec.ndim == 3:
        dec = dec[..., 0]
    return data, dec * (65535.0 / 4095.0)


def pareto(points: list[dict]) -> list[dict]:
    """The points of a swept curve that improve PSNR as the rate grows (a swept knob can be
    non-monotonic, e.g. HTJ2K at fine steps); what a user would pick, and what BD fits need."""
    out: list[dict] = []
    for p in sorted(points, key=lambda p: p["bpp"]):
        if not out or p["psnr"] > out[-1]["psnr"]:
            out.append(p)
    return out


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
