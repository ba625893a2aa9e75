"""GeoTIFF / COG (any GDAL raster) <-> .sarc, streaming with bounded memory.

``compress_file`` reads tile windows through rasterio, so a 30000 x 30000 scene needs no more
memory than a 3000 x 3000 one; ``decompress_file`` writes tile rows as they are decoded.
Everything a GIS user relies on is kept: CRS, geotransform, GCPs (+ their CRS), nodata, band
descriptions, dataset and band tags, units, scales/offsets, every band (each with its own
radiometry), and the invalid-pixel mask, losslessly.
"""
from __future__ import annotations

import math
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .api import MAX_PIXELS, check_size, clip_defaults, model_info, resolve_decoder
from .checkpoint import load_model
from .container import (
    ContainerReader,
    ContainerWriter,
    atomic_path,
    atomic_write,
    check_output_path,
    temp_prefix,
)
from .errors import InputError, OutputError
from .layer import LayerSpec
from .models import SarCodec
from .models.refine import check_refine
from .parallel import check_workers
from .radiometry import check_kind, check_nodata, check_output_dtype
from .scene import (
    DEFAULT_TILE,
    ArraySource,
    check_lossless_dtype,
    check_precision,
    check_tile_size,
    encode_container,
    coding_metadata,
    fit_radiometry,
    new_header,
    resolve_window,
    window_decoder,
)

Progress = Callable[[int], None]
GDAL_CACHE_MB = 64  # GDAL's default block cache is 5% of RAM and would grow with the scene


def _gdal_env(cache_mb: int = GDAL_CACHE_MB):
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=cache_mb)


def gdal_cache_mb(path: str | os.PathLike, tile: int, halo: int = 128) -> int:
    """GDAL block cache for reading ``path`` tile row by tile row: room for a full-width band of
    (tile + 2 halo) rows of every band (compressed, pixel-interleaved blocks hold all bands and
    are decompressed once only if they stay cached), within [64, 1024] MB. Measured on a 4096^2
    2-band DEFLATE pixel-interleaved file, tile reads: 3.10 s at 64 MB, 2.75 s at 512 MB."""
    import rasterio

    try:
        with rasterio.open(path) as ds:
            need = ds.count * ds.width * (tile + 2 * halo) * np.dtype(ds.dtypes[0]).itemsize
    except Exception:  # noqa: BLE001 - the caller reports unreadable inputs
        return GDAL_CACHE_MB
    return int(min(1024, max(GDAL_CACHE_MB, 3 * need / 2**20)))


def _json_num(v: float | None) -> Any:
    if v is None:
        return None
    return "nan" if isinstance(v, float) and math.isnan(v) else v


def _from_json_num(v: Any) -> float | None:
    return float("nan") if v == "nan" else v


class RasterioSource:
    """Tile windows of an open rasterio dataset."""

    def __init__(self, ds):
        self.ds = ds
        self.bands, self.rows, self.cols = ds.count, ds.height, ds.width
        self.dtype = np.dtype(ds.dtypes[0])

    def read(self, band: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        from rasterio.windows import Window

        return self.ds.read(band + 1, window=Window(c0, r0, c1 - c0, r1 - r0))

    def read_decimated(self, band: int, k: int) -> np.ndarray:
        """Every k-th row and column (from the first), as ``ArraySource`` samples an array, read in
        full-width strips: GDAL's own decimated read (``out_shape``) took seconds per 4 MP inside
        a ``rasterio.Env`` (measured: 7.9 s for a 2048^2 DEFLATE tiff, the strips 0.02 s)."""
        strip = k * max(1, -(-512 // k))  # a multiple of k: every strip starts on a sampled row
        return np.concatenate([self.read(band, r, min(r + strip, self.rows), 0, self.cols)[::k, ::k]
                               for r in range(0, self.rows, strip)])


def _open_raster(path: str | os.PathLike):
    import rasterio

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    try:
        import warnings

        with warnings.catch_warnings():  # rasters without georeferencing are fine to compress
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(p)
    except rasterio.errors.RasterioIOError as e:
        raise InputError(f"{p}: not a readable raster ({e})") from e


def geo_metadata(ds) -> dict[str, Any]:
    """Everything to rebuild the dataset's georeferencing and annotations."""
    gcps, gcp_crs = ds.gcps
    return {
        "driver": ds.driver,
        "crs": ds.crs.to_wkt() if ds.crs else None,
        "transform": list(ds.transform)[:6],
        "has_transform": not ds.transform.is_identity or not gcps,
        "gcps": [[g.row, g.col, g.x, g.y, g.z, g.id, g.info] for g in gcps],
        "gcp_crs": gcp_crs.to_wkt() if gcp_crs else None,
        "nodata": _json_num(ds.nodata),
        "descriptions": list(ds.descriptions),
        "tags": ds.tags(),
        "band_tags": [ds.tags(i + 1) for i in range(ds.count)],
        "units": list(ds.units),
        "scales": list(ds.scales),
        "offsets": list(ds.offsets),
        "colorinterp": [c.name for c in ds.colorinterp],
    }


def _looks_like_a_picture(ds) -> bool:
    """3-4 bands of uint8 with neither a CRS, a geotransform nor GCPs: a PNG/JPEG picture, which
    a GRD product never is (its DN are 16-bit, its bands polarisations, and it is georeferenced)."""
    return ds.count in (3, 4) and set(ds.dtypes) == {"uint8"} and ds.crs is None and not ds.gcps[0] \
        and ds.transform.is_identity


def default_kind(dtype: np.dtype) -> str:
    """uint16/int16 rasters are GRD digital numbers (amplitude); floats linear intensity."""
    return "dn" if np.issubdtype(dtype, np.integer) else "intensity"




def compress_file(src_path: str | os.PathLike, dst_path: str | os.PathLike, model: SarCodec | str = "default", *,
                  kind: str | None = None, tile_size: int = DEFAULT_TILE, force: bool = False,
                  progress: Progress | None = None, batch: int | None = None, refine: int = 0,
                  workers: int | None = None, precision: str | None = None, max_error: float | None = None,
                  outliers: str = "high", bias: bool = True, clip: tuple[float, float] | None = None,
                  psnr: float | None = None, bpp: float | None = None, lossless: bool = False,
                  max_pixels: float | None = MAX_PIXELS, quality: float | None = None, nodata: float | None = None,
                  step: float | None = None, bound: bool = True) -> dict[str, Any]:
    """Compress one raster file to ``dst_path`` (.sarc). Returns a summary (bytes, bpp, ratio).
    ``refine`` > 0: steps of encoder-side latent refinement per tile; ``workers``: processes coding
    tiles' latents and pixel layers; ``precision``: of the analysis transform; ``max_error``, ``outliers``, ``bias``,
    ``clip``: SAR fidelity; ``psnr`` / ``bpp``: targets the encoder searches for, over the rate
    points of a family given by name (see :func:`sarcodec.encode`); ``quality`` (continuous, over
    a family) or ``step`` (one model's quantisation step) as in :func:`sarcodec.encode`. A search
    encodes the scene several times (in memory) and writes the chosen one. ``nodata``: the value
    that marks invalid pixels, overriding the file's own (decoded files declare it)."""
    import io

    from .api import coding_points, coding_step, family_members, read_sample, search_memo, search_target

    check_tile_size(tile_size)
    check_workers(workers)
    check_precision(precision)
    LayerSpec(max_error, outliers, bias=bias)  # validate before any work
    if sum(v is not None for v in (max_error, psnr, bpp)) + bool(lossless) > 1:
        raise InputError("give only one of --max-error, --psnr, --bpp, --lossless (max_error, psnr, bpp, lossless)")
    if sum(v is not None for v in (quality, step, psnr, bpp)) + bool(lossless) > 1:
        raise InputError("give only one of --quality, --psnr, --bpp, --lossless (quality, step, psnr, bpp, lossless)")
    searched = psnr is not None or bpp is not None or max_error is not None and quality is None and step is None
    bases = family_members(model) if searched or quality is not None \
        else [load_model(model) if isinstance(model, str) else model]
    for m in bases:
        check_refine(m, refine)
    bases = coding_points(bases, quality, step)  # (model, step) pairs
    for m, st in bases:
        coding_step(m, st)  # a step the model cannot code: refused before any output
    check_output_path(Path(dst_path), force)
    before = _identity(src_path)
    with _gdal_env(gdal_cache_mb(src_path, tile_size)), _open_raster(src_path) as ds:
        if any("complex" in str(d) for d in ds.dtypes):
            raise InputError(f"{src_path}: complex values ({ds.dtypes[0]}, SLC?): sarcodec codes real SAR values; "
                             "convert to intensity |z|^2 first (e.g. gdal_calc.py or numpy np.abs(z) ** 2)")
        src = RasterioSource(ds)
        check_size(src.bands * src.rows * src.cols, max_pixels, str(src_path))
        if src.dtype.kind not in "uif":
            raise InputError(f"{src_path}: unsupported data type {src.dtype} (need integer or float bands)")
        if len(set(ds.dtypes)) != 1:
            raise InputError(f"{src_path}: bands of mixed data types are not supported")
        if kind is None and _looks_like_a_picture(ds):
            raise InputError(f"{src_path}: {ds.count} bands of 8-bit values without georeferencing look like an RGB "
                             "picture (a quicklook?), not SAR measurements; to code it anyway, say what the values "
                             "are with --kind (kind=), e.g. --kind dn")
        kind = check_kind(kind or default_kind(src.dtype))
        if lossless:
            check_lossless_dtype(src.dtype)
        geo = geo_metadata(ds)
        nd = ds.nodata if nodata is None else check_nodata(nodata)  # an override is what the output declares
        geo["nodata"] = _json_num(nd)

        def radiometry(m: SarCodec) -> list:
            return fit_radiometry(src, kind, nd, clip_defaults(m, clip), read_decimated=src.read_decimated)

        def encode_to(fh, m: SarCodec, st: int, err: float | None, stats: dict | None = None, show=progress,
                      bnd: bool = bound, memo: dict | None = None, part: tuple | None = None) -> int:
            # part: (source, radiometry) of a search's sample instead of the raster
            spec = LayerSpec(err, outliers, bias=bias, bound=bnd)
            st = coding_step(m, st, lossless)
            source, rads = part if part is not None else (src, radiometry(m))
            header = new_header(model_info(m), source, rads, tile_size, list(ds.descriptions),
                                {"geo": geo, "source": Path(src_path).name,
                                 **coding_metadata(m, st, spec, clip, lossless)})
            writer = ContainerWriter(fh)
            return encode_container(source, m, rads, writer, header, show, batch, refine, workers, precision, spec,
                                    stats, memo)

        # only a target search re-encodes the same (model, step): other multi-encode paths try distinct models
        memo = search_memo(src.bands * src.rows * src.cols) if psnr is not None or bpp is not None else None

        def in_memory(m: SarCodec, st: int, err: float | None, stats: dict | None = None, bnd: bool = bound,
                      part: tuple | None = None, memo: dict | None = memo) -> bytes:
            buf = io.BytesIO()
            encode_to(buf, m, st, err, stats, None, bnd, memo, part)
            return buf.getvalue()

        def unchanged() -> None:  # an input overwritten while we read it would mix two scenes
            if _identity(src_path) != before:
                raise InputError(f"{src_path}: the input changed during compression; nothing was written")

        if len(bases) == 1 and psnr is None and bpp is None:
            with atomic_write(dst_path, force=force) as fh:
                size = encode_to(fh, *bases[0], max_error)
                unchanged()
        else:
            pixels = src.bands * src.rows * src.cols
            if psnr is None and bpp is None:
                data = min((in_memory(m, st, max_error) for m, st in bases), key=len)
            else:
                done = [0]

                def trial(share: float) -> None:  # a search's length is not known up front: each trial
                    if progress:                  # its usual share of the bar, up to 90% of it
                        n = min(int(share * pixels), int(0.9 * pixels) - done[0])
                        if n > 0:
                            progress(n)
                            done[0] += n

                mosaic = read_sample(src.read, src.bands, src.rows, src.cols)
                sample = None
                if mosaic is not None:  # a large raster: searched on a sample, with the raster's clip bounds
                    part = (ArraySource(mosaic), radiometry(bases[0][0]))
                    smemo: dict = {}
                    sample = (lambda m, st, e, stats: in_memory(m, st, e, stats, False, part, smemo), int(mosaic.size))
                data = search_target(lambda m, st, e, stats: in_memory(m, st, e, stats, False), [m for m, _ in bases],
                                     psnr=psnr, bpp=bpp, pixels=pixels, on_trial=trial,
                                     sample=sample)  # MSE layers: no bound asked
                pixels -= done[0]
            unchanged()
            atomic_write(dst_path, data, force=force)
            size = len(data)
            if progress:
                progress(pixels)
    pixels = src.bands * src.rows * src.cols
    native = src.dtype.itemsize * 8
    return {"bytes": size, "pixels": pixels, "bpp": 8 * size / pixels, "ratio": native * pixels / 8 / size}


def _identity(path: str | os.PathLike) -> tuple[int, int]:
    """(size, mtime in ns) of a file, to notice it changing under us."""
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def parse_window(text: str) -> tuple[int, int, int, int]:
    """'col_off,row_off,width,height' -> tuple."""
    try:
        v = tuple(int(x) for x in text.split(","))
    except ValueError:
        v = ()
    if len(v) != 4 or v[2] < 1 or v[3] < 1 or v[0] < 0 or v[1] < 0:
        raise InputError(f"window must be col_off,row_off,width,height with positive sizes, got {text!r}")
    return v  # type: ignore[return-value]


def read_window(path: str | os.PathLike, window: tuple[int, int, int, int] | None = None, *,
                model: SarCodec | str | None = None, kind: str | None = None, dtype: Any = None) -> np.ndarray:
    """Decode (bands, height, width) of ``window=(col_off, row_off, width, height)`` from a .sarc file,
    touching only the tiles it needs."""
    from .api import decode

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    out = decode(str(p), model, kind=kind, dtype=dtype, window=window)
    return out if out.ndim == 3 else out[None]


def decompress_file(src_path: str | os.PathLike, dst_path: str | os.PathLike, *, model: SarCodec | str | None = None,
                    window: tuple[int, int, int, int] | None = None, kind: str | None = None, dtype: Any = None,
                    cog: bool = False, force: bool = False, progress: Progress | None = None,
                    device: str | None = None, workers: int | None = None,
                    overview_resampling: str = "average") -> dict[str, Any]:
    """Decode a .sarc file to a GeoTIFF (or COG) with the original georeferencing and tags.
    ``device``: where the file's model is loaded when ``model`` is not a loaded model (default
    cpu); ``workers``: processes that decode tiles' latents and pixel layers ahead (see :func:`sarcodec.decode`)."""
    import rasterio
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS
    from rasterio.transform import Affine
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    check_workers(workers)
    p = Path(src_path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    if kind is not None:
        check_kind(kind)
    if overview_resampling not in OVERVIEW_RESAMPLING:
        raise InputError(f"overview resampling must be one of {', '.join(OVERVIEW_RESAMPLING)}, got {overview_resampling!r}")
    dst = Path(dst_path)
    check_output_path(dst, force)  # before loading a model; atomic_path checks again at write time
    with _gdal_env(), ContainerReader(p) as reader:
        hdr = reader.header
        model = resolve_decoder(hdr, model, device)
        nb, rows, cols = hdr.shape
        c0, r0, w, h = resolve_window(window, rows, cols)
        geo = hdr.metadata.get("geo", {})
        rad0 = hdr.bands[0]["radiometry"]
        out_kind = kind or rad0["kind"]
        out_dtype = check_output_dtype(dtype) or np.dtype(hdr.dtype if out_kind == rad0["kind"] else "float32")
        # invalid pixels come out as Radiometry.inverse writes them: the source nodata when the kind
        # is unchanged and one was set, else NaN (floats) or 0 (integers); declare that value
        nodata = _from_json_num(geo.get("nodata"))
        if out_kind != rad0["kind"] or nodata is None:
            nodata = float("nan") if out_dtype.kind == "f" else 0
        profile: dict[str, Any] = dict(driver="GTiff", width=w, height=h, count=nb, dtype=out_dtype.name, nodata=nodata,
                                       tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                                       predictor=3 if out_dtype.kind == "f" else 2, BIGTIFF="IF_SAFER")
        if geo.get("crs"):
            profile["crs"] = CRS.from_wkt(geo["crs"])
        if geo.get("has_transform"):
            profile["transform"] = window_transform(Window(c0, r0, w, h), Affine(*geo["transform"]))
        import warnings

        counts = {"saturated": 0}  # pixels an integer dtype cannot hold (Radiometry.inverse)
        with atomic_path(dst, force=force) as final, \
                tempfile.TemporaryDirectory(prefix=temp_prefix(dst), dir=dst.parent) as scratch, \
                window_decoder(reader, model, r0, r0 + h, c0, c0 + w, workers) as dec:
            # a COG is a copy of a finished GeoTIFF: write that to scratch space first
            target = Path(scratch) / "plain.tif" if cog else final
            with warnings.catch_warnings():  # GCP-only rasters have no geotransform, by design
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                out = rasterio.open(target, "w", **profile)
            try:
                with out, ThreadPoolExecutor(1) as writer:
                    # tile by tile (not full-width strips): memory stays O(tile), whatever the width. GDAL
                    # compresses and writes a tile in one thread (it releases the GIL) while this one
                    # decodes the next: at most one tile waits, and a write's error is raised here
                    pending = None
                    for b in range(nb):
                        for e in dec.tiles_in(b, r0, r0 + h, c0, c0 + w):
                            a0, a1 = max(e.row, r0), min(e.row + e.height, r0 + h)
                            b0, b1 = max(e.col, c0), min(e.col + e.width, c0 + w)
                            block = dec.read_band(b, a0, a1, b0, b1, kind=kind, dtype=out_dtype, progress=progress,
                                                  counts=counts)
                            if pending is not None:
                                pending.result()
                            pending = writer.submit(out.write, block, b + 1,
                                                    window=Window(b0 - c0, a0 - r0, b1 - b0, a1 - a0))
                    if pending is not None:
                        pending.result()
                    _copy_annotations(out, geo, hdr, nb, r0, c0, GroundControlPoint, CRS, out_kind)
                if cog:
                    from rasterio.shutil import copy as rio_copy

                    rio_copy(target, final, driver="COG", compress="DEFLATE", BIGTIFF="IF_SAFER", PREDICTOR="YES",
                             OVERVIEW_RESAMPLING=overview_resampling.upper(), RESAMPLING=overview_resampling.upper())
            except rasterio.errors.RasterioError as e:  # GDAL write failures: full disk, file-size limit
                raise OutputError(f"{dst}: the output could not be written ({e}; disk full or file size limit?)") from e
            verify_geotiff(final, nb, h, w)
    return {"bands": nb, "rows": h, "cols": w, "dtype": out_dtype.name, "path": str(dst),
            "saturated": counts["saturated"], "saturated_fraction": counts["saturated"] / max(1, nb * h * w)}


OVERVIEW_RESAMPLING = ("average", "nearest", "bilinear", "cubic", "mode", "rms")
UNITS = {"db": "dB", "intensity": "linear power", "amplitude": "linear amplitude", "dn": "DN"}


def verify_geotiff(path: str | os.PathLike, bands: int, rows: int, cols: int) -> None:
    """GDAL reports some write failures (a full disk, ``ulimit -f``) only as logged errors while it
    flushes blocks on close: re-open the finished file and read its last row of every band (the
    blocks written last) before it may replace anything. OutputError (exit 7) if it is short."""
    import rasterio
    from rasterio.windows import Window

    try:
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
        with rasterio.open(path) as ds:
            if (ds.count, ds.height, ds.width) != (bands, rows, cols):
                raise OutputError(f"{path}: written raster has the wrong shape")
            for b in range(1, bands + 1):
                ds.read(b, window=Window(0, rows - 1, cols, 1))
    except (rasterio.errors.RasterioError, OSError) as e:
        raise OutputError(f"{Path(path).name}: the output could not be written completely "
                          f"(disk full or file size limit?): {e}") from e


def _copy_annotations(out, geo: dict[str, Any], hdr, nb: int, r0: int, c0: int, GCP, CRS, out_kind: str) -> None:
    if geo.get("gcps"):
        gcps = [GCP(row=g[0] - r0, col=g[1] - c0, x=g[2], y=g[3], z=g[4], id=g[5], info=g[6]) for g in geo["gcps"]]
        out.gcps = (gcps, CRS.from_wkt(geo["gcp_crs"]) if geo.get("gcp_crs") else None)
    if geo.get("tags"):
        out.update_tags(**geo["tags"])
    for i in range(nb):
        desc = hdr.bands[i].get("description")
        in_kind = hdr.bands[i]["radiometry"]["kind"]
        if out_kind != in_kind:  # another kind: say so, in the description and the unit
            out.set_band_description(i + 1, f"{desc or f'band {i + 1}'} ({out_kind})")
            out.set_band_unit(i + 1, UNITS[out_kind])
        elif desc:
            out.set_band_description(i + 1, desc)
        bt = (geo.get("band_tags") or [{}] * nb)[i]
        if bt:
            out.update_tags(i + 1, **bt)
        units = (geo.get("units") or [None] * nb)[i]
        if units and out_kind == in_kind:
            out.set_band_unit(i + 1, units)
    if out_kind != hdr.bands[0]["radiometry"]["kind"]:
        return  # the input's scales / offsets were for its own kind
    if geo.get("scales") and any(s != 1.0 for s in geo["scales"]):
        out.scales = tuple(geo["scales"])
    if geo.get("offsets") and any(o != 0.0 for o in geo["offsets"]):
        out.offsets = tuple(geo["offsets"])
