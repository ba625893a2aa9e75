"""Error-bounded coding: sarcodec ``max_error`` against LERC and near-lossless JPEG-LS at the same
bound, on ../shared/sar/test (or --split val).

    python benchmarks/max_error.py [--bound 0.5 --bound 0.25] [--split test] [--json out.json]

Every codec must keep every valid pixel's dB value within the bound; the script checks it. The
reference values are 10 log10(intensity) of the valid pixels (finite, > 0), as float32:
* sarcodec: ``encode(intensity, "default", max_error=B)`` (the rate point that codes it smallest);
  its invalid-pixel mask travels in the file;
* LERC (imagecodecs, MAX_Z_ERROR = B) on the dB values as float32, with the valid mask;
* JPEG-LS near-lossless (imagecodecs/CharLS) on the dB values quantised to 0.01 dB as uint16,
  NEAR = floor((B - 0.005) / 0.01) (the 0.01 dB grid costs up to 0.005 dB of the bound); invalid
  pixels filled with the median (a mask would cost it a few bytes more).
Prints bpp per image and codec, the measured largest error, and the mean ratio to LERC.

``--lossless``: each image as GRD-like DN (uint16, DN = sqrt(intensity / median) * 200, 0 =
invalid), coded exactly by ``encode(..., lossless=True)``, JPEG-LS, JPEG-XL (effort 7) and LERC
lossless; every decode is checked to be exact.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402

import sarcodec  # noqa: E402
from sarcodec.data.scenes import default_data_dir, read_intensity  # noqa: E402
from sarcodec.evaluation.benchmark import benchmark_scenes  # noqa: E402


def lerc(db: np.ndarray, valid: np.ndarray, bound: float) -> tuple[int, np.ndarray]:
    import imagecodecs

    data = imagecodecs.lerc_encode(np.where(valid, db, 0).astype(np.float32), level=bound, masks=valid)
    out = imagecodecs.lerc_decode(data, masks=True)
    return len(data), np.asarray(out[0] if isinstance(out, tuple) else out, np.float64)


def jpegls(db: np.ndarray, valid: np.ndarray, bound: float) -> tuple[int, np.ndarray]:
    import imagecodecs

    step = 0.01
    lo = float(db[valid].min())
    u = np.rint((np.where(valid, db, np.median(db[valid])) - lo) / step)
    if u.max() >= 65536:
        raise ValueError("dB range too wide for uint16 at 0.01 dB")
    near = int(np.floor((bound - step / 2) / step + 1e-9))
    data = imagecodecs.jpegls_encode(u.astype(np.uint16), level=near)
    return len(data), imagecodecs.jpegls_decode(data).astype(np.float64) * step + lo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bound", type=float, action="append")
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default=None)
    ap.add_argument("--split", choices=("test", "val"), default="test")
    ap.add_argument("--val-locations", default="mexico-b")
    ap.add_argument("--json", default=None)
    ap.add_argument("--lossless", action="store_true")
    a = ap.parse_args()
    bounds = a.bound or [0.5]
    root = Path(a.data) if a.data else default_data_dir()
    if root is None:
        sys.exit("no data: pass --data or place ../shared/sar")
    scenes = benchmark_scenes(root, a.split, tuple(a.val_locations.split(",")))
    rows = []
    if a.lossless:
        import imagecodecs

        import time

        names = ("sarcodec", "jpeg2000", "jpegls", "jpegxl", "lerc")
        print(f"lossless, GRD-like DN (uint16): bpp\n{'image':40s} {'sarcodec':>9s} {'JPEG2000':>9s} {'JPEG-LS':>9s} "
              f"{'JPEG-XL':>9s} {'LERC':>9s}")
        times: dict[str, list] = {n: [] for n in names}
        model = sarcodec.load_model(a.model)  # once: a lossless file codes no latents, only its header names it
        for s in scenes:
            img = read_intensity(s.path)
            valid = np.isfinite(img) & (img > 0)
            med = np.median(img[valid])
            dn = np.where(valid, np.clip(np.rint(np.sqrt(np.where(valid, img, 0) / med) * 200), 1, 65535), 0).astype(np.uint16)
            t = time.perf_counter()
            data = sarcodec.encode(dn, model, kind="dn", nodata=0, lossless=True)
            t1 = time.perf_counter()
            assert np.array_equal(sarcodec.decode(data), dn)
            times["sarcodec"].append((t1 - t, time.perf_counter() - t1, dn.size))
            sizes = {"sarcodec": len(data)}
            for name, enc, dec in (("jpeg2000", lambda x: imagecodecs.jpeg2k_encode(x, reversible=True, codecformat="j2k",
                                                                                    numthreads=1),
                                    imagecodecs.jpeg2k_decode),
                                   ("jpegls", lambda x: imagecodecs.jpegls_encode(x), imagecodecs.jpegls_decode),
                                   ("jpegxl", lambda x: imagecodecs.jpegxl_encode(x, lossless=True, effort=7),
                                    imagecodecs.jpegxl_decode),
                                   ("lerc", lambda x: imagecodecs.lerc_encode(x, level=0), imagecodecs.lerc_decode)):
                t = time.perf_counter()
                enc_b = enc(dn)
                t1 = time.perf_counter()
                assert np.array_equal(np.asarray(dec(enc_b)).reshape(dn.shape), dn)
                times[name].append((t1 - t, time.perf_counter() - t1, dn.size))
                sizes[name] = len(enc_b)
            rows.append({"image": s.path.stem, "lossless": {k: 8 * v / dn.size for k, v in sizes.items()}})
            print(f"{s.path.stem:40s} " + " ".join(f"{8 * v / dn.size:9.3f}" for v in sizes.values()))
        for name in names[1:]:
            print(f"mean sarcodec / {name} size: "
                  f"{np.mean([r['lossless']['sarcodec'] / r['lossless'][name] for r in rows]):.3f}")
        for name in names:  # one thread for the others; sarcodec's NumPy / range coder, 2 cores available
            te, td, px = (sum(v[i] for v in times[name]) for i in range(3))
            print(f"{name:9s} encode {px / te / 1e6:6.2f} MP/s, decode {px / td / 1e6:6.2f} MP/s")
        bounds = a.bound or []
    for b in bounds:
        print(f"\nbound {b} dB: bpp (largest |dB error| measured)")
        print(f"{'image':40s} {'sarcodec':>18s} {'LERC':>18s} {'JPEG-LS near':>18s}")
        for s in scenes:
            img = read_intensity(s.path)
            valid = np.isfinite(img) & (img > 0)
            db = np.where(valid, 10 * np.log10(np.where(valid, img, 1.0)), 0.0)
            res = {}
            t = time.perf_counter()
            data = sarcodec.encode(img, a.model, max_error=b, precision="fp32")
            out = sarcodec.decode(data)
            res["sarcodec"] = (len(data), np.where(valid, 10 * np.log10(np.where(valid, out, 1.0)), 0.0),
                               time.perf_counter() - t)
            for name, fn in (("lerc", lerc), ("jpegls", jpegls)):
                t = time.perf_counter()
                n, rec = fn(db, valid, b)
                res[name] = (n, rec, time.perf_counter() - t)
            row = {"image": s.path.stem, "bound": b}
            cells = []
            for name, (n, rec, sec) in res.items():
                err = float(np.abs(rec[valid] - db[valid]).max())
                row[name] = {"bpp": 8 * n / img.size, "max_err": err, "seconds": sec}
                cells.append(f"{8 * n / img.size:8.3f} ({err:6.4f})")
            rows.append(row)
            print(f"{s.path.stem:40s} " + " ".join(f"{c:>18s}" for c in cells))
        sel = [r for r in rows if r.get("bound") == b]
        for name in ("sarcodec", "jpegls"):
            ratio = np.mean([r[name]["bpp"] / r["lerc"]["bpp"] for r in sel])
            print(f"mean {name} / LERC size: {ratio:.3f}")
        print("mean bpp: " + ", ".join(f"{n} {np.mean([r[n]['bpp'] for r in sel]):.3f}"
                                       for n in ("sarcodec", "lerc", "jpegls")))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
