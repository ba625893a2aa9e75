"""In-memory encode / decode of SAR rasters (NumPy arrays) through the .sarc container."""
from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
import torch

from .checkpoint import DEFAULT_RADIOMETRY, load_model
from .container import ContainerReader, ContainerWriter, Header, TileEntry, pack_mask
from .errors import InputError, ModelError, ModelMismatchError
from .models import SarCodec
from .radiometry import Radiometry, check_array, check_kind

DEFAULT_TILE = 1024


def tile_grid(rows: int, cols: int, tile: int) -> list[tuple[int, int, int, int]]:
    """Row-major (row, col, height, width) tiles covering the raster."""
    return [(r, c, min(tile, rows - r), min(tile, cols - c)) for r in range(0, rows, tile) for c in range(0, cols, tile)]


def model_info(model: SarCodec) -> dict[str, Any]:
    return {"id": getattr(model, "name", None) or "unnamed", "hash": model.weights_hash(),
            "arch": model.arch, "config": model.config}


def _device_of(model: SarCodec) -> torch.device:
    return next(model.parameters()).device


def encode(
    array: np.ndarray,
    model: SarCodec | str,
    *,
    kind: str = "intensity",
    nodata: float | None = None,
    radiometry: Radiometry | Sequence[Radiometry] | None = None,
    tile_size: int = DEFAULT_TILE,
    band_descriptions: Sequence[str | None] | None = None,
    metadata: dict[str, Any] | None = None,
) -> bytes:
    """Compress a (rows, cols) or (bands, rows, cols) SAR raster to .sarc bytes.

    ``kind`` says what the values are (intensity, amplitude, dn, db); each band gets its own clip
    bounds (percentiles fitted on its valid pixels) unless ``radiometry`` is given. Invalid pixels
    (NaN, inf, <= 0 for linear kinds, ``nodata``) are stored as a lossless mask.
    """
    check_kind(kind)
    arr = check_array(array)
    if isinstance(model, str):
        model = load_model(model)
    if not isinstance(tile_size, int) or tile_size < 16:
        raise InputError(f"tile_size must be an integer >= 16, got {tile_size!r}")
    stack = arr[None] if arr.ndim == 2 else arr
    nb, rows, cols = stack.shape
    rads = _radiometries(stack, kind, nodata, radiometry, getattr(model, "radiometry_defaults", DEFAULT_RADIOMETRY))
    descs = list(band_descriptions) if band_descriptions is not None else [None] * nb
    if len(descs) != nb:
        raise InputError(f"{len(descs)} band descriptions for {nb} bands")

    buf = io.BytesIO()
    writer = ContainerWriter(buf)
    tiles: list[TileEntry] = []
    bands: list[dict[str, Any]] = []
    dev = _device_of(model)
    for b in range(nb):
        v, mask = rads[b].forward(stack[b])
        info: dict[str, Any] = {"radiometry": rads[b].to_dict(), "description": descs[b], "mask": None}
        if mask.any():
            off, length, crc = writer.add_blob(pack_mask(mask))
            info["mask"] = {"offset": off, "length": length, "crc": crc, "count": int(mask.sum())}
        bands.append(info)
        for (r, c, h, w) in tile_grid(rows, cols, tile_size):
            x = torch.from_numpy(np.ascontiguousarray(v[r:r + h, c:c + w]))[None, None].to(dev)
            payload = model.compress(x)[0]
            tiles.append(writer.add_tile(TileEntry(b, r, c, h, w), payload))
    header = Header(model=model_info(model), shape=(nb, rows, cols), dtype=str(arr.dtype), bands=bands,
                    tile_size=tile_size, tiles=tiles, metadata=dict(metadata or {}))
    header.metadata.setdefault("ndim", arr.ndim)
    writer.finish(header)
    return buf.getvalue()


def _radiometries(stack: np.ndarray, kind: str, nodata: float | None,
                  radiometry: Radiometry | Sequence[Radiometry] | None, defaults: dict[str, Any]) -> list[Radiometry]:
    nb = stack.shape[0]
    if radiometry is None:
        return [Radiometry.fit(stack[b], kind, nodata=nodata, low_pct=defaults.get("low_pct", 0.1),
                               high_pct=defaults.get("high_pct", 99.9)) for b in range(nb)]
    rads = [radiometry] * nb if isinstance(radiometry, Radiometry) else list(radiometry)
    if len(rads) != nb:
        raise InputError(f"{len(rads)} radiometry objects for {nb} bands")
    return rads


def resolve_decoder(header: Header, model: SarCodec | str | None) -> SarCodec:
    """The model named by the header, checked against its weights hash."""
    want = header.model
    if model is None:
        try:
            model = load_model(want.get("id", ""))
        except ModelError as e:
            raise ModelError(
                f"this file was encoded with model {want.get('id')!r} (hash {want.get('hash')}), which is not "
                f"bundled here: pass model=<checkpoint> ({e})") from e
    elif isinstance(model, str):
        model = load_model(model)
    if model.weights_hash() != want.get("hash"):
        raise ModelMismatchError(
            f"file was encoded with model {want.get('id')!r} (hash {want.get('hash')}); "
            f"the given model {getattr(model, 'name', '?')!r} has hash {model.weights_hash()}")
    return model


def decode_tile(reader: ContainerReader, model: SarCodec, entry: TileEntry) -> np.ndarray:
    """One tile -> its [0, 1] reconstruction (float32, height x width)."""
    data = reader.tile_bytes(entry)
    y_hat = model.decode_latent(data, entry.height, entry.width)
    return model.synthesize(y_hat, entry.height, entry.width)[0, 0].cpu().numpy()


def decode(data: bytes | str, model: SarCodec | str | None = None, *, kind: str | None = None,
           dtype: np.dtype | str | None = None, normalized: bool = False) -> np.ndarray:
    """Decompress .sarc bytes (or a path). The model is found from the header unless given.

    Returns the raster in the input's kind and dtype (override with ``kind``/``dtype``), with
    invalid pixels set to nodata (NaN for floats without nodata). ``normalized=True`` returns the
    codec-domain [0, 1] reconstruction instead (float32).
    """
    with ContainerReader(data) as reader:
        hdr = reader.header
        model = resolve_decoder(hdr, model)
        nb, rows, cols = hdr.shape
        bands_out = []
        for b in range(nb):
            v = np.zeros((rows, cols), np.float32)
            for entry in (t for t in hdr.tiles if t.band == b):
                if entry.row + entry.height > rows or entry.col + entry.width > cols:
                    from .errors import CorruptedFileError

                    raise CorruptedFileError(f"{reader.name}: tile outside the raster")
                v[entry.row:entry.row + entry.height, entry.col:entry.col + entry.width] = decode_tile(reader, model, entry)
            if normalized:
                bands_out.append(v)
                continue
            rad = Radiometry.from_dict(hdr.bands[b]["radiometry"])
            out_dtype = dtype or hdr.dtype
            if kind and kind != rad.kind and dtype is None:
                out_dtype = np.float32  # converting kind: integer DN would not make sense
            bands_out.append(rad.inverse(v, reader.mask(b), kind=kind, dtype=out_dtype))
        out = np.stack(bands_out)
        return out[0] if hdr.metadata.get("ndim", 3) == 2 else out
