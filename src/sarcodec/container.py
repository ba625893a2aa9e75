"""The ``.sarc`` container.

Layout (little-endian)::

    offset 0   magic        8 bytes  b"\\x89SARC\\r\\n\\x1a"   (PNG-style: catches text-mode mangling)
           8   version      u16      FORMAT_VERSION (0x0100: format 1.0)
          10   flags        u16      0 (reserved)
          12   reserved     u32      0
          16   body         tile payloads and mask blobs, in any order (written as they finish)
           F   footer       zlib-compressed JSON: model, radiometry, shape, dtype, tile index, ...
       end-24  trailer      u64 footer offset | u64 footer length | u32 CRC32(header+footer) | b"CRAS"

The footer sits at the end so that a writer can stream tiles without knowing the index up front
(like ZIP / COG ghost areas). Every tile and mask blob carries its own CRC32 in the index, so any
single flipped byte is detected: in the fixed header or footer by the trailer CRC, in a tile or
mask by its CRC, in the trailer by the structural checks.

Errors (all subclasses of :class:`~sarcodec.errors.FormatError`, CLI exit code 5):
``NotASarcFileError`` (bad magic), ``TruncatedFileError`` (too short / end marker or bytes missing),
``CorruptedFileError`` (checksum or structure), ``UnsupportedVersionError`` (another format version).
The format is specified byte by byte in ``docs/format.md``.
"""
from __future__ import annotations

import errno
import io
import json
import os
import struct
import tempfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np

from .errors import (
    CorruptedFileError,
    NotASarcFileError,
    OutputError,
    TruncatedFileError,
    UnsupportedVersionError,
)

MAGIC = b"\x89SARC\r\n\x1a"
END = b"CRAS"
FORMAT_VERSION = 0x0100  # 1.0: major version in the high byte, minor in the low byte


def format_name(version: int) -> str:
    """``0x0100`` -> ``"1.0"``."""
    return f"{version >> 8}.{version & 0xFF}"


# The preset dictionary of footers: JSON a footer typically repeats (keys, bundled model
# configs, radiometry, layers, the search's record, GDAL's WKT for WGS 84 and UTM, GeoTIFF tags).
# Part of the format: it must never change (a test pins its Adler-32; zlib refuses a stream
# deflated with another dictionary). A new dictionary is a new major format version.
FOOTER_DICT = "".join((
    'PROJCS["WGS 84 / UTM zone 33N",PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],',
    'PARAMETER["central_meridian",15],PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],',
    'PARAMETER["false_northing",0],UNIT["metre",1,AUTHORITY["EPSG","9001"]],AXIS["Easting",EAST],',
    'AXIS["Northing",NORTH],AUTHORITY["EPSG","326',
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],',
    'AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],UNIT["degree",',
    '0.0174532925199433,AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],AXIS["Longitude",EAST],',
    'AUTHORITY["EPSG","4326"]]',
    '"geo":{"driver":"GTiff","crs":"","transform":[,0.0,,0.0,-,],"has_transform":true,"gcps":[],',
    '"gcp_crs":null,"nodata":null,"descriptions":[null],"tags":{"SOURCE":"Sentinel-1 GRD',
    '","UNIT":"linear intensity","AREA_OR_POINT":"Area"},"band_tags":[{}],"units":[null],',
    '"scales":[1.0],"offsets":[0.0],"colorinterp":["gray"]},"source":".tif",',
    '"target":{"bpp":,"psnr":,"psnr_reached":,"met":true,"quality":,"max_error":0.',
    '"lossless":true,"clip":[',
    '{"model":{"id":"default-q4","hash":"","arch":"residual","config":{"latent_channels":192,',
    '"base_channels":128,"latent_codec":"factorized","hyper_channels":128}},"shape":[1,1024,1024],',
    '"dtype":"float32","bands":[{"radiometry":{"kind":"amplitude","lo_db":-2,"hi_db":-1,',
    '"noise_floor_db":null,"nodata":null,"fill":0.5},"description":null,"invalid":0}],"tile_size":512,',
    '"tiles":[[0,0,0,512,512,16,0,0,0,0,0,0,0,0]],',
    '{"model":{"id":"default-q1","hash":"","arch":"hyperprior","config":{"latent_channels":144,',
    '"base_channels":112,"latent_codec":"hyperprior","hyper_channels":64}},"shape":[1,512,512],',
    '"dtype":"float32","bands":[{"radiometry":{"kind":"intensity","lo_db":-2,"hi_db":-1,',
    '"noise_floor_db":null,"nodata":null,"fill":0.5},"description":null,"invalid":0}],"tile_size":1024,',
    '"tiles":[[0,0,0,512,512,16,0,0,0,0,0,0,0,0]],"metadata":{"ndim":2,"halo_latents":4,',
    '"border":"crop","latent_step":,"layer":{"max_error_db":0.,"outliers":"none","outlier_tol_db":0.35,',
    '"bias":false,"bound":false}"layer":{"max_error_db":null,"outliers":"high","outlier_tol_db":0.35,',
    '"bias":true,"peak_db":16.0},"analysis_precision":"bf16"}}',
)).encode()


HEADER = struct.Struct("<8sHHI")
TRAILER = struct.Struct("<QQI4s")


@dataclass
class TileEntry:
    band: int
    row: int  # pixel offsets of the tile in the band
    col: int
    height: int
    width: int
    offset: int = 0  # byte offset of the payload in the file
    length: int = 0
    crc: int = 0
    mask_offset: int = 0  # the tile's lossless invalid-pixel mask (packbits + zlib); 0 = none
    mask_length: int = 0
    mask_crc: int = 0
    layer_offset: int = 0  # the tile's pixel layer (residual / outliers / bias, sarcodec.layer); 0 = none
    layer_length: int = 0
    layer_crc: int = 0

    def to_list(self) -> list[int]:
        v = [self.band, self.row, self.col, self.height, self.width, self.offset, self.length, self.crc,
             self.mask_offset, self.mask_length, self.mask_crc]
        return v + [self.layer_offset, self.layer_length, self.layer_crc] if self.layer_length else v

    @classmethod
    def from_list(cls, v: list[int]) -> "TileEntry":
        if not isinstance(v, list) or len(v) not in (11, 14) or not all(type(i) is int and i >= 0 for i in v):
            raise CorruptedFileError(f"malformed tile index entry {v!r}")
        return cls(*v)


@dataclass
class Header:
    """Everything a decoder needs besides the tile bytes."""

    model: dict[str, Any]  # {"id": ..., "hash": ..., "arch": ..., "config": {...}}
    shape: tuple[int, int, int]  # bands, rows, cols
    dtype: str
    bands: list[dict[str, Any]]  # per band: {"radiometry": {...}, "description": ..., "invalid": count}
    tile_size: int
    tiles: list[TileEntry] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)  # free-form (geo info, tags, ...)
    version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "shape": list(self.shape), "dtype": self.dtype, "bands": self.bands,
            "tile_size": self.tile_size, "tiles": [t.to_list() for t in self.tiles], "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], version: int) -> "Header":
        """Parse and validate a footer (untrusted input): every field's type and range, shapes
        consistent with the tile grid, before anything is allocated from it."""
        try:
            h = cls(model=_req(d, "model", dict), shape=_shape(d.get("shape")), dtype=_req(d, "dtype", str),
                    bands=_req(d, "bands", list), tile_size=_req(d, "tile_size", int),
                    tiles=[TileEntry.from_list(t) for t in _req(d, "tiles", list)],
                    metadata=_req(d, "metadata", dict) if "metadata" in d else {}, version=version)
            validate_header(h)
        except CorruptedFileError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise CorruptedFileError(f"container header is malformed ({e})") from e
        return h

    @property
    def pixels(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]


MAX_PIXELS_PER_BAND = 1 << 40  # rows x cols a footer may declare (about 1e12)
MAX_BANDS = 4096


def _req(d: dict, key: str, typ: type) -> Any:
    if not isinstance(d, dict):
        raise CorruptedFileError("container header is not a mapping")
    if key not in d:
        raise CorruptedFileError(f"container header lacks {key!r}")
    v = d[key]
    if typ is int and (isinstance(v, bool) or not isinstance(v, int)) or typ is not int and not isinstance(v, typ):
        raise CorruptedFileError(f"container header: {key!r} must be {typ.__name__}, got {type(v).__name__}")
    return v


def _shape(v: Any) -> tuple[int, int, int]:
    if not isinstance(v, list) or len(v) != 3 or not all(type(i) is int and i >= 1 for i in v):
        raise CorruptedFileError(f"container header: bad shape {v!r}")
    if v[0] > MAX_BANDS or v[1] * v[2] > MAX_PIXELS_PER_BAND:
        raise CorruptedFileError(f"container header: implausible shape {v!r}")
    return tuple(v)  # type: ignore[return-value]


def validate_header(h: "Header") -> None:
    """The schema of a footer: raises CorruptedFileError naming the first field that is wrong."""
    from .radiometry import OUTPUT_DTYPES, Radiometry

    bad = lambda msg: CorruptedFileError(f"container header: {msg}")  # noqa: E731
    nb, rows, cols = h.shape
    if h.dtype not in OUTPUT_DTYPES:  # what a decode can write back
        raise bad(f"unsupported dtype {h.dtype!r}")
    if not (64 <= h.tile_size <= 1 << 16 and h.tile_size % 64 == 0):
        raise bad(f"tile size {h.tile_size}")
    if not isinstance(h.model.get("id", ""), str) or not isinstance(h.model.get("hash", ""), (str, type(None))):
        raise bad("model id / hash")
    if len(h.bands) != nb:
        raise bad("band list does not match shape")
    for b in h.bands:
        if not isinstance(b, dict) or not isinstance(b.get("radiometry"), dict):
            raise bad("band entry without radiometry")
        r = b["radiometry"]
        for k in ("lo_db", "hi_db", "fill"):
            if not isinstance(r.get(k, 0.0), (int, float)) or isinstance(r.get(k), bool):
                raise bad(f"radiometry {k}")
        for k in ("nodata", "noise_floor_db"):
            v = r.get(k)
            if v is not None and v != "nan" and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise bad(f"radiometry {k}")
        try:
            Radiometry.from_dict(r)
        except Exception as e:  # InputError and TypeError from a forged radiometry
            raise bad(f"radiometry ({e})") from e
    md = h.metadata
    if md.get("ndim", 3) not in (2, 3) or md.get("ndim") == 2 and nb != 1:
        raise bad("ndim")
    if md.get("halo_latents", 4) not in (4, 8) or md.get("border", "replicate") not in ("crop", "replicate"):
        raise bad("halo / border")
    if not isinstance(md.get("lossless", False), bool):
        raise bad("lossless")
    if "latent_step" in md:
        from .entropy import STEP_MAX, STEP_MIN

        st = md["latent_step"]
        if isinstance(st, bool) or not isinstance(st, int) or not STEP_MIN <= st <= STEP_MAX:
            raise bad("latent_step")
    if md.get("lossless") and not h.dtype.startswith(("uint", "int")):
        raise bad("lossless needs an integer dtype")
    t = h.tile_size
    grid_per_band = (-(-rows // t)) * (-(-cols // t))
    if len(h.tiles) != nb * grid_per_band:
        raise bad(f"{len(h.tiles)} tiles for a grid of {nb * grid_per_band}")
    seen = set()
    for e in h.tiles:
        if e.band >= nb or e.row % t or e.col % t or e.row >= rows or e.col >= cols \
                or e.height != min(t, rows - e.row) or e.width != min(t, cols - e.col):
            raise bad(f"tile ({e.band}, {e.row}, {e.col}) does not fit the grid")
        if (e.band, e.row, e.col) in seen:
            raise bad(f"tile ({e.band}, {e.row}, {e.col}) appears twice")
        seen.add((e.band, e.row, e.col))
        if bool(e.mask_length) != bool(e.mask_offset) or bool(e.layer_length) != bool(e.layer_offset):
            raise bad("blob offset / length")


class ContainerWriter:
    """Streams a container to a binary file object: ``add_tile``/``add_blob`` then ``finish``."""

    def __init__(self, fh: BinaryIO):
        self.fh = fh
        self.version = FORMAT_VERSION
        fh.write(HEADER.pack(MAGIC, FORMAT_VERSION, 0, 0))
        self.pos = HEADER.size

    def add_blob(self, data: bytes) -> tuple[int, int, int]:
        """Append bytes to the body; returns (offset, length, crc32)."""
        off = self.pos
        self.fh.write(data)
        self.pos += len(data)
        return off, len(data), zlib.crc32(data)

    def add_tile(self, entry: TileEntry, payload: bytes) -> TileEntry:
        entry.offset, entry.length, _ = self.add_blob(payload)
        entry.crc = tile_crc(entry, payload)
        return entry

    @classmethod
    def resume(cls, fh: BinaryIO, pos: int, version: int = FORMAT_VERSION) -> "ContainerWriter":
        """A writer that continues a container whose header and body (``pos`` bytes) are already in
        ``fh``: to give a finished body a new footer (``version``: what the fixed header says; a
        forger's tool may name another)."""
        w = cls.__new__(cls)
        w.fh, w.pos, w.version = fh, pos, version
        return w

    def finish(self, header: Header) -> int:
        return self.write_footer(header.to_json())

    def write_footer(self, doc: Any) -> int:
        """Write ``doc`` (JSON) as the footer and the trailer; returns the container's size. Any
        document goes: :meth:`finish` writes a header's, the fuzzer forges others."""
        footer = deflate_footer(json.dumps(doc, separators=(",", ":")).encode())
        crc = zlib.crc32(HEADER.pack(MAGIC, self.version, 0, 0) + footer)
        off = self.pos
        self.fh.write(footer)
        self.fh.write(TRAILER.pack(off, len(footer), crc, END))
        self.pos += len(footer) + TRAILER.size
        return self.pos


def tile_crc(entry: TileEntry, payload: bytes) -> int:
    """A tile payload's CRC32, over the tile's (band, row, col, height, width) as five u64 and then
    the payload: a payload moved to another position in a forged index is detected."""
    pos = struct.pack("<5Q", entry.band, entry.row, entry.col, entry.height, entry.width)
    return zlib.crc32(payload, zlib.crc32(pos))


def with_header(data: bytes, header: Header) -> bytes:
    """An in-memory container with its footer replaced by ``header`` (same body and version)."""
    off = int(TRAILER.unpack(data[-TRAILER.size:])[0])
    buf = io.BytesIO()
    buf.write(data[:off])
    ContainerWriter.resume(buf, off).finish(header)
    return buf.getvalue()


MAX_FOOTER = 64 << 20  # decompressed footer bytes: a 100000^2 raster in 256 px tiles needs ~20 MB


def deflate_footer(raw: bytes) -> bytes:
    """A footer as written: zlib (level 9) with the preset dictionary :data:`FOOTER_DICT`."""
    c = zlib.compressobj(9, zdict=FOOTER_DICT)
    return c.compress(raw) + c.flush()


def bounded_decompress(blob: bytes, limit: int, what: str, zdict: bytes | None = None) -> bytes:
    """zlib-decompress at most ``limit`` bytes: a forged blob cannot inflate to gigabytes.
    ``zdict``: the preset dictionary (zlib checks that the stream was deflated with it)."""
    d = zlib.decompressobj(zdict=zdict) if zdict is not None else zlib.decompressobj()
    out = d.decompress(blob, limit)
    if d.unconsumed_tail or not d.eof:
        raise CorruptedFileError(f"{what} is larger than {limit} bytes when decompressed, or incomplete")
    return out


def pack_mask(mask: np.ndarray) -> bytes:
    return zlib.compress(np.packbits(mask.astype(bool), axis=None).tobytes(), 9)


def unpack_mask(blob: bytes, shape: tuple[int, int]) -> np.ndarray:
    n = shape[0] * shape[1]
    try:
        bits = np.frombuffer(bounded_decompress(blob, (n + 7) // 8, "nodata mask"), np.uint8)
    except zlib.error as e:
        raise CorruptedFileError(f"nodata mask is corrupted ({e})") from e
    if bits.size * 8 < n:
        raise CorruptedFileError("nodata mask is too short")
    return np.unpackbits(bits, count=n).astype(bool).reshape(shape)


class ContainerReader:
    """Random access to a container held in memory or in a file (reads only what is asked)."""

    def __init__(self, source: bytes | bytearray | memoryview | str | os.PathLike, name: str | None = None):
        self._fh: BinaryIO | None = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._buf: memoryview | None = memoryview(source)
            self.size = len(self._buf)
            self.name = name or "<bytes>"
        else:
            self._buf = None
            self.name = str(source)
            self._fh = open(source, "rb")
            self._fh.seek(0, os.SEEK_END)
            self.size = self._fh.tell()
        self.header = self._read_header()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "ContainerReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, off: int, n: int) -> bytes:
        if off < 0 or n < 0 or off + n > self.size:
            raise TruncatedFileError(f"{self.name}: needs bytes {off}..{off + n} but the file has {self.size}")
        if self._buf is not None:
            return bytes(self._buf[off:off + n])
        assert self._fh is not None
        self._fh.seek(off)
        data = self._fh.read(n)
        if len(data) != n:
            raise TruncatedFileError(f"{self.name}: unexpected end of file")
        return data

    def _read_header(self) -> Header:
        if self.size < len(MAGIC):
            raise TruncatedFileError(f"{self.name}: {self.size} bytes is too short for a .sarc container")
        head = self._read(0, min(HEADER.size, self.size))
        if head[:8] != MAGIC:
            raise NotASarcFileError(f"{self.name}: not a .sarc container (bad magic bytes)")
        if self.size < HEADER.size + TRAILER.size:
            raise TruncatedFileError(f"{self.name}: truncated ({self.size} bytes; header and trailer need {HEADER.size + TRAILER.size})")
        _, version, flags, reserved = HEADER.unpack(head)
        if version != FORMAT_VERSION:
            raise UnsupportedVersionError(
                f"{self.name}: format version {version} ({format_name(version)}) is not supported "
                f"(this sarcodec reads format {format_name(FORMAT_VERSION)})")
        off, length, crc, end = TRAILER.unpack(self._read(self.size - TRAILER.size, TRAILER.size))
        if end != END:
            raise TruncatedFileError(f"{self.name}: truncated or corrupted (end marker missing)")
        if off < HEADER.size or off + length != self.size - TRAILER.size:
            raise CorruptedFileError(f"{self.name}: corrupted trailer (footer at {off}+{length}, file size {self.size})")
        footer = self._read(off, length)
        if zlib.crc32(head + footer) != crc or flags != 0 or reserved != 0:
            raise CorruptedFileError(f"{self.name}: header checksum mismatch (file corrupted)")
        try:
            meta = json.loads(bounded_decompress(footer, MAX_FOOTER, "header", FOOTER_DICT))
        except (zlib.error, ValueError, RecursionError) as e:
            raise CorruptedFileError(f"{self.name}: header is unreadable ({type(e).__name__}: {e})") from e
        try:
            header = Header.from_json(meta, version)
        except CorruptedFileError as e:
            raise CorruptedFileError(f"{self.name}: {e}") from e
        for t in header.tiles:
            if t.offset < HEADER.size or t.offset + t.length > off or t.mask_offset + t.mask_length > off \
                    or t.layer_offset + t.layer_length > off:
                raise CorruptedFileError(f"{self.name}: tile index points outside the body")
        return header

    def tile_bytes(self, entry: TileEntry) -> bytes:
        data = self._read(entry.offset, entry.length)
        if tile_crc(entry, data) != entry.crc:
            raise CorruptedFileError(
                f"{self.name}: tile (band {entry.band}, row {entry.row}, col {entry.col}) checksum mismatch (file corrupted)")
        return data

    def tile_mask(self, entry: TileEntry) -> np.ndarray | None:
        """The tile's invalid-pixel mask, or None when every pixel is valid."""
        if not entry.mask_length:
            return None
        blob = self._read(entry.mask_offset, entry.mask_length)
        if zlib.crc32(blob) != entry.mask_crc:
            raise CorruptedFileError(
                f"{self.name}: nodata mask of tile (band {entry.band}, row {entry.row}, col {entry.col}) checksum mismatch")
        return unpack_mask(blob, (entry.height, entry.width))

    def tile_layer_blob(self, entry: TileEntry) -> tuple[bytes, str] | None:
        """The tile's pixel-layer blob, checksum checked, and the name its errors give it (for
        :func:`sarcodec.layer.decode_layer`); None when the tile has no layer."""
        if not entry.layer_length:
            return None
        blob = self._read(entry.layer_offset, entry.layer_length)
        where = f"tile (band {entry.band}, row {entry.row}, col {entry.col})"
        if zlib.crc32(blob) != entry.layer_crc:
            raise CorruptedFileError(f"{self.name}: pixel layer of {where} checksum mismatch (file corrupted)")
        return blob, f"{self.name}: {where}"

    def tile_layer(self, entry: TileEntry):
        """The tile's pixel layer (:class:`sarcodec.layer.LayerData`), or None when it has none."""
        found = self.tile_layer_blob(entry)
        if found is None:
            return None
        from .layer import decode_layer

        return decode_layer(found[0], (entry.height, entry.width), found[1])


def check_output_path(path: Path, force: bool) -> None:
    """OutputError unless ``path`` may be written: absent (or ``force``), in an existing directory."""
    if path.exists() and not force:
        raise OutputError(f"{path}: already exists (use --force to overwrite; force=True in Python)")
    if not path.parent.exists():
        raise OutputError(f"{path.parent}: output directory does not exist")


@contextmanager
def atomic_path(path: str | os.PathLike, *, force: bool = False, suffix: str = ".part") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on failure
    removed. Nothing half-written is ever left at ``path`` (or beside it)."""
    path = Path(path)
    check_output_path(path, force)
    remove_stale_temporaries(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=suffix, dir=path.parent)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror})") from e
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp made it 0600: give it the mode a plain open() would (the umask's), or keep the
        # mode of the file it replaces
        try:
            mode = os.stat(path).st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
            os.chmod(tmp, mode)
            with open(tmp, "rb") as fh:  # on disk before it replaces anything
                os.fsync(fh.fileno())
        except FileNotFoundError:
            pass  # a writer that removed its own file: nothing to finish
        if not force:
            try:  # atomic no-overwrite: two writers cannot both succeed
                os.link(tmp, path)
            except FileExistsError:
                raise OutputError(f"{path}: already exists (use --force to overwrite; force=True in Python)") from None
            except OSError:  # a filesystem without hard links: replace (the check above ran)
                os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    except PermissionError as e:
        raise OutputError(f"{path}: cannot write ({e})") from e
    except OSError as e:
        if e.errno in _OUTPUT_ERRNOS:
            raise OutputError(f"{path}: cannot write ({e.strerror})") from e
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def temp_prefix(path: Path) -> str:
    """Temporary names beside ``path`` carry the writer's pid: ``.NAME.sarcodec-PID.XXXX.part``."""
    return f".{path.name}.sarcodec-{os.getpid()}."


def remove_stale_temporaries(path: Path) -> None:
    """Remove what a killed writer (SIGKILL, power loss) left beside ``path``: temporary files and
    scratch directories whose pid is no longer running."""
    import re
    import shutil

    pat = re.compile(re.escape(f".{path.name}.sarcodec-") + r"(\d+)\.")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for e in entries:
        m = pat.match(e.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # its writer is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, another user's
        try:
            shutil.rmtree(e) if e.is_dir() else e.unlink()
        except OSError:
            pass


_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.ENAMETOOLONG, errno.EROFS, errno.EACCES}


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def atomic_write(path: str | os.PathLike, data: bytes | None = None, *, force: bool = False):
    """Write ``data`` to ``path`` via a temp file in the same directory + rename.
    Without data, returns a context manager yielding a binary file handle (same guarantees)."""
    if data is not None:
        with atomic_path(path, force=force) as tmp:
            tmp.write_bytes(data)
        return None
    return _atomic_handle(path, force)


@contextmanager
def _atomic_handle(path: str | os.PathLike, force: bool) -> Iterator[BinaryIO]:
    with atomic_path(path, force=force) as tmp, open(tmp, "wb") as fh:
        yield fh
