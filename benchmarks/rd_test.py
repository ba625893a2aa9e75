"""Rate-distortion of sarcodec models vs JPEG 2000 and JPEG-XL on ../shared/sar/test.

    python benchmarks/rd_test.py --model default-q1 --model default-q2 ... [--json out.json]
    python benchmarks/rd_test.py --family default --quality 0 --quality 0.5 ... [--ladder]
    python benchmarks/rd_test.py --family default --bpp 0.15 --bpp 0.25 ... [--part 0/2]

The second form codes at continuous qualities of a family (``sarcodec.encode(quality=)``);
``--bpp`` codes through the search a user calls (`compress --bpp`), one point per budget: the
R-D of the path itself, not a hull of many encodes. ``--ladder`` adds MSE pixel layers: every max_error step of the ladder on every base quality the
``--psnr``/``--bpp`` search tries (the benchmark's ``ladder_grid``: what the search chooses
from), and keeps the Pareto points of all.

Benchmark domain as in ANCHORS.md: dB clipped to each image's 0.1/99.9 percentiles, [0, 1]; PSNR
against that; bpp from bytes on disk (whole .sarc file). Traditional codecs get that domain as
uint16 (JPEG: uint8) through imagecodecs, swept over their quality knob: JPEG 2000 and HTJ2K
(16-bit), JPEG-XL (16-bit, effort 7), JPEG (8-bit); each curve keeps its Pareto points. BD-rate per image against JPEG 2000 (least-squares cubic and PCHIP),
then averaged. Also ENL ratio (linear intensity, homogeneous blocks of the original) and EPI.
The models given are treated as one family (their rate points form one curve).
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
from sarcodec.evaluation.benchmark import LADDER_TOP, TRADITIONAL, at_rate, benchmark_scenes, ladder_grid, sweep  # noqa: E402
from sarcodec.evaluation.codecs import pareto  # noqa: E402
from sarcodec.evaluation.metrics import BenchmarkDomain, bd_rate, bd_rate_pchip, bpp, enl_ratio, epi, psnr  # noqa: E402

RATES = (0.5, 0.75, 1.0, 2.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--family", default=None, help="a bundled family, coded at each --quality")
    ap.add_argument("--quality", action="append", type=float, default=[])
    ap.add_argument("--ladder", action="store_true", help="also max_error pixel layers beyond the qualities")
    ap.add_argument("--bpp", action="append", type=float, default=[],
                    help="with --family: code through the --bpp search a user calls, one point per budget")
    ap.add_argument("--part", default=None, metavar="K/N",
                    help="only every N-th image from the K-th (0-based): runs in parallel, joined with --merge")
    ap.add_argument("--data", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-jxl", action="store_true")
    ap.add_argument("--split", choices=("test", "val"), default="test",
                    help="test: report on test/; val: the held-out training locations (for choosing models)")
    ap.add_argument("--val-locations", default="mexico-b", help="comma-separated, with --split val")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="print the report of several --json outputs together (runs over parts of the images)")
    ap.add_argument("--refine", type=int, default=0,
                    help="also code with N steps of encoder-side latent refinement (a second sarcodec curve)")
    a = ap.parse_args()
    if a.merge:
        try:
            docs = [json.loads(Path(f).read_text()) for f in a.merge]
            res = {k: v for d in docs for k, v in d["images"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            sys.exit(f"--merge: not rd_test --json outputs ({e})")
        if not res:
            sys.exit("--merge: no images in these files")
        for name, e in res.items():
            print(f"{name} sarcodec: " + ", ".join(f"{p['bpp']:.3f} bpp {p['psnr']:.2f} dB" for p in e["sarcodec"]))
        report(res, docs[0].get("families", ["sarcodec"]), docs[0].get("labels", []), a.json)
        return
    root = Path(a.data) if a.data else default_data_dir()
    if root is None:
        sys.exit("no data: pass --data or place ../shared/sar")
    scenes = benchmark_scenes(root, a.split, tuple(a.val_locations.split(",")))
    if a.part:
        k, n = (int(v) for v in a.part.split("/"))
        scenes = scenes[k::n]
    if bool(a.model) == bool(a.family and (a.quality or a.bpp)):
        sys.exit("give --model ... or --family F --quality Q ... (or --bpp B ...)")
    if a.family:  # (label, encode kwargs): one point per quality, or per budget through the search
        fam_models = sarcodec.api.family_members(a.family)
        points = [(f"q={q:g}", {"model": fam_models, "quality": q}) for q in a.quality] \
            + [(f"bpp={b:g}", {"model": fam_models, "bpp": b}) for b in a.bpp]
    else:
        # label each rate point by what was asked for (checkpoint files may share an internal name)
        points = [(Path(m).stem if m.endswith(".pt") else m, {"model": sarcodec.load_model(m)}) for m in a.model]
        fam_models = [kw["model"] for _, kw in points]
    labels = [lb for lb, _ in points]
    res: dict[str, dict] = {}
    families = {"sarcodec": 0, **({f"sarcodec-refine{a.refine}": a.refine} if a.refine else {})}
    for s in scenes:
        img = read_intensity(s.path)
        dom = BenchmarkDomain(img)
        ref = dom(img)
        # the same codecs and quality sweeps as `sarcodec benchmark` (JPEG 2000 first: the reference)
        entry = {c: sweep(c, img, dom, ref) for c in TRADITIONAL if not (c == "jpegxl" and a.no_jxl)}
        for fam, steps in families.items():
            pts = []

            def encoded(**kw) -> tuple[bytes, float]:
                t0 = time.perf_counter()
                data = sarcodec.encode(img, refine=steps, **kw)
                return data, time.perf_counter() - t0

            def point(label, data, t_enc):
                rec = sarcodec.decode(data)
                v = dom(rec)
                pts.append({"model": label, "bpp": bpp(len(data), img.size), "psnr": psnr(ref, v),
                            "enl_ratio": enl_ratio(img, rec), "epi": epi(ref, v), "encode_s": t_enc})

            for label, kw in points:
                point(label, *encoded(**kw))
            if a.ladder:  # MSE layers on every base the psnr / bpp search tries (the benchmark's :ladder)
                for qb, e in ladder_grid(len(fam_models), lambda: pts[-1]["bpp"] > LADDER_TOP):
                    point(f"q={qb:g}+max_error={e:g}",
                          *encoded(model=fam_models, quality=qb, max_error=e, bound=False))
                pts = pareto(pts)
            entry[fam] = sorted(pts, key=lambda p: p["bpp"])
            print(f"{s.path.name} {fam}: " + ", ".join(f"{p['bpp']:.3f} bpp {p['psnr']:.2f} dB" for p in entry[fam]),
                  flush=True)
        res[s.path.name] = entry

    report(res, list(families), labels, a.json)


def report(res: dict, families: list[str], labels: list[str], json_path: str | None = None) -> None:
    """Print the tables of results ``res`` (image -> codec -> points); write them with the
    summary to ``json_path``."""
    codecs = list(families) + [c for c in next(iter(res.values())) if c not in families]  # jpeg2000 next
    print("\n| codec | " + " | ".join(f"PSNR @{r} bpp" for r in RATES) + " | BD-rate vs JPEG 2000 | (PCHIP) |")
    print("|---|" + "---|" * (len(RATES) + 2))
    summary, per_image = {}, {}  # per_image[codec][image]: (PCHIP, cubic) BD-rate
    for c in codecs:
        row, bds, pcs = [], [], []
        for r in RATES:
            vals = [at_rate(e[c], r) for e in res.values()]
            vals = [v for v in vals if v is not None]
            row.append(f"{np.mean(vals):.2f} ({len(vals)}/{len(res)})" if vals else "-")
        per_image[c] = {}
        for name, e in res.items():
            if c != "jpeg2000" and len(e[c]) >= 2:
                curves = ([p["bpp"] for p in e["jpeg2000"]], [p["psnr"] for p in e["jpeg2000"]],
                          [p["bpp"] for p in e[c]], [p["psnr"] for p in e[c]])
                try:
                    bds.append(bd_rate(*curves))
                    pcs.append(bd_rate_pchip(*curves))
                    per_image[c][name] = (pcs[-1], bds[-1])
                except ValueError:
                    pass
        bd = "0 (reference)" if c == "jpeg2000" else (f"{np.mean(bds):+.1f}% ({len(bds)}/{len(res)})" if bds else "-")
        pc = "0 (reference)" if c == "jpeg2000" else (f"{np.mean(pcs):+.1f}%" if pcs else "-")
        summary[c] = {"bd_rate": float(np.mean(bds)) if bds else None, "per_image_bd": bds,
                      "bd_rate_pchip": float(np.mean(pcs)) if pcs else None, "per_image_bd_pchip": pcs}
        print(f"| {c} | " + " | ".join(row) + f" | {bd} | {pc} |")
    # the PSNR columns above average over whichever images reach a rate; this compares like with like
    print("\nPSNR gain over JPEG 2000 at the same bpp (dB, mean over the images both codecs reach):")
    print("| codec | " + " | ".join(f"@{r} bpp" for r in RATES) + " |")
    print("|---|" + "---|" * len(RATES))
    for c in [c for c in codecs if c != "jpeg2000"]:
        row = []
        for r in RATES:
            d = [at_rate(e[c], r) - at_rate(e["jpeg2000"], r) for e in res.values()
                 if at_rate(e[c], r) is not None and at_rate(e["jpeg2000"], r) is not None]
            row.append(f"{np.mean(d):+.2f} ({len(d)}/{len(res)})" if d else "-")
            summary[c][f"dpsnr@{r}"] = float(np.mean(d)) if d else None
        print(f"| {c} | " + " | ".join(row) + " |")
    print("\nBD-rate vs JPEG 2000 per image (PCHIP / least-squares cubic):")
    others = [c for c in codecs if c != "jpeg2000"]
    print("| image | " + " | ".join(others) + " |")
    print("|---|" + "---|" * len(others))
    for name in res:
        cells = [f"{per_image[c][name][0]:+.1f}% / {per_image[c][name][1]:+.1f}%" if name in per_image[c] else "-"
                 for c in others]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nSAR statistics at the same bpp (interpolated per image in log-rate, mean over the images a curve reaches):")
    print("| codec | " + " | ".join(f"ENL ratio / EPI @{r} bpp" for r in RATES) + " |")
    print("|---|" + "---|" * len(RATES))
    for c in codecs:
        row = []
        for r in RATES:
            got = [(at_rate(e[c], r, "enl_ratio"), at_rate(e[c], r, "epi")) for e in res.values()
                   if at_rate(e[c], r) is not None and "epi" in e[c][0]]
            row.append(f"{np.mean([g[0] for g in got]):.2f} / {np.mean([g[1] for g in got]):.3f} ({len(got)})"
                       if got else "-")
        print(f"| {c} | " + " | ".join(row) + " |")
    print("\nsarcodec rate points (mean over the images where the point is on the curve's Pareto front):")
    for fam, label in [(f, lb) for f in families for lb in labels]:
        pts = [p for e in res.values() for p in e[fam] if p["model"] == label]
        if not pts:  # not on any curve's Pareto front
            continue
        print(f"  {fam} {label} ({len(pts)} images): encode {np.median([p['encode_s'] for p in pts]):.1f} s  bpp {np.mean([p['bpp'] for p in pts]):.3f}  PSNR {np.mean([p['psnr'] for p in pts]):.2f}  "
              f"ENL ratio {np.mean([p['enl_ratio'] for p in pts]):.3f}  EPI {np.mean([p['epi'] for p in pts]):.3f}")
    if json_path:
        Path(json_path).write_text(json.dumps({"images": res, "summary": summary, "families": families,
                                               "labels": labels}, indent=1))


if __name__ == "__main__":
    main()
