"""The benchmark behind ``sarcodec benchmark`` / ``sarcodec evaluate``: every codec on the same
images, in the same domain, with the same metrics; resumable; a report in Markdown and HTML with
R-D curves (SVG), paired statistics and a visual gallery (PNG).

Domain (ANCHORS.md): dB of linear intensity clipped to each original's 0.1/99.9 percentiles, [0, 1].
Traditional codecs get it as uint16 (JPEG: uint8). A model *family* is a list of checkpoints (rate
points) that together form one R-D curve. Metrics per point: bpp from bytes, PSNR, MS-SSIM and EPI
in the domain; ENL ratio in linear intensity (the domain mapped back through the clip range, for
the original and every reconstruction alike).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..api import ERROR_LADDER, layer_bases, quality_point
from ..container import FORMAT_VERSION
from ..errors import InputError
from .codecs import avif, htj2k, jpeg2000, jpeg8, jpegxl, match_bytes, pareto
from .metrics import BenchmarkDomain, bd_psnr, bd_rate, bd_rate_pchip, bpp, enl_ratio, epi, fidelity, ms_ssim, psnr
from .plots import image_grid, rd_figure
from .report import Report

RATES = (0.25, 0.5, 0.75, 1.0, 2.0)
TRADITIONAL: dict[str, tuple[Callable, list[float], str]] = {
    "jpeg2000": (jpeg2000, list(np.arange(18.0, 70.0, 2.0)), "JPEG 2000, 16-bit, OpenJPEG (level = PSNR target)"),
    "htj2k": (htj2k, list(np.geomspace(0.4, 0.005, 18)), "HTJ2K, 16-bit, OpenJPH (quantisation step)"),
    "jpegxl": (jpegxl, [12.0, 9.0, 7.0, 5.0, 4.0, 3.0, 2.4, 1.8, 1.4, 1.0, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1, 0.05],
               "JPEG-XL, 16-bit, effort 7 (distance)"),
    "jpeg": (jpeg8, list(range(5, 100, 5)), "JPEG, 8-bit, libjpeg-turbo (quality)"),
    "avif": (avif, list(range(20, 96, 5)), "AVIF, 12-bit monochrome, libavif/aom speed 6 (quality)"),
}
# the same codecs given the image's *full* dB range (0 / 100 percentiles) instead of the clipped
# benchmark domain: what they keep of bright targets and the mean when nothing is clipped for them
FULL_RANGE = {"jpeg2000-full": "jpeg2000", "avif-full": "avif"}
for _k, _base in FULL_RANGE.items():
    TRADITIONAL[_k] = (TRADITIONAL[_base][0], TRADITIONAL[_base][1],
                       TRADITIONAL[_base][2] + ", given the full dB range (0/100 percentiles)")
REFERENCE = "jpeg2000"
# max_error ladder (dB) of a family's ``:ladder`` curve beyond its rate points
# the --psnr / --bpp search's steps and, between each two, the geometric mean: the first point the
# search's bisection tries there. With the search's steps alone the measured curve had
# holes the search itself fills (single-look lely: nothing between 0.87 and 1.34 bpp), which cost
# lely 4.7 points of BD-rate (-4.6% sparse, -9.3% with the midpoints).
LADDER = tuple(v for a, b in zip(ERROR_LADDER, ERROR_LADDER[1:]) for v in (a, float(np.sqrt(a * b)))) \
    + ERROR_LADDER[-1:]
LADDER_TOP = 4.5  # bpp: a base's ladder stops past this


def ladder_grid(n: int, past_top) -> Iterator[tuple[float, float]]:
    """(quality, max_error) of a family's MSE-layer curve: every base the --psnr / --bpp search
    puts layers on (:func:`sarcodec.api.layer_bases`), each with :data:`LADDER` coarse to fine until
    ``past_top()`` (called after each point is measured) says the last one went past the top rate."""
    for qb in layer_bases(n):
        for e in LADDER:
            yield qb, e
            if past_top():
                break


QUALITY_STEP = 0.5  # a ``:quality`` family is coded at 0, 0.5, ..., N + 1 (api.quality_point)


def quality_grid(n: int) -> list[float]:
    """The continuous qualities a ``:quality`` family of ``n`` rate points is measured at."""
    return [k * QUALITY_STEP for k in range(int((n + 1) / QUALITY_STEP) + 1)]


def quality_signature(n: int, grid=quality_grid) -> str:
    """What the qualities ``grid(n)`` code with: (rate point index, step) each, so that cached
    results are redone when the quality mapping changes (quality 0 was once Δ 4)."""
    return str([quality_point(list(range(n)), q) for q in grid(n)])


HEADLINE_RATES = (0.5, 1.0, 2.0)


@dataclass
class Family:
    """A learned codec as one curve: its rate points (checkpoint names or paths)."""

    name: str
    models: list[str]
    refine: int = 0  # steps of encoder-side latent refinement (models/refine.py)
    ladder: bool = False  # also MSE pixel layers (ladder_grid): every base of the search, every step
    quality: bool = False  # points at continuous qualities (QUALITY_GRID) instead of the rate points alone

    @classmethod
    def parse(cls, spec: str) -> "Family":
        """``default`` (every bundled quality of an alias), ``a.pt,b.pt`` or ``name=a.pt,b.pt``;
        a ``:refine=N`` suffix codes with N steps of latent refinement (named ``<name>-refineN``);
        ``:ladder`` adds MSE pixel layers (:func:`ladder_grid`: every max_error step on every base
        the ``--psnr`` / ``--bpp`` search tries; named ``<name>-ladder``), what the search chooses from; ``:quality`` codes at the
        continuous qualities of QUALITY_GRID (``--quality``; named ``<name>-quality``), e.g.
        ``default:quality:ladder``."""
        from ..checkpoint import list_pretrained

        ladder = spec.endswith(":ladder")
        if ladder:
            spec = spec[: -len(":ladder")]
        quality = spec.endswith(":quality")
        if quality:
            spec = spec[: -len(":quality")]
        refine = 0
        if ":refine=" in spec:
            spec, _, n = spec.rpartition(":refine=")
            if not n.isdigit():
                raise InputError(f"--models ...:refine=N: N must be a step count, got {n!r}")
            refine = int(n)
        name, _, rest = spec.rpartition("=")
        items = [s for s in rest.split(",") if s]
        if not items:
            raise InputError(f"--models {spec!r}: no model given")
        if len(items) == 1 and not items[0].endswith(".pt"):
            qs = sorted(n for n in list_pretrained() if n.startswith(items[0] + "-q"))
            if qs:
                items = qs
        name = name or Path(items[0]).stem.split("-q")[0] + (f"-refine{refine}" if refine else "") \
            + ("-quality" if quality else "") + ("-ladder" if ladder else "")
        return cls(name, items, refine, ladder, quality)


def _domain_to_intensity(dom: BenchmarkDomain, v: np.ndarray) -> np.ndarray:
    return dom.radiometry.inverse(v, kind="intensity", dtype=np.float64)


def benchmark_scenes(data: str | Path, split: str = "test", val_locations: tuple[str, ...] = ("mexico-b",)) -> list:
    """The images a benchmark reports on: ``test/``, or (``split="val"``) the held-out training
    locations, for choosing models without touching ``test/``. ``data`` may also be any folder of
    rasters without a ``test/`` sub-folder (every GeoTIFF in it), or one raster file."""
    from ..data.scenes import Scene, scan_scenes

    p = Path(data)
    if p.is_file():
        return [Scene(p, p.stem, "unknown", "test")]
    if split == "test" and p.is_dir() and not (p / "test").is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".tif", ".tiff"))
        return [Scene(f, f.stem, "unknown", "test") for f in files]
    if split == "test":
        return [s for s in scan_scenes(data, ("test",)) if s.split == "test"]
    return [s for s in scan_scenes(data, ("train",)) if s.location in val_locations]


def measure(ref: np.ndarray, ref_int: np.ndarray, dom: BenchmarkDomain, rec: np.ndarray, n_bytes: int,
            original: np.ndarray | None = None, rec_int: np.ndarray | None = None) -> dict:
    """All metrics of one reconstruction (benchmark domain, [0, 1]); with the ``original`` and the
    reconstruction in linear intensity (``rec_int``: unclipped where the codec keeps the full
    range), also the SAR fidelity metrics (:func:`~sarcodec.evaluation.metrics.fidelity`)."""
    rec = np.clip(np.asarray(rec, np.float64), 0.0, 1.0)
    out = {"bpp": bpp(n_bytes, ref.size), "bytes": int(n_bytes), "psnr": psnr(ref, rec), "ms_ssim": ms_ssim(ref, rec),
           "enl_ratio": enl_ratio(ref_int, _domain_to_intensity(dom, rec)), "epi": epi(ref, rec)}
    if original is not None:
        out.update(fidelity(original, _domain_to_intensity(dom, rec) if rec_int is None else rec_int))
    return out


def sweep(codec: str, img: np.ndarray, dom: BenchmarkDomain, ref: np.ndarray, ref_int: np.ndarray | None = None
          ) -> list[dict]:
    """A traditional codec's R-D curve on one image: its quality sweep, 0.05-4.5 bpp, Pareto points.
    ``ref_int``: the reference in linear intensity (for the ENL ratio), derived when not given."""
    fn, knobs, _ = TRADITIONAL[codec]
    if ref_int is None:
        ref_int = _domain_to_intensity(dom, ref)
    code_dom = BenchmarkDomain(img, 0.0, 100.0) if codec in FULL_RANGE else dom
    u16 = code_dom.to_uint16(img)
    pts = []
    for k in knobs:
        data, dec = fn(u16, k)
        if 0.05 <= bpp(len(data), img.size) <= 4.5:
            rec_int = _domain_to_intensity(code_dom, np.clip(dec / 65535.0, 0.0, 1.0))
            pts.append({**measure(ref, ref_int, dom, dom(rec_int), len(data), img, rec_int), "knob": float(k)})
    return pareto(pts)


def evaluate_images(model, images: list[tuple[str, np.ndarray]]) -> list[dict]:
    """One model on (name, linear intensity) images: every metric of :func:`measure` from a real
    encode/decode (bpp from bytes), plus JPEG 2000's PSNR at the same bpp (``j2k_psnr``) and the
    gain over it (``dpsnr``; None where JPEG 2000's sweep does not reach that rate)."""
    from ..api import decode, encode

    rows = []
    for name, img in images:
        dom = BenchmarkDomain(img)
        ref = dom(img)
        ref_int = _domain_to_intensity(dom, ref)
        data = encode(img, model, precision="fp32")  # the reference analysis, as in the benchmark
        m = measure(ref, ref_int, dom, dom(decode(data, model)), len(data))
        j = at_rate(sweep(REFERENCE, img, dom, ref, ref_int), m["bpp"])
        rows.append({"image": name, **m, "j2k_psnr": j, "dpsnr": None if j is None else m["psnr"] - j})
    return rows


def at_rate(points: list[dict], rate: float, key: str = "psnr") -> float | None:
    """Linear interpolation in log-rate; None outside the measured range."""
    if not points:
        return None
    r = np.log([p["bpp"] for p in points])
    if np.log(rate) < r.min() or np.log(rate) > r.max():
        return None
    return float(np.interp(np.log(rate), r, [p[key] for p in points]))


class Benchmark:
    def __init__(self, data: str | Path, out: str | Path, families: list[Family], codecs: list[str],
                 split: str = "test", val_locations: tuple[str, ...] = ("mexico-b",), log: Callable[[str], None] = print,
                 progress: Callable[[int, int, str], None] | None = None, gallery: bool = True,
                 device: str = "cpu"):
        unknown = [c for c in codecs if c not in TRADITIONAL]
        if unknown:
            raise InputError(f"unknown codec(s) {', '.join(unknown)}: choose from {', '.join(TRADITIONAL)}")
        self.codecs = [REFERENCE] + [c for c in codecs if c != REFERENCE]  # the reference is always measured
        self.families, self.out, self.log, self.gallery = families, Path(out), log, gallery
        self.device = device  # where the learned codecs run (and are timed); decoding stays exact anywhere
        self.progress = progress or (lambda i, n, s: None)
        self.scenes = benchmark_scenes(data, split, val_locations)
        self._models: dict[str, list] | None = None
        if not self.scenes:
            raise InputError(f"{data}: no {split} images found (a data root with test/, a folder of GeoTIFFs or a raster file)")
        self.split = split
        self.out.mkdir(parents=True, exist_ok=True)
        self.results_path = self.out / "results.json"
        self.results = json.loads(self.results_path.read_text()) if self.results_path.is_file() else {}
        self.results.setdefault("images", {})
        self.results.setdefault("families", {})

    # -- measuring (resumable: one saved entry per image and codec / family) -------------------
    def _save(self) -> None:
        from ..container import atomic_write

        atomic_write(self.results_path, json.dumps(self.results, indent=1).encode(), force=True)

    def models(self) -> dict[str, list]:
        """Each family's loaded rate points (loaded once)."""
        from ..checkpoint import load_model

        if self._models is None:
            self._models = {f.name: [load_model(m, device=self.device) for m in f.models] for f in self.families}
        return self._models

    def run(self) -> dict:
        from ..data.scenes import read_intensity

        models = self.models()
        for f in self.families:
            ms = models[f.name]
            self.results["families"][f.name] = {
                "models": [{"name": m.name, "arch": m.arch, "hash": m.weights_hash(), "config": m.config,
                            "params": int(sum(p.numel() for p in m.parameters()))} for m in ms], "refine": f.refine,
                "ladder": f.ladder, "quality": f.quality,
                "device": self.device}
        todo = [(s, c) for s in self.scenes for c in self.codecs + [f.name for f in self.families]]
        done_before = 0
        for i, (s, key) in enumerate(todo):
            entry = self.results["images"].setdefault(s.path.name, {})
            sig = self._signature(key)
            self.progress(i, len(todo), f"{s.path.stem}: {key}")
            if entry.get(key, {}).get("signature") == sig:
                done_before += 1
                continue
            img = read_intensity(s.path)
            dom = BenchmarkDomain(img)
            ref = dom(img)
            ref_int = _domain_to_intensity(dom, ref)
            t0 = time.perf_counter()
            if key in TRADITIONAL:
                pts = sweep(key, img, dom, ref, ref_int)
                speed = None
            else:
                fam = next(f for f in self.families if f.name == key)
                pts, enc_s, dec_s = self._learned(models[key], img, dom, ref, ref_int, fam.refine, fam.ladder,
                                                  fam.quality)
                speed = {"encode_mp_s": img.size / 1e6 / enc_s, "decode_mp_s": img.size / 1e6 / dec_s}
            entry[key] = {"signature": sig, "points": pts, "seconds": round(time.perf_counter() - t0, 2), "speed": speed}
            self._save()
        self.progress(len(todo), len(todo), "done")
        if done_before:
            self.log(f"resumed: {done_before} of {len(todo)} (image, codec) results were already in {self.results_path}")
        self.summarise()
        return self.results

    def _signature(self, key: str) -> str:
        if key in TRADITIONAL:
            fn, knobs, _ = TRADITIONAL[key]
            return f"{key}:{[round(float(k), 6) for k in knobs]}|fidelity1"
        fam = self.results["families"][key]
        return "+".join(m["hash"] for m in fam["models"]) + (f"|refine{fam['refine']}" if fam.get("refine") else "") \
            + (f"|mse-ladder{list(LADDER)}@{quality_signature(len(fam['models']), layer_bases)}" if fam.get("ladder") else "") \
            + (f"|quality{quality_signature(len(fam['models']))}" if fam.get("quality") else "") + "|fidelity1" \
            + f"|container{FORMAT_VERSION}"  # sizes depend on the container format (the newest written)

    @staticmethod
    def _learned(models, img, dom, ref, ref_int, refine: int = 0, ladder: bool = False, quality: bool = False):
        from ..api import decode, encode

        pts, enc, dec = [], 0.0, 0.0
        # (label, encode kwargs): the rate points, or the continuous qualities over them
        runs = [(f"quality={q:g}", {"model": models, "quality": q}) for q in quality_grid(len(models))] \
            if quality else [(m.name, {"model": m}) for m in models]
        for label, kw in runs:
            t = time.perf_counter()
            data = encode(img, refine=refine, precision="fp32", **kw)  # the reference analysis, on any hardware
            t1 = time.perf_counter()
            rec = decode(data, models)
            t2 = time.perf_counter()
            enc, dec = enc + t1 - t, dec + t2 - t1
            pts.append({**measure(ref, ref_int, dom, dom(rec), len(data), img, rec), "model": label})
        n = len(runs)
        if ladder:  # what --psnr / --bpp choose from: MSE layers on each of the search's bases
            lad = []
            for qb, e in ladder_grid(len(models), lambda: lad[-1]["bpp"] > LADDER_TOP):
                data = encode(img, models, quality=qb, refine=refine, precision="fp32", max_error=e, bound=False)
                rec = decode(data, models)
                lad.append({**measure(ref, ref_int, dom, dom(rec), len(data), img, rec),
                            "model": f"quality={qb:g}+mse_layer={e:g}"})
            pts = pareto(pts + lad)
        return sorted(pts, key=lambda p: p["bpp"]), enc / n, dec / n

    # -- statistics ------------------------------------------------------------------------------
    def curves(self) -> list[str]:
        return [f.name for f in self.families] + self.codecs

    def summarise(self) -> None:
        from scipy.stats import wilcoxon

        imgs = self.results["images"]
        names = [s.path.name for s in self.scenes]
        summary = {}
        for c in self.curves():
            if c == REFERENCE:
                continue
            per_image, per_image_db, per_image_pc, d_at = {}, {}, {}, {}
            for n in names:
                ref_pts, pts = imgs[n][REFERENCE]["points"], imgs[n][c]["points"]
                curves = ([p["bpp"] for p in ref_pts], [p["psnr"] for p in ref_pts],
                          [p["bpp"] for p in pts], [p["psnr"] for p in pts])
                for out, fn in ((per_image, bd_rate), (per_image_db, bd_psnr), (per_image_pc, bd_rate_pchip)):
                    try:
                        out[n] = fn(*curves)
                    except ValueError:
                        out[n] = None
            for r in RATES:
                d = [at_rate(imgs[n][c]["points"], r) - at_rate(imgs[n][REFERENCE]["points"], r) for n in names
                     if at_rate(imgs[n][c]["points"], r) is not None and at_rate(imgs[n][REFERENCE]["points"], r) is not None]
                p = None
                if len(d) >= 2 and any(abs(x) > 0 for x in d):
                    p = float(wilcoxon(d).pvalue)
                d_at[str(r)] = {"n": len(d), "mean_dpsnr": float(np.mean(d)) if d else None,
                                "median_dpsnr": float(np.median(d)) if d else None, "wilcoxon_p": p}
            vals = [v for v in per_image.values() if v is not None]
            vals_db = [v for v in per_image_db.values() if v is not None]
            vals_pc = [v for v in per_image_pc.values() if v is not None]
            summary[c] = {"bd_rate": float(np.mean(vals)) if vals else None, "bd_rate_per_image": per_image,
                          "bd_psnr": float(np.mean(vals_db)) if vals_db else None, "bd_psnr_per_image": per_image_db,
                          "bd_rate_pchip": float(np.mean(vals_pc)) if vals_pc else None,
                          "bd_rate_pchip_per_image": per_image_pc, "dpsnr_at": d_at}
        # the headline: mean PSNR at 0.5 / 1 / 2 bpp over the images each curve reaches, every curve
        self.results["psnr_at"] = {c: {str(r): _mean_at([imgs[n][c]["points"] for n in names], r) for r in HEADLINE_RATES}
                              for c in self.curves()}
        self.results["summary"] = summary
        self._save()

    # -- report ----------------------------------------------------------------------------------
    def report(self) -> Path:
        from ..container import atomic_write

        imgs, names = self.results["images"], [s.path.name for s in self.scenes]
        summ = self.results["summary"]
        rep = Report(f"sarcodec benchmark ({self.split} split, {len(names)} images)")
        rep.p("Benchmark domain: dB of linear intensity clipped to each original's 0.1/99.9 percentiles, "
              "scaled to [0, 1]; PSNR, MS-SSIM and EPI there; ENL ratio in linear intensity over homogeneous "
              "blocks of the original (1 = speckle kept, > 1 = smoothed); bpp = 8 x bytes / pixels from the "
              "whole file. BD-rate per image against JPEG 2000, then averaged (negative = fewer bits).")
        rows = []
        for f in self.families:
            for m in self.results["families"][f.name]["models"]:
                rows.append([f.name, m["name"], m["arch"], f"{m['params'] / 1e6:.2f} M", m["hash"]])
        rep.table("Learned codecs", ["family", "rate point", "architecture", "parameters", "weights hash"], rows)
        rep.table("Traditional codecs", ["codec", "configuration"], [[c, TRADITIONAL[c][2]] for c in self.codecs])

        head = ["codec", "BD-rate", "BD-rate (PCHIP)", "BD-PSNR"] + [f"PSNR @{r} bpp (n)" for r in HEADLINE_RATES]
        rows = []
        for c in self.curves():
            s = summ.get(c)
            at = self.results["psnr_at"][c]
            rows.append([c, "0 (reference)" if s is None else _pct(s["bd_rate"]),
                         "0 (reference)" if s is None else _pct(s["bd_rate_pchip"]),
                         "0 (reference)" if s is None else _db(s["bd_psnr"])]
                        + ["-" if at[str(r)]["n"] == 0 else f"{at[str(r)]['mean']:.2f} dB ({at[str(r)]['n']})"
                           for r in HEADLINE_RATES])
        rep.table("Headline: against JPEG 2000 (BD, mean over images) and mean PSNR at 0.5 / 1 / 2 bpp "
                  "(over the n images a curve reaches: compare rows only where n agrees)", head, rows)

        head = ["codec", "BD-rate vs JPEG 2000 (mean)"] + [n.replace(".tif", "") for n in names]
        rows = [[REFERENCE, "0 (reference)"] + ["0"] * len(names)]
        for c, s in summ.items():
            rows.append([c, _pct(s["bd_rate"])] + [_pct(s["bd_rate_per_image"][n]) for n in names])
        rep.table("BD-rate against JPEG 2000", head, rows)
        head = ["codec", "BD-rate (PCHIP) vs JPEG 2000 (mean)"] + [n.replace(".tif", "") for n in names]
        rows = [[c, _pct(s["bd_rate_pchip"])] + [_pct(s["bd_rate_pchip_per_image"][n]) for n in names]
                for c, s in summ.items()]
        rep.table("BD-rate against JPEG 2000, log-rate interpolated piecewise (PCHIP, as JVET's test conditions) "
                  "instead of one least-squares cubic per curve", head, rows)
        head = ["codec", "BD-PSNR vs JPEG 2000 (mean)"] + [n.replace(".tif", "") for n in names]
        rows = [[c, _db(s["bd_psnr"])] + [_db(s["bd_psnr_per_image"][n]) for n in names] for c, s in summ.items()]
        rep.table("BD-PSNR against JPEG 2000 (dB at equal rate; positive = better)", head, rows)

        head = ["codec"] + [f"ΔPSNR @{r} bpp (n, Wilcoxon p)" for r in RATES]
        rows = []
        for c, s in summ.items():
            row = [c]
            for r in RATES:
                d = s["dpsnr_at"][str(r)]
                pv = "-" if d["wilcoxon_p"] is None else f"{d['wilcoxon_p']:.3f}"
                row.append("-" if not d["n"] else f"{d['mean_dpsnr']:+.2f} dB (n={d['n']}, p={pv})")
            rows.append(row)
        rep.table("PSNR against JPEG 2000 at the same bpp (paired over images; Wilcoxon signed-rank, two-sided)",
                  head, rows)
        rep.p("With 6 images the smallest two-sided Wilcoxon p-value possible is 0.031: read p as a sign test "
              "of consistency across images, not as proof.")

        keys = ("bpp", "psnr", "ms_ssim", "enl_ratio", "epi", "bias_db", "peak_err_db", "max_err_db")
        for f in self.families:
            by_label: dict[str, list[dict]] = {}  # rate points, qualities, layers (a ladder keeps its Pareto points)
            for n in names:
                for p in imgs[n][f.name]["points"]:
                    by_label.setdefault(p["model"].split("+")[-1], []).append(p)  # a layer's base varies
            rows = [[label, str(len(pts))] + [f"{np.nanmean([p.get(k, np.nan) for p in pts]):.3f}" for k in keys]
                    for label, pts in sorted(by_label.items(), key=lambda kv: np.mean([p["bpp"] for p in kv[1]]))]
            rep.table(f"{f.name}: SAR statistics per point (mean over the n points on the curves of all images; "
                      "a layer step counts once for every base it is on)",
                      ["point", "n", "bpp", "PSNR", "MS-SSIM", "ENL ratio", "EPI", "bias dB", "top-0.1% |err| dB",
                       "max |err| dB"], rows)
        rows = []
        for c in self.curves():
            row = [c]
            for r in HEADLINE_RATES:
                vals = {k: [at_rate(imgs[n][c]["points"], r, k) for n in names
                            if all(k in p for p in imgs[n][c]["points"])] for k in ("bias_db", "peak_err_db", "max_err_db")}
                vals = {k: [x for x in v if x is not None] for k, v in vals.items()}
                row.append("-" if not vals["bias_db"] else
                           f"{np.mean(vals['bias_db']):+.3f} / {np.mean(vals['peak_err_db']):.2f} / "
                           f"{np.mean(vals['max_err_db']):.1f} ({len(vals['bias_db'])})")
            rows.append(row)
        rep.table("SAR fidelity at 0.5 / 1 / 2 bpp: mean-intensity bias (dB) / mean |dB error| on the brightest "
                  "0.1% of pixels / largest |dB error| (n images); in linear intensity, nothing clipped. "
                  "`-full` codecs are given the image's whole dB range instead of the clipped domain",
                  ["codec"] + [f"@{r} bpp" for r in HEADLINE_RATES], rows)
        if self.families:
            rows = []
            for f in self.families:
                fm = self.results["families"][f.name]["models"]
                sp = [imgs[n][f.name]["speed"] for n in names if imgs[n][f.name].get("speed")]
                rows.append([f.name, fm[0]["arch"], f"{np.mean([m['params'] for m in fm]) / 1e6:.2f} M",
                             f"{_macs(fm[0]) / 1e3:.1f}", f"{np.median([s['encode_mp_s'] for s in sp]):.2f}",
                             f"{np.median([s['decode_mp_s'] for s in sp]):.2f}", _pct(summ[f.name]["bd_rate"]),
                             _db(summ[f.name]["bd_psnr"])])
            devices = sorted({self.results["families"][f.name].get("device", "cpu") for f in self.families})
            rep.table(f"Architecture comparison (speed on this machine's {'/'.join(devices)}, median over images; BD-rate needs the "
                      "curves to overlap in PSNR, BD-PSNR only in rate)",
                      ["family", "architecture", "parameters", "kMAC/pixel (g_a + g_s)", "encode MP/s", "decode MP/s",
                       "BD-rate vs JPEG 2000", "BD-PSNR vs JPEG 2000"], rows)

        fig_dir = self.out / "figures"
        fig_dir.mkdir(exist_ok=True)
        for key, label in (("psnr", "PSNR (dB)"), ("ms_ssim", "MS-SSIM"), ("enl_ratio", "ENL ratio"), ("epi", "EPI")):
            panels = [(n.replace(".tif", ""), {c: [(p["bpp"], p[key]) for p in imgs[n][c]["points"]] for c in self.curves()})
                      for n in names]
            path = fig_dir / f"rd_{key}.svg"
            atomic_write(path, rd_figure(panels, "bits per pixel", label).encode(), force=True)
            rep.image(f"figures/{path.name}", f"{label} against bpp, one panel per image")
        if self.gallery and self.families:
            self._gallery(rep, fig_dir)
        return rep.write(self.out)

    def _gallery(self, rep: Report, fig_dir: Path) -> None:
        """Original | learned | JPEG 2000 at the same bytes (a 256 px window around the brightest
        target), error maps, and a zoom on the target, for each image at the learned family's rate
        point nearest 0.75 bpp. Crops keep the PNGs small enough to commit: speckle does not compress."""
        from ..api import decode, encode
        from ..container import atomic_write
        from ..data.scenes import read_intensity

        fam = self.families[0]
        models = self.models()[fam.name]
        for s in self.scenes:
            pts = self.results["images"][s.path.name][fam.name]["points"]
            pick = min(pts, key=lambda p: abs(np.log(p["bpp"] / 0.75)))
            m = next(x for x in models if x.name == pick["model"])
            img = read_intensity(s.path)
            dom = BenchmarkDomain(img)
            ref = dom(img)
            data = encode(img, m, refine=fam.refine, precision="fp32")
            ours = np.clip(dom(decode(data, m)), 0, 1)
            j_data, j_dec, _ = match_bytes(jpeg2000, dom.to_uint16(img), len(data), 10.0, 90.0)
            j2k = np.clip(j_dec / 65535.0, 0, 1)
            err = lambda x: np.clip(np.abs(x - ref) * 5, 0, 1)  # noqa: E731  (errors x5)
            r, c = np.unravel_index(np.argmax(ref), ref.shape)

            def crop(x, half, scale=1):  # a window around the brightest target, clamped to the image
                r0 = int(np.clip(r - half, 0, max(0, ref.shape[0] - 2 * half)))
                c0 = int(np.clip(c - half, 0, max(0, ref.shape[1] - 2 * half)))
                return np.kron(x[r0:r0 + 2 * half, c0:c0 + 2 * half], np.ones((scale, scale)))

            name = f"gallery_{s.path.stem}.png"
            labels = [f"original ({s.path.stem})", f"{m.name}: {8 * len(data) / img.size:.3f} bpp, {psnr(ref, ours):.2f} dB",
                      f"JPEG 2000: {8 * len(j_data) / img.size:.3f} bpp, {psnr(ref, j2k):.2f} dB"]
            png = image_grid([[crop(x, 128) for x in (ref, ours, j2k)],
                              [None, crop(err(ours), 128), crop(err(j2k), 128)],
                              [crop(x, 32) for x in (ref, ours, j2k)]],
                             [labels, ["", "|error| x5", "|error| x5"], ["4x zoom on the brightest target"] * 3],
                             ["256 px around the brightest target", "error", "zoom"])
            atomic_write(fig_dir / name, png, force=True)
            rep.image(f"figures/{name}",
                      f"{s.path.stem}: original | {m.name} ({8 * len(data) / img.size:.3f} bpp, {psnr(ref, ours):.2f} dB) | "
                      f"JPEG 2000 ({8 * len(j_data) / img.size:.3f} bpp, {psnr(ref, j2k):.2f} dB); row 1: 256 px around the brightest target; "
                      f"row 2: |error| x5; row 3: 4x zoom on the target")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def _db(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f} dB"


def _mean_at(curves: list[list[dict]], r: float) -> dict:
    vals = [v for v in (at_rate(c, r) for c in curves) if v is not None]
    return {"n": len(vals), "mean": float(np.mean(vals)) if vals else None}


def _macs(model_info: dict) -> float:
    from ..models import create_model
    from .metrics import macs_per_pixel

    cfg = dict(model_info["config"])
    arch = cfg.pop("arch", model_info["arch"])
    return macs_per_pixel(create_model(arch, **cfg))
