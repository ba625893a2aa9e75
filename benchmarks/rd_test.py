"""Rate-distortion on ../shared/sar/test against JPEG 2000 at matched bytes.

    python benchmarks/rd_test.py --model default [--model path.pt ...] [--data ../shared/sar]

Benchmark domain as in ANCHORS.md: dB clipped to each image's 0.1/99.9 percentiles, [0, 1];
PSNR against that; bpp from the whole .sarc file (header included). JPEG 2000 (OpenJPEG, 16-bit)
is bisected on its quality knob to the largest file not exceeding sarcodec's, so every
comparison gives JPEG 2000 at most as many bytes and reports both bpp.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402

import sarcodec  # noqa: E402
from sarcodec.data.scenes import default_data_dir, read_intensity, scan_scenes  # noqa: E402
from sarcodec.evaluation.codecs import jpeg2000, match_bytes  # noqa: E402
from sarcodec.evaluation.metrics import BenchmarkDomain, bpp, psnr  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--json", default=None, help="write results here")
    a = ap.parse_args()
    root = Path(a.data) if a.data else default_data_dir()
    if root is None:
        sys.exit("no data: pass --data or place ../shared/sar")
    scenes = [s for s in scan_scenes(root, folders=("test",)) if s.split == "test"]
    results = []
    for name in a.model or ["default"]:
        model = sarcodec.load_model(name)
        print(f"\nmodel {name} ({model.arch}, {model.num_parameters() / 1e6:.2f}M params)")
        print(f"{'image':28s} {'bpp':>6s} {'PSNR':>6s} | {'J2K bpp':>7s} {'J2K PSNR':>8s} | {'gain dB':>7s}")
        for s in scenes:
            img = read_intensity(s.path)
            dom = BenchmarkDomain(img)
            ref = dom(img)
            data = sarcodec.encode(img, model)
            rec = sarcodec.decode(data, model)
            r = {"model": name, "image": s.path.name, "bpp": bpp(len(data), img.size), "psnr": psnr(ref, dom(rec))}
            j, jd, _ = match_bytes(jpeg2000, dom.to_uint16(img), len(data), 10.0, 90.0)
            r["j2k_bpp"], r["j2k_psnr"] = bpp(len(j), img.size), psnr(ref, jd / 65535.0)
            results.append(r)
            print(f"{s.path.name:28s} {r['bpp']:6.3f} {r['psnr']:6.2f} | {r['j2k_bpp']:7.3f} {r['j2k_psnr']:8.2f} | "
                  f"{r['psnr'] - r['j2k_psnr']:+7.2f}")
        mine = [r for r in results if r["model"] == name]
        print(f"{'mean':28s} {np.mean([r['bpp'] for r in mine]):6.3f} {np.mean([r['psnr'] for r in mine]):6.2f} | "
              f"{np.mean([r['j2k_bpp'] for r in mine]):7.3f} {np.mean([r['j2k_psnr'] for r in mine]):8.2f} | "
              f"{np.mean([r['psnr'] - r['j2k_psnr'] for r in mine]):+7.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
