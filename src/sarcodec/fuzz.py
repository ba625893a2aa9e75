"""Fuzzing of the .sarc container (used by the test suite and ``benchmarks/fuzz.py``).

Three kinds of mutant of one small valid file (2 bands, several tiles, a nodata mask, pixel
layers):

* ``random``: bytes flipped, cut or inserted anywhere (the CRCs should catch them);
* ``forged``: one footer field replaced by a hostile value (wrong type, huge, negative, NaN,
  deeply nested, ...) or a payload / mask / layer replaced by random bytes, *with every checksum
  recomputed*;
* ``moved``: two tiles' payloads swapped in the index, checksums of the index recomputed.

Each mutant is decoded; the outcome is a FormatError (or InputError), a decode of the shape its
header says, or a finding: an uncaught exception, a decode past the time limit (and past 3x the
valid file's own decode: a loaded machine slows both), a wrong shape.
"""
from __future__ import annotations

import copy
import io
import json
import time
import traceback
import zlib
from typing import Any

import numpy as np

from .container import FORMAT_VERSION, HEADER, MAGIC, TRAILER, ContainerReader, ContainerWriter, Header, deflate_footer
from .errors import FormatError, InputError, ModelError

HOSTILE: list[Any] = [-1, 0, 1, 2**31, 2**63, 1e308, -1e308, float("nan"), "x", "", None, True, [], {}, [1, 2],
                      {"a": 1}, 0.5, "nan", "uint64", "complex64", "object"]


def _leaves(obj: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:20]):
            out += _leaves(v, path + (i,))
    return out


def _set(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    cur = obj
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return obj


def rewrite_footer(data: bytes, footer_json: Any, version: int = FORMAT_VERSION) -> bytes:
    """The body of ``data`` with a new footer written as format ``version`` (the fixed header
    names it; checksums recomputed; the footer may be any JSON): a forger's, without the
    writer's checks."""
    off = int(TRAILER.unpack(data[-TRAILER.size:])[0])
    body = bytearray(data[:off])
    body[8:10] = version.to_bytes(2, "little")
    buf = io.BytesIO(bytes(body))
    buf.seek(off)
    ContainerWriter.resume(buf, off, version).write_footer(footer_json)
    return buf.getvalue()


def _replace_blob(data: bytes, hdr: Header, which: str, rng: np.random.Generator) -> bytes:
    """Random bytes in place of one tile's payload / mask / layer, its CRC recomputed."""
    from .container import tile_crc

    e = hdr.tiles[int(rng.integers(0, len(hdr.tiles)))]
    off, length = {"payload": (e.offset, e.length), "mask": (e.mask_offset, e.mask_length),
                   "layer": (e.layer_offset, e.layer_length)}[which]
    if not length:
        return b""
    body = bytearray(data)
    junk = rng.integers(0, 256, length).astype(np.uint8).tobytes()
    if rng.random() < 0.5:  # or a small edit: the structure survives, the values do not
        junk = bytearray(data[off:off + length])
        junk[int(rng.integers(0, length))] ^= int(rng.integers(1, 256))
        junk = bytes(junk)
    body[off:off + length] = junk
    if which == "payload":
        e.crc = tile_crc(e, junk)
    elif which == "mask":
        e.mask_crc = zlib.crc32(junk)
    else:
        e.layer_crc = zlib.crc32(junk)
    return rewrite_footer(bytes(body), hdr.to_json(), hdr.version)


def sample_file(model, seed: int = 0) -> bytes:
    """A small valid file: 2 bands, 6 tiles each, invalid pixels, bright targets (pixel layers)."""
    from .api import encode
    from .data import synthetic_sar

    x = np.stack([synthetic_sar((150, 130), seed=seed + b) for b in range(2)]).astype(np.float32)
    x[0, :12, :40] = np.nan
    x[1, 70, 70] *= 1e4
    return encode(x, model, tile_size=64)


def fuzz_container(model, n_random: int = 100, n_forged: int = 100, seed: int = 0,
                   time_limit: float = 10.0) -> dict[str, Any]:
    """Run the fuzz; returns counts per kind and outcome, and the findings."""
    from .api import decode

    rng = np.random.default_rng(seed)
    base = sample_file(model, seed)
    hdr0 = ContainerReader(base).header
    t0 = time.perf_counter()
    decode(base, model)
    # "slow": past the limit and past 3x the valid file's own decode (a loaded machine slows both)
    limit = max(time_limit, 3 * (time.perf_counter() - t0))
    counts: dict[str, dict[str, int]] = {}
    findings: dict[str, list] = {"uncaught": [], "slow": [], "wrong_shape": []}

    def run(kind: str, data: bytes, what: str) -> None:
        c = counts.setdefault(kind, {"total": 0, "format_error": 0, "input_error": 0, "decoded": 0})
        c["total"] += 1
        t = time.perf_counter()
        try:
            out = decode(data, model)
            c["decoded"] += 1
            h = ContainerReader(data).header
            want = h.shape[1:] if h.metadata.get("ndim", 3) == 2 else h.shape
            if tuple(out.shape) != tuple(want):
                findings["wrong_shape"].append((kind, what, out.shape, want))
        except FormatError:
            c["format_error"] += 1
        except (InputError, ModelError):
            c["input_error"] += 1
        except Exception as e:  # noqa: BLE001 - the point of fuzzing
            findings["uncaught"].append((kind, what, f"{type(e).__name__}: {e}",
                                         traceback.format_exc(limit=3)[-600:]))
        dt = time.perf_counter() - t
        if dt > limit:
            findings["slow"].append((kind, what, round(dt, 1)))

    for i in range(n_random):
        b = bytearray(base)
        op = rng.integers(0, 3)
        pos = int(rng.integers(0, len(b)))
        if op == 0:
            b[pos] ^= int(rng.integers(1, 256))
            what = f"flip@{pos}"
        elif op == 1:
            b = b[:pos]
            what = f"cut@{pos}"
        else:
            b[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 9))).astype(np.uint8).tobytes()
            what = f"insert@{pos}"
        run("random", bytes(b), what)

    doc0 = hdr0.to_json()
    leaves = [p for p in _leaves(doc0) if p]
    for i in range(n_forged):
        r = rng.random()
        if r < 0.7:
            path = leaves[int(rng.integers(0, len(leaves)))]
            val = copy.deepcopy(HOSTILE[int(rng.integers(0, len(HOSTILE)))])
            if rng.random() < 0.15:  # a number near the true one (off by one, scaled)
                cur = doc0
                for k in path:
                    cur = cur[k]
                if isinstance(cur, (int, float)) and not isinstance(cur, bool):
                    val = type(cur)(cur + int(rng.choice([-1, 1, 64, -64]))) if isinstance(cur, int) else cur * 1.5
            doc = _set(copy.deepcopy(doc0), path, val)
            run("forged", rewrite_footer(base, doc, hdr0.version), f"{'/'.join(map(str, path))}={val!r}"[:120])
        elif r < 0.75:
            deep: Any = 0
            for _ in range(int(rng.integers(1000, 100000))):
                deep = [deep]
            doc = copy.deepcopy(doc0)
            doc["metadata"]["x"] = deep
            try:
                data = rewrite_footer(base, doc, hdr0.version)
            except RecursionError:  # json.dumps itself cannot write it: write it by hand
                n = int(rng.integers(1000, 100000))
                raw = json.dumps(doc0).replace('"metadata": {', '"metadata": {"x": ' + "[" * n + "]" * n + ", ", 1)
                data = _rewrite_raw(base, raw.encode(), hdr0.version)
            run("forged", data, "deeply nested metadata")
        elif r < 0.8:
            bomb = zlib.compress(b"[" + b"0," * (50 << 20) + b"0]", 9)
            run("forged", _rewrite_raw(base, bomb, hdr0.version, compressed=True), "footer zlib bomb")
        else:
            which = ["payload", "mask", "layer"][int(rng.integers(0, 3))]
            hdr = ContainerReader(base).header
            data = _replace_blob(base, hdr, which, rng)
            if data:
                run("forged", data, f"random {which} bytes, CRC recomputed")
            else:
                run("forged", base, "unchanged")

    for i in range(max(4, n_forged // 20)):
        hdr = ContainerReader(base).header
        a, b = rng.choice(len(hdr.tiles), 2, replace=False)
        ta, tb = hdr.tiles[a], hdr.tiles[b]
        ta.offset, tb.offset = tb.offset, ta.offset
        ta.length, tb.length = tb.length, ta.length
        ta.crc, tb.crc = tb.crc, ta.crc
        run("moved", rewrite_footer(base, hdr.to_json(), hdr.version), f"tiles {a} <-> {b}")
    return {"counts": counts, **findings}


def _rewrite_raw(data: bytes, footer: bytes, version: int, compressed: bool = False) -> bytes:
    off = int(TRAILER.unpack(data[-TRAILER.size:])[0])
    comp = footer if compressed else deflate_footer(footer)
    crc = zlib.crc32(HEADER.pack(MAGIC, version, 0, 0) + comp)
    return data[:off] + comp + TRAILER.pack(off, len(comp), crc, b"CRAS")
