"""xarray backend: ``xarray.open_dataarray("x.sarc", engine="sarcodec", chunks={})``.

A lazy (band, y, x) array whose preferred chunks are the file's tiles, decoded on demand: a
``.sel`` / ``.isel`` decodes only the tiles it touches (and the ring of neighbouring latents the
synthesis needs). Coordinates follow the rioxarray convention: ``x`` / ``y`` at pixel centres from
the geotransform, a ``spatial_ref`` coordinate carrying the CRS (``crs_wkt``, ``spatial_ref``)
and the ``GeoTransform``, ``grid_mapping`` on the variable, nodata as NaN (``_FillValue`` NaN).
Values are the decoded linear intensity (or the file's kind: ``kind=`` picks another, e.g. "db")
as float32; attrs carry the model, radiometry and how the file was encoded. Registered through
the ``xarray.backends`` entry point (``pip install sarcodec[xarray]``).
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any, Iterable

import numpy as np

try:
    from xarray.backends import BackendArray, BackendEntrypoint
except ImportError:  # pragma: no cover - xarray is optional
    BackendArray = object  # type: ignore[assignment,misc]
    BackendEntrypoint = object  # type: ignore[assignment,misc]


class SarcBackendArray(BackendArray):  # type: ignore[misc]
    """The decoded raster of one file, indexed lazily; each read decodes the window it needs."""

    def __init__(self, path: str, model: Any, kind: str | None, workers: int | None):
        from .container import ContainerReader

        self.path, self.kind, self.workers = path, kind, workers
        with ContainerReader(path) as r:
            self.header = r.header
        self.model = model
        self.shape = tuple(self.header.shape)
        self.dtype = np.dtype(np.float32)
        self.lock = threading.Lock()  # one reader per file handle; dask may call from threads

    def __getitem__(self, key):
        from xarray.core import indexing

        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._raw)

    def _raw(self, key: tuple) -> np.ndarray:
        from .container import ContainerReader
        from .scene import window_decoder

        nb, rows, cols = self.shape
        sl = []
        for k, n in zip(key, self.shape):
            if isinstance(k, (int, np.integer)):
                sl.append(slice(int(k), int(k) + 1))
            else:
                sl.append(slice(*k.indices(n)))
        squeeze = [i for i, k in enumerate(key) if isinstance(k, (int, np.integer))]
        bands = range(sl[0].start, sl[0].stop)
        r0, r1 = sl[1].start, max(sl[1].stop, sl[1].start)
        c0, c1 = sl[2].start, max(sl[2].stop, sl[2].start)
        out = np.full((len(bands), r1 - r0, c1 - c0), np.nan, np.float32)
        if out.size:
            with self.lock, ContainerReader(self.path) as reader, \
                    window_decoder(reader, self.model, r0, r1, c0, c1, self.workers) as dec:
                for i, b in enumerate(bands):
                    out[i] = dec.read_band(b, r0, r1, c0, c1, kind=self.kind, dtype=np.float32)
        steps = tuple(slice(None, None, s.step) for s in sl)
        out = out[steps]
        return out.squeeze(axis=tuple(squeeze)) if squeeze else out


def open_sarc(path: str | os.PathLike, model: Any = None, kind: str | None = None,
              workers: int | None = 0, drop_variables: Iterable[str] | None = None):
    """The xarray Dataset of a .sarc file (one variable, ``band_data``, as rioxarray names it)."""
    import xarray as xr
    from xarray.core import indexing

    from .api import resolve_decoder
    from .container import ContainerReader
    from .radiometry import check_kind

    if kind is not None:
        check_kind(kind)
    path = os.fspath(path)
    with ContainerReader(path) as r:
        hdr = r.header
    model = resolve_decoder(hdr, model)
    arr = SarcBackendArray(path, model, kind, workers)
    nb, rows, cols = hdr.shape
    data = indexing.LazilyIndexedArray(arr)
    geo = hdr.metadata.get("geo", {}) or {}
    coords: dict[str, Any] = {"band": np.arange(1, nb + 1)}
    attrs_sr: dict[str, Any] = {}
    if geo.get("has_transform") and geo.get("transform"):
        a, b, c, d, e, f = geo["transform"][:6]
        if b == 0 and d == 0:  # north-up: 1-D coordinates at pixel centres
            coords["x"] = c + a * (np.arange(cols) + 0.5)
            coords["y"] = f + e * (np.arange(rows) + 0.5)
        attrs_sr["GeoTransform"] = " ".join(str(v) for v in (c, a, b, f, d, e))
    crs = geo.get("crs")
    gcps = geo.get("gcps") or []
    if gcps:
        # GCP-referenced (a GRD in radar geometry): as rioxarray opens such a file, x / y at pixel
        # centres of the identity grid and the points as GeoJSON in the grid mapping's "gcps"
        coords.setdefault("x", np.arange(cols) + 0.5)
        coords.setdefault("y", np.arange(rows) + 0.5)
        attrs_sr["gcps"] = json.dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"id": g[5], "info": g[6], "row": g[0], "col": g[1]},
             "geometry": {"type": "Point", "coordinates": [g[2], g[3]] if g[4] is None else [g[2], g[3], g[4]]}}
            for g in gcps]})
        crs = crs or geo.get("gcp_crs")
    if crs:
        attrs_sr["crs_wkt"] = crs
        attrs_sr["spatial_ref"] = crs
    coords["spatial_ref"] = xr.Variable((), np.int64(0), attrs_sr)
    rad = [b["radiometry"] for b in hdr.bands]
    out_kind = kind or rad[0]["kind"]
    attrs = {"grid_mapping": "spatial_ref", "kind": out_kind, "units": "dB" if out_kind == "db" else "1",
             "model": hdr.model.get("id"), "model_hash": hdr.model.get("hash"),
             "source": hdr.metadata.get("source", ""), "sarcodec_format": hdr.version,
             "long_name": [b.get("description") or f"band {i + 1}" for i, b in enumerate(hdr.bands)]}
    for k in ("layer", "target", "lossless", "analysis_precision"):
        if k in hdr.metadata:
            attrs[f"sarcodec_{k}"] = str(hdr.metadata[k])
    var = xr.Variable(("band", "y", "x"), data, attrs,
                      encoding={"preferred_chunks": {"band": 1, "y": hdr.tile_size, "x": hdr.tile_size},
                                "_FillValue": np.float32(np.nan), "dtype": np.dtype(np.float32)})
    ds = xr.Dataset({"band_data": var}, coords=coords)
    if drop_variables:
        ds = ds.drop_vars([v for v in drop_variables if v in ds])
    return ds


class SarcodecBackendEntrypoint(BackendEntrypoint):  # type: ignore[misc]
    description = "Open sarcodec .sarc files (learned SAR compression) lazily, tile by tile"
    url = "https://github.com/sarcodec/sarcodec"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "model", "kind", "workers")

    def open_dataset(self, filename_or_obj, *, drop_variables=None, model=None, kind=None, workers=0):
        return open_sarc(filename_or_obj, model=model, kind=kind, workers=workers, drop_variables=drop_variables)

    def guess_can_open(self, filename_or_obj) -> bool:
        try:
            return os.fspath(filename_or_obj).endswith(".sarc")
        except TypeError:
            return False
