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


def fidelity(original_intensity: np.ndarray, reconstructed_intensity: np.ndarray) -> dict[str, float]:
    """What SAR analysts check first, on valid pixels (finite, > 0) in linear intensity:
    ``bias_db`` = 10 log10(mean reconstructed / mean original); ``peak_err_db`` = mean |dB error|
    over the brightest 0.1% of the original's pixels (bright-target retention); ``peak_max_db`` =
    |dB error| of the original's brightest pixel; ``max_err_db`` = the largest |dB error|."""
    o = np.asarray(original_intensity, np.float64)
    r = np.asarray(reconstructed_intensity, np.float64)
    ok = np.isfinite(o) & (o > 0)
    o, r = o[ok], np.maximum(np.where(np.isfinite(r[ok]), r[ok], 0.0), 1e-30)
    err = np.abs(10 * np.log10(r) - 10 * np.log10(o))
    k = max(1, int(round(o.size * 0.001)))
    top = np.argpartition(o, o.size - k)[o.size - k:]
    return {"bias_db": float(10 * np.log10(r.mean() / o.mean())), "peak_err_db": float(err[top].mean()),
            "peak_max_db": float(err[np.argmax(o)]), "max_err_db": float(err.max())}


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0) -> float:
    """10 log10(range^2 / MSE), over all pixels; inf for identical images."""
    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(test, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def bpp(n_bytes: int, n_pixels: int) -> float:
    """Bits per pixel from bytes on disk."""
    return 8.0 * n_bytes / n_pixels


def rmse_db(reference_intensity: np.ndarray, test_intensity: np.ndarray) -> float:
    """RMSE in dB between two linear-intensity images (valid, positive pixels only)."""
    a = np.asarray(reference_intensity, np.float64)
    b = np.asarray(test_intensity, np.float64)
    ok = (a > 0) & (b > 0) & np.isfinite(a) & np.isfinite(b)
    return float(np.sqrt(np.mean((10 * np.log10(a[ok]) - 10 * np.log10(b[ok])) ** 2)))


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0) -> float:
    """SSIM (Wang et al. 2004, Gaussian window 11, sigma 1.5) via pytorch-msssim."""
    import torch
    from pytorch_msssim import ssim as _ssim

    a = torch.from_numpy(np.asarray(reference, np.float32))[None, None]
    b = torch.from_numpy(np.asarray(test, np.float32))[None, None]
    return float(_ssim(a, b, data_range=data_range))


def ms_ssim(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0) -> float:
    """MS-SSIM (5 scales). Small images: the window shrinks so that 4 downsamplings still fit
    (pytorch-msssim needs side > (win - 1) * 16); below 3x16+1 px it falls back to SSIM."""
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    side = min(np.shape(reference))
    win = 11
    while win > 3 and side <= (win - 1) * 16:
        win -= 2
    if side <= (win - 1) * 16:
        return ssim(reference, test, data_range)
    a = torch.from_numpy(np.asarray(reference, np.float32))[None, None]
    b = torch.from_numpy(np.asarray(test, np.float32))[None, None]
    return float(_ms_ssim(a, b, data_range=data_range, win_size=win))


def enl(intensity: np.ndarray) -> float:
    """Equivalent number of looks of a homogeneous region of *linear intensity*: mean^2 / variance."""
    x = np.asarray(intensity, np.float64).ravel()
    v = x.var()
    return float(x.mean() ** 2 / v) if v > 0 else float("inf")


def homogeneous_blocks(intensity: np.ndarray, block: int = 16, fraction: float = 0.1) -> list[tuple[int, int]]:
    """Top-left corners of the ``fraction`` most homogeneous blocks of the *original*: those with
    the lowest coefficient of variation of linear intensity (speckle-only areas)."""
    a = np.asarray(intensity, np.float64)
    h, w = (a.shape[0] // block) * block, (a.shape[1] // block) * block
    if h == 0 or w == 0:
        return []
    b = a[:h, :w].reshape(h // block, block, w // block, block)
    mean, std = b.mean(axis=(1, 3)), b.std(axis=(1, 3))
    cv = np.where(mean > 0, std / np.where(mean > 0, mean, 1), np.inf)
    n = max(1, int(round(fraction * cv.size)))
    idx = np.argsort(cv, axis=None)[:n]
    return [(int(i // cv.shape[1]) * block, int(i % cv.shape[1]) * block) for i in idx]


def enl_ratio(original_intensity: np.ndarray, reconstructed_intensity: np.ndarray, block: int = 16,
              fraction: float = 0.1) -> float:
    """Median over homogeneous blocks (found on the original) of ENL(reconstruction) / ENL(original),
    in linear intensity. 1 = speckle statistics kept; > 1 = the codec smoothed the speckle."""
    ratios = []
    for r, c in homogeneous_blocks(original_intensity, block, fraction):
        o = original_intensity[r:r + block, c:c + block]
        x = reconstructed_intensity[r:r + block, c:c + block]
        eo, ex = enl(o), enl(x)
        if np.isfinite(eo) and eo > 0 and np.isfinite(ex):
            ratios.append(ex / eo)
    return float(np.median(ratios)) if ratios else float("nan")


def epi(original: np.ndarray, reconstructed: np.ndarray) -> float:
    """Edge preservation index (Sattar et al. 1997): correlation of the Laplacian-filtered original
    and reconstruction (benchmark domain). 1 = edges kept exactly."""
    from scipy.ndimage import laplace

    a = laplace(np.asarray(original, np.float64))
    b = laplace(np.asarray(reconstructed, np.float64))
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def _pchip_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Integral over [lo, hi] of the piecewise monotone cubic (PCHIP) through the points (x, y);
    of points with equal x the one with the lowest y is kept (the cheaper, for log-rate on PSNR)."""
    from scipy.interpolate import PchipInterpolator

    o = np.lexsort((y, x))
    x, y = x[o], y[o]
    keep = np.concatenate([[True], np.diff(x) > 1e-9])
    if keep.sum() < 2:
        raise ValueError("a Bjøntegaard delta needs at least two points per curve")
    return float(PchipInterpolator(x[keep], y[keep]).integrate(lo, hi))


def _bd_average(x_ref, y_ref, x_test, y_test, pchip: bool = False) -> float:
    """Bjøntegaard: mean of (fit_test - fit_ref) over the overlapping x range, each curve a
    polynomial fit of y on x (cubic with >= 4 points), or with ``pchip`` a piecewise monotone
    cubic through its points."""
    x_ref, y_ref, x_test, y_test = (np.asarray(v, float) for v in (x_ref, y_ref, x_test, y_test))
    if min(len(x_ref), len(x_test)) < 2:
        raise ValueError("a Bjøntegaard delta needs at least two points per curve")
    lo, hi = max(x_ref.min(), x_test.min()), min(x_ref.max(), x_test.max())
    if hi <= lo:
        raise ValueError("the two curves do not overlap")
    if pchip:
        return (_pchip_integral(x_test, y_test, lo, hi) - _pchip_integral(x_ref, y_ref, lo, hi)) / (hi - lo)
    deg = min(3, len(x_ref) - 1, len(x_test) - 1)
    f_ref = np.polyint(np.polyfit(x_ref, y_ref, deg))
    f_test = np.polyint(np.polyfit(x_test, y_test, deg))
    return float(((np.polyval(f_test, hi) - np.polyval(f_test, lo)) - (np.polyval(f_ref, hi) - np.polyval(f_ref, lo))) / (hi - lo))


def bd_rate(rate_ref, psnr_ref, rate_test, psnr_test, pchip: bool = False) -> float:
    """Bjøntegaard delta rate (VCEG-M33), in percent: average bitrate change of ``test`` versus
    ``ref`` at equal PSNR over the overlapping PSNR range (log-rate fitted on PSNR; ``pchip``: see
    :func:`bd_rate_pchip`). Negative = test needs fewer bits."""
    avg = _bd_average(psnr_ref, np.log(np.asarray(rate_ref, float)), psnr_test, np.log(np.asarray(rate_test, float)),
                      pchip)
    return float((np.exp(avg) - 1) * 100)


def bd_rate_pchip(rate_ref, psnr_ref, rate_test, psnr_test) -> float:
    """Bjøntegaard delta rate (percent) with each curve's log-rate interpolated piecewise (monotone
    cubic, PCHIP, as JVET's common test conditions do) instead of one least-squares cubic: it
    follows curves of many points (a search's operating points over 0.02-5 bpp, a codec's sweep)
    locally, where one cubic over the whole range bends with where the points are dense.
    Negative = test needs fewer bits."""
    return bd_rate(rate_ref, psnr_ref, rate_test, psnr_test, pchip=True)


def bd_psnr(rate_ref, psnr_ref, rate_test, psnr_test) -> float:
    """Bjøntegaard delta PSNR (dB): average PSNR gain of ``test`` over ``ref`` at equal log-rate."""
    return _bd_average(np.log(np.asarray(rate_ref, float)), psnr_ref, np.log(np.asarray(rate_test, float)), psnr_test)


def macs_per_pixel(model, size: int = 256, parts: tuple[str, ...] = ("g_a", "g_s")) -> float:
    """Multiply-accumulates per input pixel of a model's g_a + g_s (or the ``parts`` named; conv
    layers, GDN's included), by forward hooks."""
    import torch

    macs = 0

    def hook(mod, inp, out):
        nonlocal macs
        k = mod.weight.shape[1] * mod.weight.shape[2] * mod.weight.shape[3]
        macs += inp[0].numel() * k if isinstance(mod, torch.nn.ConvTranspose2d) else out.numel() * k

    def gdn_hook(mod, inp, out):  # a 1x1 conv of C x C on x^2
        nonlocal macs
        macs += inp[0].numel() * mod.gamma.shape[0]

    from ..models.blocks import GDN

    mods = [m for p in parts for m in getattr(model, p).modules()]
    convs = [mod for mod in mods if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    hs = [mod.register_forward_hook(hook) for mod in convs]
    hs += [mod.register_forward_hook(gdn_hook) for mod in mods if isinstance(mod, GDN)]
    try:
        with torch.no_grad():
            model.g_s(model.g_a(torch.rand(1, 1, size, size)))
    finally:
        for h in hs:
            h.remove()
    return macs / size**2
