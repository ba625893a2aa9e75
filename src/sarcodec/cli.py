"""The ``sarcodec`` command line.

Exit codes (see ``sarcodec.errors``): 0 ok, 1 other error, 2 usage, 3 bad input, 4 model problem,
5 bad/corrupt container, 6 out of memory / device, 7 output problem (exists, not writable).
"""
from __future__ import annotations

import os

import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import OutputError, ResourceError, SarcodecError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Learned compression for Sentinel-1 SAR imagery.")
console = Console(stderr=False)
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from . import __version__
        from .container import FORMAT_VERSION, format_name

        console.print(f"sarcodec {__version__} (reads and writes .sarc format {format_name(FORMAT_VERSION)})")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit")) -> None:
    """Learned compression for Sentinel-1 SAR imagery."""


@app.command()
def demo(
    out: Path = typer.Option(Path("sarcodec-demo"), "--out", "-o", help="Output directory"),
    model: str = typer.Option("default", "--model", "-m", help="Bundled model name or checkpoint path"),
    size: int = typer.Option(512, help="Side of the synthetic scene (pixels)"),
    seed: int = typer.Option(0, help="Seed of the synthetic scene"),
    bpp_target: float = typer.Option(1.0, "--bpp", help="Also code at this rate target (the --bpp path); 0: skip"),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs that the demo did not write"),
) -> None:
    """Compress and decompress a synthetic Sentinel-1-like scene at the default settings and at a rate
    target; compare each with JPEG 2000 at the same size. Re-running replaces the demo's own outputs."""
    import numpy as np

    from . import decode, encode, load_model
    from .container import atomic_write
    from .data import synthetic_sar
    from .evaluation.codecs import jpeg2000, match_bytes
    from .evaluation.metrics import BenchmarkDomain, bpp, psnr

    if size < 16:
        raise SarcodecError("--size must be at least 16")
    if not 0 <= bpp_target <= 16:
        raise SarcodecError("--bpp must be between 0 (skip) and 16")
    out.mkdir(parents=True, exist_ok=True)
    mine = force or _written_by_demo(out / "demo.sarc")  # a rerun replaces its own files
    m = load_model(model)
    img = synthetic_sar((size, size), seed=seed)
    n = img.size
    dom = BenchmarkDomain(img)
    ref = dom(img)
    t = Table(title=f"sarcodec demo: synthetic {size}x{size} SAR (linear intensity, float32), model {m.name!r}")
    for col in ("codec", "bytes", "bpp", "ratio vs float32", "PSNR (dB, benchmark domain)", "encode / decode MP/s"):
        t.add_column(col, justify="right")
    runs = [("default settings", {})]
    if bpp_target:
        from .api import family_members
        from .checkpoint import family_name

        runs.append((f"--bpp {bpp_target:g}", {"bpp": bpp_target}))
        family = family_members(family_name(model)) if not Path(model).suffix else [m]
    shown = []
    for label, kw in runs:
        t0 = time.perf_counter()
        data = encode(img, family if kw else m, metadata={"written_by": DEMO_SOURCE}, **kw)
        t1 = time.perf_counter()
        rec = decode(data, family if kw else m)
        t2 = time.perf_counter()
        p_ours = psnr(ref, dom(rec))
        j2k, j2k_dec, _ = match_bytes(jpeg2000, dom.to_uint16(img), len(data), 10.0, 90.0)
        p_j2k = psnr(ref, j2k_dec / 65535.0)
        t.add_row(f"sarcodec, {label}", f"{len(data)}", f"{bpp(len(data), n):.3f}", f"{32 / bpp(len(data), n):.1f}x",
                  f"{p_ours:.2f} ({p_ours - p_j2k:+.2f})", f"{n / 1e6 / (t1 - t0):.3g} / {n / 1e6 / (t2 - t1):.3g}")
        t.add_row("JPEG 2000 (16-bit), same size", f"{len(j2k)}", f"{bpp(len(j2k), n):.3f}",
                  f"{32 / bpp(len(j2k), n):.1f}x", f"{p_j2k:.2f}", "")
        shown.append((data, rec, j2k, j2k_dec, label, p_ours, p_j2k))
    console.print(t)
    data, rec, j2k, j2k_dec, label, p_ours, p_j2k = shown[-1]
    atomic_write(out / "demo.sarc", data, force=mine)
    _side_by_side(out / "demo.png", [ref, dom(rec), np.clip(j2k_dec / 65535.0, 0, 1)],
                  ["original (synthetic)", f"sarcodec {label}: {bpp(len(data), n):.3f} bpp, {p_ours:.2f} dB",
                   f"JPEG 2000: {bpp(len(j2k), n):.3f} bpp, {p_j2k:.2f} dB"], mine)
    console.print(f"wrote {out / 'demo.sarc'} ({label}) and {out / 'demo.png'} (original | sarcodec | JPEG 2000)")


DEMO_SOURCE = "sarcodec demo"


def _written_by_demo(path: Path) -> bool:
    """Whether ``path`` is a .sarc an earlier demo wrote (then a rerun may replace it)."""
    from .container import ContainerReader

    if not path.exists():
        return False
    try:
        with ContainerReader(path) as r:
            return r.header.metadata.get("written_by") == DEMO_SOURCE
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


def _side_by_side(path: Path, images: list, titles: list[str], force: bool) -> None:
    from .container import atomic_write
    from .evaluation.plots import image_grid

    atomic_write(path, image_grid([images], [titles], suptitle="benchmark domain: dB clipped to the original's "
                                  "0.1/99.9 percentiles"), force=force)


def _progress():
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed / 1e6:.2f} MP/s" if speed else "- MP/s")

    return Progress(TextColumn("{task.description}"), BarColumn(), Rate(), TimeRemainingColumn(), console=err,
                    transient=False, disable=not err.is_terminal)


def _raster_shape(path: Path) -> Optional[tuple[int, int, int]]:
    try:
        import rasterio

        with rasterio.open(path) as ds:
            return ds.count, ds.height, ds.width
    except Exception:  # noqa: BLE001 - compress_file reports unreadable inputs properly
        return None


def _raster_pixels(path: Path) -> Optional[int]:
    s = _raster_shape(path)
    return None if s is None else s[0] * s[1] * s[2]


def _sarc_pixels(path: Path, window) -> Optional[int]:
    try:
        from .container import ContainerReader

        with ContainerReader(path) as r:
            nb, rows, cols = r.header.shape
        return nb * (window[2] * window[3] if window else rows * cols)
    except Exception:  # noqa: BLE001 - decompress_file reports damaged files properly
        return None


def _batch(fn, files: list[Path], out: Path, cluster: Optional[str], model: Optional[str], skip_existing: bool,
           kwargs: dict) -> None:
    """Several files: one task each (here or on a Dask cluster), continuing past failures; a
    summary table, a log line per file, and the exit code of the first failure (0 if none)."""
    from .batch import batch_exit_code, close_cluster, cluster_client, output_paths, remove_temporaries, summary_table

    client = cluster_client(cluster) if cluster else None
    done = [0]

    def log(row: dict) -> None:
        done[0] += 1
        bpp = "" if row["bpp"] is None else f", {row['bpp']:.3f} bpp"
        err.print(f"[{done[0]}/{len(files)}] {row['input']} -> {row['output']}: {row['status']}{bpp}"
                  + (f" ({row['error']})" if row["error"] else ""))

    interrupted = False
    try:
        rows = fn(files, out, client, model=model, skip_existing=skip_existing, progress=log, **kwargs)
    except BaseException:
        interrupted = True
        raise
    finally:
        if client is not None:
            close_cluster(client, interrupted)
            if interrupted:  # the cluster's workers are gone: what they were writing goes too
                remove_temporaries(output_paths(files, out, ".sarc" if fn.__name__.startswith("compress") else ".tif"))
    console.print(summary_table(rows))
    code = batch_exit_code(rows)
    if code:
        sys.exit(code)


def _expand_inputs(inputs: list[str], suffixes: tuple[str, ...]) -> list[Path]:
    """Files, globs and directories (searched recursively for ``suffixes``) -> input files."""
    import glob

    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in suffixes and f.is_file())
        elif any(ch in item for ch in "*?["):
            files += sorted(Path(f) for f in glob.glob(item))
        else:
            files.append(p)
    if not files:
        raise _input_error(f"no input files in {', '.join(inputs)}")
    return files


def _out_target(out: Optional[str], files: list[Path], batch: bool) -> Path:
    """Where outputs go: ``-o`` as given, a directory (created) when it ends with a separator,
    already is one or there are several inputs; without ``-o``, beside the inputs (one input:
    the same name with the new suffix; several: their common folder, so each lands beside its
    input)."""
    import os

    if out is None:
        if not batch:
            return files[0].parent
        return Path(os.path.commonpath([str(f.resolve().parent) for f in files]))
    p = Path(out)
    if batch or out.endswith(("/", os.sep)) or p.is_dir():
        if p.exists() and not p.is_dir():
            raise OutputError(f"{p}: exists and is not a directory (several inputs need a directory for -o)")
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{p}: cannot create the output directory ({e.strerror})") from e
    return p


def _outputs(files: list[Path], out: Path, suffix: str) -> list[Path]:
    """One input's output: ``out``, or a file in it when it is a directory (several inputs go
    through :func:`_batch`)."""
    return [out / (f.stem + suffix) if out.is_dir() else out for f in files]


@app.command()
def compress(
    inputs: list[str] = typer.Argument(..., help="Raster files (GeoTIFF/COG/any GDAL raster), directories or globs"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output .sarc file, or a directory (created if "
                                      "needed; a trailing / or several inputs make it one). Default: beside each input"),
    quality: Optional[float] = typer.Option(None, "--quality", "-q",
                                            help="Quality of the bundled family, continuous: 0 (smallest) to 5; "
                                                 "1-4 are its trained rate points, values between move the "
                                                 "quantisation step. Default: the model's own point (default = "
                                                 "quality 2, ~0.5 bpp on GRD); one pass, ~0.4 MP/s on 2 cores"),
    model: str = typer.Option("default", "--model", "-m", help="Bundled model name or checkpoint path: default "
                                                                  "(best rate-distortion) or fast (same latents, "
                                                                  "decodes ~3x faster, +0.4-3% BD-rate)"),
    kind: Optional[str] = typer.Option(None, help="Input values: intensity, amplitude, dn, db (default: dn for integers, intensity for floats)"),
    tile: int = typer.Option(1024, help="Tile size in pixels (multiple of 64)"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 (default: cuda if available)"),
    batch: Optional[int] = typer.Option(None, "--batch", min=1, help="Tiles per analysis-transform call (default: 4 on a GPU, 1 on a CPU)"),
    refine: int = typer.Option(0, "--refine", min=0,
                               help="Steps of encoder-side latent refinement per tile: smaller files at the same quality, "
                                    "slower encoding (about 50 is worth it); decoding is unchanged"),
    precision: Optional[str] = typer.Option(None, "--precision",
                                            help="Analysis transform in fp32 or bf16 (default: bf16 where the GPU or CPU "
                                                 "has bf16 units); bf16 costs +0.04% BD-rate, decoding is unaffected"),
    workers: Optional[int] = typer.Option(None, "--workers", min=0,
                                          help="Processes coding tiles in parallel: latents (default: CPU cores - 1 "
                                               "with a GPU, 0 on a CPU) and pixel layers (default: one per "
                                               "core); the output does not change"),
    max_error: Optional[float] = typer.Option(None, "--max-error",
                                              help="Every valid pixel within this many dB of the original, by "
                                                   "construction (a residual layer), in the output's dtype: on "
                                                   "integer rasters the rounding to integers is covered too (a finer "
                                                   "step where values are small); without -q, on the rate point "
                                                   "that gives the smallest file"),
    psnr: Optional[float] = typer.Option(None, "--psnr", help="Target PSNR (dB, clipped dB domain): the smallest file "
                                                               "that reaches it (searches the quality, and MSE pixel layers on "
                                                               "each base quality, by trial encodes: ~0.025 MP/s on 2 cores up to "
                                                               "~3 MP per band; a larger raster is searched on a sample: "
                                                               "~0.08 MP/s at 4096^2)"),
    bpp: Optional[float] = typer.Option(None, "--bpp", help="Target bits per pixel: the best PSNR within it (the best "
                                                             "rate-distortion; searched like --psnr)"),
    clip: Optional[str] = typer.Option(None, "--clip", help="LO,HI percentiles of the coded dB range (default 0.1,99.9)"),
    outliers: str = typer.Option("high", "--outliers",
                                 help="Pixels beyond the coded range kept within 0.35 dB: high (bright targets), "
                                      "both, none"),
    bias: bool = typer.Option(True, "--bias/--no-bias", help="Per-tile correction of mean linear intensity"),
    lossless: bool = typer.Option(False, "--lossless", help="Integer rasters (GRD DN) coded exactly (no learned layer; "
                                                              "decoding needs no model)"),
    max_pixels: float = typer.Option(4e9, "--max-pixels", help="Refuse inputs larger than this (bands x rows x cols)"),
    nodata: Optional[float] = typer.Option(None, "--nodata", help="Value marking invalid pixels (default: the "
                                                                  "file's own nodata); the output declares it"),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="Run the batch on Dask: local, local:N (N worker "
                                                                  "processes) or tcp://HOST:PORT (a scheduler)"),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Leave outputs that already exist alone"),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs"),
) -> None:
    """Compress rasters to .sarc (streamed tile by tile; memory does not grow with the scene)."""
    from .api import family_members
    from .checkpoint import load_model
    from .files import compress_file

    files = _expand_inputs(inputs, (".tif", ".tiff", ".vrt", ".img", ".jp2"))
    out = _out_target(out, files, len(files) > 1 or bool(cluster) or skip_existing)
    dev = _device(device)
    if sum(v is not None for v in (max_error, psnr, bpp)) + lossless > 1:
        raise _input_error("give one of --max-error, --psnr, --bpp, --lossless")
    if quality is not None and (model.endswith(".pt") or Path(model).is_file()):
        raise _input_error("--quality picks a rate point of a bundled family: it does not apply to a checkpoint "
                           f"file ({model})")
    if quality is not None and (psnr is not None or bpp is not None):
        raise _input_error("--quality conflicts with --psnr / --bpp (the search picks the quality)")
    family = None
    if quality is not None:
        from .checkpoint import family_name

        family = family_name(model)
    clip_pct = None
    if clip is not None:
        try:
            clip_pct = tuple(float(v) for v in clip.split(","))
        except ValueError:
            clip_pct = ()
        if len(clip_pct) != 2:
            raise _input_error(f"--clip must be LO,HI percentiles, got {clip!r}")
    if len(files) > 1 or cluster or skip_existing:
        from .batch import compress_files

        _batch(compress_files, files, out, cluster, family or model, skip_existing,
               dict(quality=quality, kind=kind, tile_size=tile, force=force, batch=batch, refine=refine, workers=workers,
                    precision=precision, max_error=max_error, psnr=psnr, bpp=bpp, clip=clip_pct, outliers=outliers,
                    bias=bias, lossless=lossless, max_pixels=max_pixels, nodata=nodata,
                    device=str(dev) if dev else None))
        return
    outs = _outputs(files, out, ".sarc")
    if family is not None:
        m = [mm.to(dev) for mm in family_members(family)]  # quality_point picks a rate point and step
    elif max_error is not None or psnr is not None or bpp is not None:
        m = [mm.to(dev) for mm in family_members(model)]  # a family's rate points (or the one model)
    else:
        m = load_model(model, device=dev)
    if psnr is not None or bpp is not None:  # say up front what a search costs
        from .api import search_seconds

        shapes = [s for s in map(_raster_shape, files) if s is not None]
        secs, px = sum(search_seconds(*s) for s in shapes), sum(b * r * c for b, r, c in shapes)
        when = f"about {max(1, round(secs / 60))} min" if secs >= 90 else f"about {max(1, round(secs))} s"
        err.print(f"{'--psnr' if psnr is not None else '--bpp'}: the encoder searches by trial encodes (8-15 of "
                  f"a raster up to ~3 MP per band; of a larger one, ~15 of a 1 MP sample per band, then the "
                  f"whole's base and its pixel layer, each coded about once): {when} for {px / 1e6:.1f} MP "
                  f"here on 2 CPU cores. The default settings encode in one pass (~1 MP/s).")
    with _progress() as prog:
        for f, o in zip(files, outs):
            task = prog.add_task(f.name, total=_raster_pixels(f))  # a total: the bar shows an ETA
            t0 = time.perf_counter()
            r = compress_file(f, o, m, quality=quality, kind=kind, tile_size=tile, force=force, batch=batch, refine=refine,
                              workers=workers, precision=precision, max_error=max_error, psnr=psnr, bpp=bpp,
                              clip=clip_pct, outliers=outliers, bias=bias, lossless=lossless, max_pixels=max_pixels,
                              nodata=nodata, progress=lambda n, t=task: prog.advance(t, n))
            console.print(f"{f} -> {o}: {r['bytes']} bytes, {r['bpp']:.3f} bpp, {r['ratio']:.1f}x "
                          f"({r['pixels'] / 1e6 / (time.perf_counter() - t0):.2f} MP/s)")


@app.command()
def decompress(
    inputs: list[str] = typer.Argument(..., help=".sarc files, directories or globs"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output GeoTIFF, or a directory (created if needed; "
                                      "a trailing / or several inputs make it one). Default: beside each input"),
    window: Optional[str] = typer.Option(None, help="col_off,row_off,width,height: decode only this window"),
    dtype: Optional[str] = typer.Option(None, help="Output data type (default: like the input, e.g. uint16)"),
    kind: Optional[str] = typer.Option(None, help="Output values: intensity, amplitude, dn, db (default: like the input)"),
    cog: bool = typer.Option(False, "--cog", help="Write a Cloud-Optimized GeoTIFF"),
    overview_resampling: str = typer.Option("average", "--overview-resampling",
                                            help="COG overviews: average (of the output values), nearest, bilinear, "
                                                 "cubic, mode, rms"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint, if the file's model is not bundled"),
    device: Optional[str] = typer.Option(None, help="Where the synthesis transform runs: cpu, cuda, cuda:1 "
                                                    "(default: cuda if available); the latents are identical everywhere"),
    workers: Optional[int] = typer.Option(None, "--workers", min=0,
                                          help="Processes entropy-decoding tiles and their pixel layers ahead (default: "
                                               "CPU cores - 1 with a GPU; on a CPU, one per core for files with pixel "
                                               "layers, else 0); the output does not change"),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="Run the batch on Dask: local, local:N or tcp://HOST:PORT"),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Leave outputs that already exist alone"),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs"),
) -> None:
    """Decompress .sarc files to GeoTIFF with the original georeferencing, tags and nodata."""
    from .files import decompress_file, parse_window
    from .radiometry import check_output_dtype

    files = _expand_inputs(inputs, (".sarc",))
    out = _out_target(out, files, len(files) > 1 or bool(cluster) or skip_existing)
    win = parse_window(window) if window else None
    dev = _device(device)
    check_output_dtype(dtype)
    if len(files) > 1 or cluster or skip_existing:
        from .batch import decompress_files

        _batch(decompress_files, files, out, cluster, model, skip_existing,
               dict(window=win, kind=kind, dtype=dtype, cog=cog, force=force, device=str(dev) if dev else None,
                    workers=workers, overview_resampling=overview_resampling))
        return
    outs = _outputs(files, out, ".tif")
    with _progress() as prog:
        for f, o in zip(files, outs):
            task = prog.add_task(f.name, total=_sarc_pixels(f, win))
            t0 = time.perf_counter()
            r = decompress_file(f, o, model=model, window=win, kind=kind, dtype=dtype, cog=cog, force=force,
                                device=dev, workers=workers, progress=lambda n, t=task: prog.advance(t, n),
                                overview_resampling=overview_resampling)
            if r["saturated"]:
                err.print(f"[yellow]warning:[/yellow] {o}: {r['saturated']} pixels ({100 * r['saturated_fraction']:.2f}%) "
                          f"lie outside {r['dtype']} and were saturated; use --dtype float32 (or a wider type)")
            mp = r["bands"] * r["rows"] * r["cols"] / 1e6
            console.print(f"{f} -> {o}: {r['bands']} x {r['rows']} x {r['cols']} {r['dtype']} "
                          f"({mp / (time.perf_counter() - t0):.2f} MP/s)")


@app.command()
def train(
    config: str = typer.Option(..., "--config", "-c", help="YAML config file, or the name of a packaged one "
                                                            "(default, residual, attention, baseline, hyperprior, resnet-lite)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. lmbda=0.02 model.base_channels=32"),
    quick: bool = typer.Option(False, "--quick", help="Quick-search mode: a short run on small patches"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default runs/<config name>)"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run directory's trainer_state.pt"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda (default: cuda if available)"),
) -> None:
    """Train a codec (rate-distortion loss lambda*D + bpp) from a YAML config."""
    from .training import load_config, run_config

    cfg, data = load_config(config, overrides or [], quick=quick)
    run = out or Path("runs") / (Path(config).stem + ("-quick" if quick else ""))
    dev = _device(device)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 talks
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if main_rank:
        console.print(f"training {cfg.arch} ({cfg.steps} steps, lambda {cfg.lmbda}) on {data.get('source', 'shared')} data"
                      f"{f' in {world} processes' if world > 1 else ''} -> {run}")
    summary = run_config(cfg, data, run, device=dev, resume=resume, progress=True)
    if not main_rank:
        return
    last = summary["history"][-1] if summary["history"] else {}
    console.print(f"done: {summary['steps']} steps in {summary['seconds']} s ({summary['patches_per_s']} patches/s); "
                  f"val bpp {last.get('bpp', float('nan')):.3f} PSNR {last.get('psnr', float('nan')):.2f} dB; "
                  f"checkpoints {run / 'best.pt'}, {run / 'latest.pt'}")


@app.command()
def info(path: Path = typer.Argument(..., help=".sarc file"),
         verify: bool = typer.Option(True, "--verify/--no-verify",
                                     help="Check the CRC of every tile, mask and pixel layer (reads the whole file)")) -> None:
    """Describe a .sarc file: shape, bands, model, bits per pixel; verify its checksums."""
    from .container import ContainerReader, format_name

    if not path.is_file():
        raise _input_error(f"{path}: file not found")
    with ContainerReader(path) as r:
        h = r.header
        wavelet = filtered = 0  # MSE layers in the wavelet domain / with a restoration filter (from the layers)
        if verify:  # a damaged blob is a FormatError (exit 5) before anything is printed
            for e in h.tiles:
                r.tile_bytes(e)
                r.tile_mask(e)
                lay_e = r.tile_layer(e)
                wavelet += lay_e is not None and lay_e.residual is not None
                filtered += lay_e is not None and lay_e.filter is not None
        nb, rows, cols = h.shape
        size = path.stat().st_size
        import numpy as np

        native = np.dtype(h.dtype).itemsize * 8
        console.print(f"[bold]{path}[/bold]  format {format_name(h.version)}, "
                      + (f"checksums of {len(h.tiles)} tiles verified" if verify else "checksums NOT verified (--no-verify)"))
        console.print(f"  raster    {nb} band(s) x {rows} x {cols} {h.dtype}, tiles {len(h.tiles)} of <= {h.tile_size}px")
        console.print(f"  model     {h.model['id']} ({h.model['arch']}, hash {h.model['hash']})")
        console.print(f"  size      {size} bytes, {8 * size / h.pixels:.4f} bpp, {native * h.pixels / 8 / size:.1f}x smaller than {h.dtype}")
        how = [f"analysis in {h.metadata['analysis_precision']}"] if h.metadata.get("analysis_precision") else []
        lay = h.metadata.get("layer")
        if h.metadata.get("lossless"):
            how.append("lossless (integer coder, no learned layer)")
        elif lay:
            parts = []
            if lay.get("max_error_db") is not None:
                parts.append(f"max error {lay['max_error_db']:.4g} dB" if lay.get("bound", True) else
                             f"dense MSE layer, step {2 * lay['max_error_db']:.4g} dB (no per-pixel bound"
                             + (f"; wavelet form on {wavelet}, restoration filter on {filtered} of {len(h.tiles)} tiles)"
                                if verify else ")"))
            if lay.get("outliers", "none") != "none":
                parts.append(f"outliers ({lay['outliers']}) within {lay['outlier_tol_db']} dB")
            if lay.get("bias"):
                parts.append("bias correction")
            how.append("pixel layer: " + ", ".join(parts))
        if h.metadata.get("target"):
            tg = h.metadata["target"]
            knob = "".join(f", {k} {tg[k]}" for k in ("quality", "max_error") if k in tg)
            how.append(", ".join(f"{k} {v}" for k, v in tg.items() if k in ("psnr", "bpp")) +
                       f" target ({'met' if tg.get('met') else 'NOT met'}: {tg.get('psnr_reached')} dB{knob})")
        if h.metadata.get("latent_step"):
            st = h.metadata["latent_step"]
            how.append(f"latent quantisation step {st}/64 (Δ {st / 64:g})")
        if h.metadata.get("refine_steps"):
            how.append(f"latent refinement, {h.metadata['refine_steps']} steps per tile")
        if how:
            console.print(f"  encoder   {', '.join(how)}")
        for i, b in enumerate(h.bands):
            rad = b["radiometry"]
            console.print(f"  band {i + 1}    {b.get('description') or '-'}: {rad['kind']}, clip {rad['lo_db']:.2f}..{rad['hi_db']:.2f} dB, "
                          f"invalid pixels {b.get('invalid', 0)}")
        extra = {k: v for k, v in h.metadata.items() if k != "ndim"}
        if extra:
            console.print(f"  metadata  {', '.join(sorted(extra))}")


@app.command("models")
def models_cmd() -> None:
    """List architectures and bundled trained models."""
    from .checkpoint import bundled_manifest
    from .models import list_models, model_defaults

    t = Table(title="architectures (sarcodec.create_model)")
    for c in ("name", "latent_channels", "base_channels", "latent codec"):
        t.add_column(c)
    for n in list_models():
        d = model_defaults(n)
        t.add_row(n, str(d["latent_channels"]), str(d["base_channels"]), d["latent_codec"])
    console.print(t)
    man = bundled_manifest()
    t = Table(title="bundled models (sarcodec.load_model)")
    for c in ("name", "file", "arch", "notes"):
        t.add_column(c)
    for n, e in sorted(man.get("models", {}).items()):
        t.add_row(n, e["file"], e.get("arch", ""), e.get("notes", ""))
    for a, target in sorted(man.get("aliases", {}).items()):
        t.add_row(a, f"-> {target}", "", "alias")
    console.print(t)


def _run_benchmark(data: Optional[Path], out: Path, specs: list[str], codecs: list[str], split: str,
                   gallery: bool, device: str = "cpu") -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .data.scenes import default_data_dir
    from .evaluation.benchmark import Benchmark, Family

    root = data or default_data_dir()
    if root is None:
        raise _input_error("no data: pass --data DIR (a folder with test/, or train/ for --split val)")
    fams = [Family.parse(s) for s in specs]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=not err.is_terminal) as prog:
        task = prog.add_task("benchmark", total=None)

        def step(i: int, n: int, desc: str) -> None:
            prog.update(task, completed=i, total=n, description=desc)

        b = Benchmark(root, out, fams, codecs, split=split, log=console.print, progress=step, gallery=gallery,
                      device=device)
        res = b.run()
        prog.update(task, description="report (figures, gallery)")
        report = b.report()
    console.print(f"wrote {report}, {report.with_suffix('.html')}, {out / 'results.json'} and {out / 'figures'}/")
    return res


@app.command()
def benchmark(
    data: Optional[Path] = typer.Option(None, "--data", help="A data root with test/ (default ../shared/sar), any folder of GeoTIFFs, or one file"),
    out: Path = typer.Option(Path("benchmark"), "--out", "-o", help="Report directory (reruns resume from its results.json)"),
    models: Optional[list[str]] = typer.Option(None, "--models", help="A learned codec curve: 'default' (its bundled "
                                               "qualities), 'a.pt,b.pt' or 'name=a.pt,b.pt', with ':refine=N' for N steps of "
                                               "encoder-side latent refinement; repeat to compare families"),
    codecs: str = typer.Option("jpeg2000,htj2k,jpegxl,jpeg,avif", "--codecs", help="Traditional codecs (JPEG 2000 always runs)"),
    split: str = typer.Option("test", "--split", help="test, or val (held-out training locations, for model choice)"),
    gallery: bool = typer.Option(True, "--gallery/--no-gallery", help="Write the visual comparison PNGs"),
    device: str = typer.Option("cpu", "--device", help="Where the learned codecs run and are timed (cpu, cuda, cuda:1)"),
) -> None:
    """Rate-distortion benchmark of learned codecs against JPEG 2000 and co: report.md/html, results.json."""
    if split not in ("test", "val"):
        raise _input_error("--split must be test or val")
    res = _run_benchmark(data, out, models or ["default"], [c for c in codecs.split(",") if c], split, gallery,
                         _device(device))
    t = Table(title="Against JPEG 2000 (mean over images; BD-rate negative = fewer bits, BD-PSNR positive = better)")
    for col in ("codec", "BD-rate", "(PCHIP)", "BD-PSNR", "PSNR @0.5", "@1", "@2 bpp (n images)"):
        t.add_column(col, justify="left" if col == "codec" else "right")
    pct = lambda v: "-" if v is None else f"{v:+.1f}%"  # noqa: E731
    for c, at in res["psnr_at"].items():
        s = res["summary"].get(c)
        cells = ["0 (reference)"] * 3 if s is None else [
            pct(s["bd_rate"]), pct(s["bd_rate_pchip"]), "-" if s["bd_psnr"] is None else f"{s['bd_psnr']:+.2f} dB"]
        cells += ["-" if v["mean"] is None else f"{v['mean']:.2f} ({v['n']})" for v in at.values()]
        t.add_row(c, *cells)
    console.print(t)


@app.command()
def evaluate(
    checkpoint: str = typer.Argument(..., help="Checkpoint path or bundled model name"),
    data: Optional[Path] = typer.Option(None, "--data", help="A data root with test/ (default ../shared/sar), any folder of GeoTIFFs, or one file"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report directory (default evaluate-<name>)"),
    split: str = typer.Option("test", "--split", help="test or val"),
) -> None:
    """One model on every image: bpp, PSNR, MS-SSIM, ENL ratio, EPI, and PSNR against JPEG 2000 at the same bpp."""
    from .evaluation.benchmark import REFERENCE, at_rate

    name = Path(checkpoint).stem
    out = out or Path(f"evaluate-{name}")
    res = _run_benchmark(data, out, [f"{name}={checkpoint}"], [], split, True)
    t = Table(title=f"{name} on {split}/")
    for c in ("image", "bpp", "PSNR", "MS-SSIM", "ENL ratio", "EPI", "ΔPSNR vs JPEG 2000"):
        t.add_column(c, justify="right")
    for img, e in res["images"].items():
        if name not in e:
            continue
        p = e[name]["points"][0]
        j = at_rate(e[REFERENCE]["points"], p["bpp"])
        t.add_row(img, f"{p['bpp']:.3f}", f"{p['psnr']:.2f}", f"{p['ms_ssim']:.4f}", f"{p['enl_ratio']:.3f}",
                  f"{p['epi']:.3f}", "-" if j is None else f"{p['psnr'] - j:+.2f} dB")
    console.print(t)


def _device(name: Optional[str]) -> str:
    """The requested device, or CUDA when available; a clear error (exit 6) when it is not there."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise _input_error(f"unknown --device {name!r} ({e})") from e
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ResourceError(f"--device {name}: no such CUDA device on this machine")
    return name


def _input_error(msg: str) -> SarcodecError:
    from .errors import InputError

    return InputError(msg)


def _command():
    """The click command of ``app`` with readable metavars in ``--help``: a flag shows none, an
    option its name (``--quality QUALITY``), instead of typer's ``<bool>`` / ``<float>`` labels."""
    cmd = typer.main.get_command(app)

    def no_type(ctx) -> None:  # noqa: ARG001
        return None

    def fix(c) -> None:
        for p in c.params:
            if p.param_type_name == "argument":
                p.metavar = p.metavar or p.name.upper()
                p.display_type_rich = no_type  # the name says it; no type column
            elif getattr(p, "is_flag", False) or getattr(p, "count", False):
                p.metavar = ""
            elif p.metavar is None:
                p.metavar = p.name.upper().replace("_", "-")
        get_help = c.get_help_option

        def help_option(ctx, get_help=get_help):
            opt = get_help(ctx)
            if opt is not None:
                opt.metavar = ""
            return opt

        c.get_help_option = help_option
        for sub in getattr(c, "commands", {}).values():
            fix(sub)

    fix(cmd)
    return cmd


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: runs the typer app and maps errors to documented exit codes. SIGINT and
    SIGTERM end the command through the normal error path (temporary outputs removed, workers
    shut down) with exit codes 130 and 143."""
    import errno
    import signal

    from .errors import Interrupted

    def on_signal(signum, frame):  # noqa: ARG001
        raise Interrupted(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread (e.g. called from a worker thread): leave as is
            pass
    try:
        _command()(args=argv, standalone_mode=False)
    except Interrupted as e:
        err.print(f"[red]interrupted[/red] ({e}): temporary outputs removed")
        sys.exit(e.exit_code)
    except SarcodecError as e:
        err.print(f"[red]error:[/red] {e}")
        sys.exit(e.exit_code)
    except MemoryError:
        err.print(f"[red]error:[/red] {ResourceError('out of memory: use a smaller --tile')}")
        sys.exit(ResourceError.exit_code)
    except RuntimeError as e:
        if "alloc" in str(e).lower() or "out of memory" in str(e).lower():  # torch's allocators
            err.print(f"[red]error:[/red] {ResourceError(f'out of memory ({e}): use a smaller --tile')}")
            sys.exit(ResourceError.exit_code)
        err.print(f"[red]error:[/red] unexpected {type(e).__name__}: {e}")
        sys.exit(1)
    except PermissionError as e:
        err.print(f"[red]error:[/red] {OutputError(str(e))}")
        sys.exit(OutputError.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.ENAMETOOLONG, errno.EROFS):
            err.print(f"[red]error:[/red] {OutputError(f'cannot write: {e.strerror}')}")
            sys.exit(OutputError.exit_code)
        err.print(f"[red]error:[/red] unexpected {type(e).__name__}: {e}")
        sys.exit(1)
    except SystemExit:
        raise
    except Exception as e:
        # usage errors: typer ships its own copy of click, so recognise them by behaviour
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        err.print(f"[red]error:[/red] unexpected {type(e).__name__}: {e}")
        sys.exit(1)
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


if __name__ == "__main__":  # pragma: no cover
    main()
