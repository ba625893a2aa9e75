"""Encode / decode speed (MP/s) of each architecture on this machine's CPU, next to JPEG 2000.

    python benchmarks/codec_speed.py [--size 512] [--repeat 3] [--threads N]

Models are untrained (speed does not depend on training); sizes are the registry defaults.
Medians of --repeat runs, all codecs measured in the same run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

import sarcodec  # noqa: E402
from sarcodec.data import synthetic_sar  # noqa: E402
from sarcodec.evaluation.codecs import jpeg2000  # noqa: E402
from sarcodec.evaluation.metrics import BenchmarkDomain  # noqa: E402


def _median_time(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    img = synthetic_sar((a.size, a.size), seed=0)
    mp = img.size / 1e6
    print(f"{a.size}x{a.size} synthetic SAR, torch threads {torch.get_num_threads()}, median of {a.repeat}")
    print(f"{'codec':14s} {'params':>8s} {'encode MP/s':>12s} {'decode MP/s':>12s}")
    for arch in sarcodec.list_models():
        m = sarcodec.create_model(arch)
        m.name = arch
        m.eval()
        data = sarcodec.encode(img, m)
        te = _median_time(lambda m=m: sarcodec.encode(img, m), a.repeat)
        td = _median_time(lambda m=m, data=data: sarcodec.decode(data, m), a.repeat)
        print(f"{arch:14s} {m.num_parameters() / 1e6:7.2f}M {mp / te:12.3f} {mp / td:12.3f}")
    u16 = BenchmarkDomain(img).to_uint16(img)
    import imagecodecs

    enc = jpeg2000(u16, 35.0)[0]
    te = _median_time(lambda: imagecodecs.jpeg2k_encode(u16, level=35.0, codecformat="j2k", numthreads=1), a.repeat)
    td = _median_time(lambda: imagecodecs.jpeg2k_decode(enc), a.repeat)
    print(f"{'JPEG 2000':14s} {'-':>8s} {mp / te:12.3f} {mp / td:12.3f}   (OpenJPEG 2.5.4, 1 thread, {8 * len(enc) / img.size:.2f} bpp)")


if __name__ == "__main__":
    main()
