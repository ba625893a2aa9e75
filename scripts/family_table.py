"""Per-image and per-product-family tables (BD-rate / BD-PSNR against JPEG 2000, rate range, SAR
fidelity) from a benchmark's results.json, in Markdown, for the model card and notes.

    python scripts/family_table.py docs/benchmark/results.json
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np


def family(name: str) -> str:
    if "sar2sar" in name:
        return "single-look SLC (SAR2SAR)"
    if "sen1floods11" in name:
        return "GRD sigma0 chips (Sen1Floods11)"
    return "GRD-type crops"


def main() -> None:
    res = json.loads(open(sys.argv[1]).read())
    summ, imgs = res["summary"], res["images"]
    curves = list(summ)
    names = list(imgs)
    print("| image | " + " | ".join(f"{c} BD-rate" for c in curves) + " | " +
          " | ".join(f"{c} bpp range" for c in curves if "jpeg2000" not in c and "avif" not in c and "jpegxl" not in c) + " |")
    print("|---" * (1 + len(curves) + sum(1 for c in curves if not any(k in c for k in ("jpeg2000", "avif", "jpegxl")))) + "|")
    for n in names:
        row = [n.replace(".tif", "")]
        for c in curves:
            v = summ[c]["bd_rate_per_image"].get(n)
            row.append("-" if v is None else f"{v:+.1f}%")
        for c in curves:
            if any(k in c for k in ("jpeg2000", "avif", "jpegxl")):
                continue
            b = [p["bpp"] for p in imgs[n][c]["points"]]
            row.append(f"{min(b):.2f}-{max(b):.2f}")
        print("| " + " | ".join(row) + " |")
    fam = defaultdict(list)
    for n in names:
        fam[family(n)].append(n)
    print("\n| product family (images) | " + " | ".join(curves) + " |")
    print("|---" * (1 + len(curves)) + "|")
    for f, ns in fam.items():
        row = [f"{f} ({len(ns)})"]
        for c in curves:
            vals = [summ[c]["bd_rate_per_image"].get(n) for n in ns]
            vals = [v for v in vals if v is not None]
            row.append("-" if not vals else f"{np.mean(vals):+.1f}%")
        print("| " + " | ".join(row) + " |")
    print("| **mean of all** | " + " | ".join(f"**{summ[c]['bd_rate']:+.1f}%**" if summ[c]["bd_rate"] is not None else "-"
                                              for c in curves) + " |")


if __name__ == "__main__":
    main()
