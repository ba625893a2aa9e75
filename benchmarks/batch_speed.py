"""N scenes compressed one after another in this process vs on a Dask LocalCluster.

    python benchmarks/batch_speed.py [--scenes 8] [--size 1024] [--workers 2]

Synthetic float32 GeoTIFFs; the same settings both ways (fp32 analysis, so the bytes must match:
checked). Prints seconds, MP/s and the speed-up.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402


def main() -> None:
    import rasterio
    from distributed import Client, LocalCluster

    from sarcodec.batch import compress_files
    from sarcodec.data import synthetic_sar

    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        files = []
        base = synthetic_sar((a.size, a.size), seed=0).astype(np.float32)
        for i in range(a.scenes):
            p = d / "in" / f"s{i}.tif"
            p.parent.mkdir(exist_ok=True)
            with rasterio.open(p, "w", driver="GTiff", width=a.size, height=a.size, count=1, dtype="float32") as ds:
                ds.write(np.roll(base, 37 * i, axis=1), 1)
            files.append(p)
        mp = a.scenes * a.size * a.size / 1e6
        t = time.perf_counter()
        seq = compress_files(files, d / "seq", precision="fp32")
        t_seq = time.perf_counter() - t
        with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
                Client(cl) as client:
            client.submit(lambda: 0).result()  # workers up before the clock starts
            t = time.perf_counter()
            par = compress_files(files, d / "par", client, precision="fp32")
            t_par = time.perf_counter() - t
        same = all(Path(x["output"]).read_bytes() == Path(y["output"]).read_bytes() for x, y in zip(seq, par))
        print(f"{a.scenes} scenes of {a.size}^2: sequential {t_seq:.1f} s ({mp / t_seq:.2f} MP/s), "
              f"local:{a.workers} {t_par:.1f} s ({mp / t_par:.2f} MP/s), speed-up {t_seq / t_par:.2f}x, "
              f"identical bytes: {same}")


if __name__ == "__main__":
    main()
