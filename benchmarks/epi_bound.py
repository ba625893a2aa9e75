"""What edge preservation (EPI) a rate allows: a Gaussian model of each image beside the measured curves.

    python benchmarks/epi_bound.py [--split val|test] [--results docs/benchmark/results.json]

EPI (Sattar et al. 1997, ``sarcodec.evaluation.metrics.epi``) is the correlation of the
Laplacian-filtered original and reconstruction. The Laplacian weights frequency by
|L(w)|^2 = (4 sin^2(wx/2) + 4 sin^2(wy/2))^2, so EPI is set by how much of the image's
*high-frequency* energy a codec keeps, and on SAR that energy is mostly speckle, close to white.

The model: the image (benchmark domain) as a stationary Gaussian field with its own power
spectrum (Welch, 64 px Hann windows). Reverse water-filling gives the best distortion spectrum
D(w) at a rate R for the weighted error sum g(w) D(w), with g = (1 - beta) + beta |L|^2/mean|L|^2:
beta = 0 is MSE (what every codec in the benchmark optimises), beta = 1 spends every bit on the
Laplacian error (the most EPI a rate can buy). The reconstruction that reaches D keeps
S(w) - D(w) of each frequency's variance, so EPI = sqrt(1 - sum |L|^2 D / sum |L|^2 S) and
PSNR = -10 log10(mean D) on the [0, 1] domain.

A white Gaussian field at R = 1 bit/pixel: EPI sqrt(1 - 2^-2) = 0.866 under MSE, 0.918 at best.
Non-Gaussian structure (edges, bright targets) lets real codecs do somewhat better than the model
at low rates; speckle, which dominates |L|^2-weighted energy, is close to the model's case.

With ``--results`` (a ``sarcodec benchmark`` results.json) the measured EPI of each curve at
1 bpp, and the rate at which it first reaches 0.9, are printed beside the model's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402

from sarcodec.data.scenes import default_data_dir, read_intensity  # noqa: E402
from sarcodec.evaluation.benchmark import at_rate, benchmark_scenes  # noqa: E402
from sarcodec.evaluation.codecs import pareto  # noqa: E402
from sarcodec.evaluation.metrics import BenchmarkDomain  # noqa: E402

WIN = 64
BETAS = (0.0, 0.5, 0.9, 1.0)


def laplacian_gain(n: int = WIN) -> np.ndarray:
    """|L(w)|^2 of scipy.ndimage.laplace's 5-point kernel on an n x n frequency grid."""
    w = np.fft.fftfreq(n) * 2 * np.pi
    wx, wy = np.meshgrid(w, w)
    return (4 * np.sin(wx / 2) ** 2 + 4 * np.sin(wy / 2) ** 2) ** 2


def spectrum(x: np.ndarray, n: int = WIN) -> np.ndarray:
    """Welch power spectrum per pixel (mean over frequencies = variance): Hann windows, half overlap."""
    win = np.outer(np.hanning(n), np.hanning(n))
    win /= np.sqrt((win ** 2).mean())
    x = x - x.mean()
    h, w = x.shape
    acc, k = np.zeros((n, n)), 0
    for i in range(0, h - n + 1, n // 2):
        for j in range(0, w - n + 1, n // 2):
            acc += np.abs(np.fft.fft2(x[i:i + n, j:j + n] * win)) ** 2 / (n * n)
            k += 1
    return np.maximum(acc / max(k, 1), 1e-20)


def water_fill(s: np.ndarray, rate: float) -> np.ndarray:
    """Reverse water-filling: the distortion per frequency min(theta, s) at mean rate ``rate`` bits."""
    lo, hi = 1e-30, float(s.max())
    for _ in range(200):
        t = np.sqrt(lo * hi)
        with np.errstate(divide="ignore"):  # a weight-0 frequency (beta = 1, DC) has s = 0
            r = np.mean(np.maximum(0.0, 0.5 * np.log2(s / t)))
        lo, hi = (t, hi) if r > rate else (lo, t)
    return np.minimum(hi, s)


def model(s: np.ndarray, rate: float, beta: float) -> tuple[float, float]:
    """(EPI, PSNR dB) of the Gaussian model of spectrum ``s`` at ``rate`` for the weight ``beta``."""
    lap = laplacian_gain(s.shape[0])
    g = (1 - beta) + beta * lap / lap.mean()
    d = water_fill(g * s, rate) / np.maximum(g, 1e-12)
    d = np.where(g > 1e-12, d, s)  # a frequency of weight 0 gets no bits
    epi = float(np.sqrt(max(0.0, 1 - (lap * d).sum() / (lap * s).sum())))
    return epi, float(-10 * np.log10(d.mean()))


def rate_for(s: np.ndarray, target: float = 0.9, beta: float = 0.0) -> float:
    """The smallest rate (bits/pixel) at which the model's EPI reaches ``target``."""
    lo, hi = 0.0, 8.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if model(s, mid, beta)[0] < target else (lo, mid)
    return hi


def measured(points: list[dict], target: float = 0.9) -> tuple[float | None, float | None]:
    """(EPI at 1 bpp, first bpp at which EPI >= target) of a curve's Pareto points."""
    pts = sorted(pareto(points), key=lambda p: p["bpp"])
    at1 = at_rate(pts, 1.0, "epi")
    first = None
    for a, b in zip(pts, pts[1:]):
        if a["epi"] < target <= b["epi"]:
            la, lb = np.log(a["bpp"]), np.log(b["bpp"])
            first = float(np.exp(la + (target - a["epi"]) / (b["epi"] - a["epi"]) * (lb - la)))
            break
    return at1, first


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--split", choices=("test", "val"), default="val")
    ap.add_argument("--val-locations", default="mexico-b,sen1floods11-spain-6860600,sar2sar-ramb")
    ap.add_argument("--results", default=None, help="a sarcodec benchmark results.json (same images)")
    ap.add_argument("--curves", default="default-quality-ladder,jpeg2000,avif")
    a = ap.parse_args()
    root = a.data or default_data_dir()
    if root is None:
        sys.exit("no data: pass --data or place ../shared/sar")
    scenes = benchmark_scenes(root, a.split, tuple(a.val_locations.split(",")))
    if not scenes:
        sys.exit(f"no {a.split} images under {root}")
    try:
        res = json.loads(Path(a.results).read_text())["images"] if a.results else {}
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"--results: not a sarcodec benchmark results.json ({e})")
    curves = a.curves.split(",")
    head = "| image | model R(EPI 0.9) | " + " | ".join(f"model EPI@1 beta={b:g} (PSNR)" for b in BETAS)
    if res:
        head += " | " + " | ".join(f"{c} EPI@1 / R(0.9)" for c in curves)
    print(head + " |")
    print("|---" * (head.count("|") - 1) + "|")
    rows = []
    for sc in scenes:
        img = read_intensity(sc.path)
        x = np.nan_to_num(BenchmarkDomain(img)(img))
        s = spectrum(x)
        m = [model(s, 1.0, b) for b in BETAS]
        r9 = rate_for(s)
        line = f"| {sc.path.name} | {r9:.2f} | " + " | ".join(f"{e:.3f} ({p:.1f})" for e, p in m)
        meas = []
        if res:
            for c in curves:
                e1, f9 = measured(res.get(sc.path.name, {}).get(c, {}).get("points", []))
                meas.append((e1, f9))
                line += " | " + (f"{e1:.3f}" if e1 is not None else "-") + " / " + (f"{f9:.2f}" if f9 else "-")
        rows.append((r9, [e for e, _ in m], meas))
        print(line + " |")
    if rows:
        line = f"| **mean** | {np.mean([r[0] for r in rows]):.2f} | " + " | ".join(
            f"{np.mean([r[1][i] for r in rows]):.3f}" for i in range(len(BETAS)))
        for j in range(len(curves) if res else 0):
            e1 = [r[2][j][0] for r in rows if r[2][j][0] is not None]
            f9 = [r[2][j][1] for r in rows if r[2][j][1] is not None]
            line += f" | {np.mean(e1):.3f} / {np.mean(f9):.2f}" if e1 and f9 else " | -"
        print(line + " |")


if __name__ == "__main__":
    main()
