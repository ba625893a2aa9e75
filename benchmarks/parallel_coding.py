"""Entropy coding across tiles in worker processes (``sarcodec.parallel``): the coding alone
(range coder + fixed-point hyper-synthesis, what a GPU leaves to the CPU) at 0..N workers, then
whole-array encode / decode through the public API at 0 and N workers, all in one run.

    python benchmarks/parallel_coding.py [--size 4096] [--tile 1024] [--workers 1 2] [--model default]

Every configuration must give the same bytes and latents; the script checks that.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sarcodec  # noqa: E402
from sarcodec.data.synthetic import synthetic_sar  # noqa: E402
from sarcodec.models.latent_codecs import decode_tile  # noqa: E402
from sarcodec.parallel import CoderPool  # noqa: E402
from sarcodec.radiometry import Radiometry  # noqa: E402


def scene(size: int) -> np.ndarray:
    base = synthetic_sar((1024, 1024), seed=0)  # mirror-tiled: synthetic_sar is slow at scene size
    reps = -(-size // 1024)
    return np.ascontiguousarray(np.tile(np.concatenate([base, base[::-1]], 0), (reps, reps))[:size, :size])


def median_time(fn, repeat: int):
    ts, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--model", default="default")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-api", action="store_true", help="only the coding-alone part")
    a = ap.parse_args()
    m = sarcodec.load_model(a.model)
    img = scene(a.size)
    x = Radiometry.fit(img, "intensity").forward(img)[0]  # the [0, 1] values the model codes
    coder = m.coder()
    # the symbols of every tile (what the transforms hand over), computed once
    t = a.tile
    symbols = []
    with torch.no_grad():
        for r in range(0, a.size, t):
            for c in range(0, a.size, t):
                tile = torch.from_numpy(np.ascontiguousarray(x[r:r + t, c:c + t]))[None, None]
                y = m.g_a(m._pad(tile) - 0.5)
                symbols.append((m.latent_codec.prepare(y), y.shape))
    n = len(symbols)
    print(f"{os.cpu_count()} CPU cores, model {m.name}, {a.size}^2 ({n} tiles of {t}^2), median of {a.repeat}")

    def seq_encode():
        return [coder.encode(*s) for s, _ in symbols]

    te0, streams = median_time(seq_encode, a.repeat)
    td0, lat0 = median_time(lambda: [decode_tile(coder, d, shp) for d, (_, shp) in zip(streams, symbols)], a.repeat)
    print(f"  coding alone, in-process: encode {n / te0:.1f} tiles/s, decode {n / td0:.1f} tiles/s")
    for w in a.workers:
        t0 = time.perf_counter()
        with CoderPool(coder, w) as pool:
            pool.decode(streams[0], symbols[0][1]).result()  # the first task starts a worker
            start = time.perf_counter() - t0
            te, out = median_time(lambda: [f.result() for f in [pool.encode(*s) for s, _ in symbols]], a.repeat)
            td, lat = median_time(lambda: [f.result() for f in [pool.decode(d, shp) for d, (_, shp) in zip(streams, symbols)]],
                                  a.repeat)
        same = out == streams and all(np.array_equal(p, q) for p, q in zip(lat, lat0))
        print(f"  coding alone, {w} worker(s): encode {n / te:.1f} tiles/s ({te0 / te:.2f}x), decode {n / td:.1f} tiles/s "
              f"({td0 / td:.2f}x), pool start {start:.2f} s, identical {same}")
    if a.no_api:
        return
    mp = img.size / 1e6
    base = None
    for w in [0] + a.workers:
        te, data = median_time(lambda: sarcodec.encode(img, m, tile_size=t, workers=w), 1)
        td, rec = median_time(lambda: sarcodec.decode(data, m, normalized=True, workers=w), 1)
        if base is None:
            base = (te, td, data, rec)
        same = data == base[2] and np.array_equal(rec, base[3])
        print(f"  API, workers={w}: encode {mp / te:.2f} MP/s ({base[0] / te:.2f}x), decode {mp / td:.2f} MP/s "
              f"({base[1] / td:.2f}x), identical {same}")


if __name__ == "__main__":
    main()
