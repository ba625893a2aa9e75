"""Whole-scene speed and memory: compress/decompress synthetic GeoTIFF scenes in child processes,
reporting MP/s and peak RSS of each, side by side with OpenJPEG (JPEG 2000) in the same run.

    python benchmarks/scene_speed.py --sizes 4096 16384 --model default [fast ...] [--tile 1024] [--workers N]
        [--bpp 1.0] [--no-j2k] [--shape 17000 25000] [--device cuda]

Each model (a bundled name or family) compresses with its default settings, then (``--bpp B``)
with a rate target, through ``compress_file`` as the CLI does; ratios to OpenJPEG's encode and
decode (one thread, same scene, same run) are printed beside the MP/s.

Each job runs in a fresh process; MP/s time the compress / decompress call (the package import,
~3 s, is printed apart as import_s: a batch or a service pays it once). Peak RSS is the child's
ru_maxrss, so each figure is one job's own footprint (with --workers, the largest entropy-coding
worker's peak is reported beside it). Scenes are written block by block (never held whole),
uint16 GRD-like DN. A scene of more than 64 blocks of 1024^2 (``--shape 17000 25000``: one
polarisation of a GRD) is built from 16 distinct blocks, each placed flipped or not, so that
making it takes minutes, not an hour. ``--device cuda`` runs the transforms on a GPU (the
entropy coding stays on the CPU, in worker processes).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
job, a, b, model, tile, workers, bpp, device = sys.argv[2:10]
workers = None if workers == "auto" else int(workers)
t = time.perf_counter()
import sarcodec.files  # noqa: F401  (imports timed apart: a batch pays them once, OpenJPEG's are not timed)
if device != "cpu" and job == "compress":
    import sarcodec
    model = sarcodec.load_model(model, device=device)
imported = time.perf_counter() - t
t = time.perf_counter()
if job == "compress":
    from sarcodec.files import compress_file
    compress_file(a, b, model, tile_size=int(tile), workers=workers, bpp=float(bpp) if bpp != "-" else None)
elif job == "decompress":
    from sarcodec.files import decompress_file
    decompress_file(a, b, model=model if model.endswith(".pt") else None, workers=workers,
                    device=None if device == "cpu" else device)
elif job == "j2k":
    import imagecodecs, numpy as np, rasterio
    from sarcodec.evaluation.metrics import BenchmarkDomain
    with rasterio.open(a) as ds:
        dn = ds.read(1).astype("float64")
    x = BenchmarkDomain(dn * dn).to_uint16(dn * dn)  # same [0, 1] dB domain the codecs are compared in
    t = time.perf_counter()
    data = imagecodecs.jpeg2k_encode(x, level=40.0, codecformat="j2k", numthreads=1)
    enc = time.perf_counter() - t
    t = time.perf_counter()
    imagecodecs.jpeg2k_decode(data)
    print(json.dumps({"enc": enc, "dec": time.perf_counter() - t, "bytes": len(data),
                      "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    sys.exit(0)
print(json.dumps({"s": time.perf_counter() - t, "import_s": imported,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "rss_workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def make_scene(path: Path, size: int | tuple[int, int], block: int = 1024) -> None:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from sarcodec.data.synthetic import synthetic_sar

    rows, cols = (size, size) if isinstance(size, int) else size
    nb = -(-rows // block) * -(-cols // block)
    pool = {}
    prof = dict(driver="GTiff", width=cols, height=rows, count=1, dtype="uint16", nodata=0, tiled=True,
                blockxsize=512, blockysize=512, compress="deflate", crs="EPSG:32633",
                transform=from_origin(400000, 5000000, 10, 10), BIGTIFF="IF_SAFER")
    with rasterio.open(path, "w", **prof) as ds:
        for r in range(0, rows, block):
            for c in range(0, cols, block):
                h, w = min(block, rows - r), min(block, cols - c)
                if nb <= 64:
                    x = synthetic_sar((h, w), seed=r * 7 + c) * 3e5
                else:
                    k = (r // block * 7 + c // block * 3) % 32
                    if k % 16 not in pool:
                        pool[k % 16] = synthetic_sar((block, block), seed=k % 16) * 3e5
                    x = pool[k % 16][::-1] if k >= 16 else pool[k % 16]
                    x = x[:h, :w]
                ds.write(np.sqrt(x).round().clip(1, 65535).astype("uint16")[None], window=Window(c, r, w, h))


def run(job: str, a: str, b: str, model: str, tile: int, workers: str = "auto", bpp: float | None = None,
        device: str = "cpu") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "src"), job, a, b, model, str(tile), workers,
                          "-" if bpp is None else str(bpp), device],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--model", nargs="+", default=["default"])
    ap.add_argument("--bpp", type=float, default=None, help="also compress with this rate target")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--workers", default="auto", help="entropy-coding processes (default: automatic)")
    ap.add_argument("--no-j2k", action="store_true")
    ap.add_argument("--shape", type=int, nargs=2, metavar=("ROWS", "COLS"), help="one rows x cols scene instead of --sizes")
    ap.add_argument("--device", default="cpu", help="where the transforms run (cuda: a GPU)")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for size in [tuple(a.shape)] if a.shape else a.sizes:
            name = "x".join(map(str, size)) if a.shape else str(size)
            tif, sarc, out = Path(d, f"s{name}.tif"), Path(d, f"s{name}.sarc"), Path(d, f"o{name}.tif")
            t = time.perf_counter()
            make_scene(tif, size)
            print(f"scene {name} written in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
            npx = size[0] * size[1] if a.shape else size * size
            mp = npx / 1e6
            j = None if a.no_j2k else run("j2k", str(tif), "-", "-", a.tile)
            for model in a.model:
                for bpp in [None] + ([a.bpp] if a.bpp else []):
                    c = run("compress", str(tif), str(sarc), model, a.tile, a.workers, bpp, a.device)
                    dd = run("decompress", str(sarc), str(out), model, a.tile, a.workers, device=a.device)
                    row = {"size": name, "device": a.device, "model": model, "bpp_target": bpp, "import_s": dd["import_s"],
                           "enc_mps": mp / c["s"],
                           "dec_mps": mp / dd["s"], "enc_rss_mb": c["rss"] / 1024, "dec_rss_mb": dd["rss"] / 1024,
                           "bpp": 8 * os.path.getsize(sarc) / npx}
                    if c["rss_workers"] or dd["rss_workers"]:
                        row.update(enc_worker_rss_mb=c["rss_workers"] / 1024, dec_worker_rss_mb=dd["rss_workers"] / 1024)
                    if j is not None:
                        row.update(j2k_enc_mps=mp / j["enc"], j2k_dec_mps=mp / j["dec"], j2k_rss_mb=j["rss"] / 1024,
                                   j2k_bpp=8 * j["bytes"] / npx)
                        row.update(enc_vs_j2k=row["enc_mps"] / row["j2k_enc_mps"], dec_vs_j2k=row["dec_mps"] / row["j2k_dec_mps"])
                    rows.append(row)
                    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
                    for p in (sarc, out):
                        p.unlink()
            tif.unlink()
    same = [r for r in rows if (r["model"], r["bpp_target"]) == (rows[0]["model"], rows[0]["bpp_target"])]
    if len(same) > 1:
        lo, hi = same[0], same[-1]
        print(f"peak RSS ratio {hi['size']}^2 / {lo['size']}^2 ({lo['model']}): encode "
              f"{hi['enc_rss_mb'] / lo['enc_rss_mb']:.2f}x, decode {hi['dec_rss_mb'] / lo['dec_rss_mb']:.2f}x "
              f"(pixels {int(hi['size']) ** 2 / int(lo['size']) ** 2:.0f}x)")


if __name__ == "__main__":
    main()
