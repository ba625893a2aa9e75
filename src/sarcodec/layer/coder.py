"""The pixel layer's context coder: residual integers of a tile (flags 0, 1, 2), and the pieces the
other forms share (:class:`LayerData`, the pass lattice and its contexts, the blob header).

**Context model** (vectorised, no serial autoregression): seven passes over a 4x4 lattice, coarse
to fine, like a checkerboard extended to two scales (:data:`PASSES`). Pass 0 (1/16 of the pixels)
has no context; every later pass sees the four nearest pixels of earlier passes (diagonal or
cross, at distance 2 then 1). From them: a class (bucket of the mean |q| of the neighbours)
selects a table, and a prediction ``round(alpha * mean q)`` (alpha fitted per pass by the
encoder, sent as an int8 /32) is subtracted. Each table is a zero-inflated two-sided geometric
distribution, two integers per class (``p0`` in 1/65536, ``theta`` in 1/256) fitted to the tile
by the encoder. Values beyond +-``HALF`` are escaped (raw int32), so any residual is
representable. Every probability comes from decoded integers only.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..entropy import fill_escapes, stable_order
from ..errors import InputError
from . import jit

if TYPE_CHECKING:
    from .restoration import RestorationFilter

# (row offset, col offset, stride, neighbour offsets): coarse-to-fine passes over a 4x4 lattice
_DIAG2 = ((-2, -2), (-2, 2), (2, -2), (2, 2))
_CROSS2 = ((0, -2), (0, 2), (-2, 0), (2, 0))
_DIAG1 = ((-1, -1), (-1, 1), (1, -1), (1, 1))
_CROSS1 = ((0, -1), (0, 1), (-1, 0), (1, 0))
_PAD = 2  # the farthest neighbour offset
PASSES = ((0, 0, 4, ()), (2, 2, 4, _DIAG2), (0, 2, 4, _CROSS2), (2, 0, 4, _CROSS2),
          (1, 1, 2, _DIAG1), (0, 1, 2, _CROSS1), (1, 0, 2, _CROSS1))
# class groups: pass 0 has its own class; distance-2 and distance-1 passes have their own sets
N_ACT = 14  # activity classes per group
_GROUP = (0, 1, 1, 1, 2, 2, 2)
N_CLASSES = 1 + 2 * N_ACT
# bucket of 16 * (sum |q| of neighbours) / n: about log-spaced
_ACT_EDGES = np.array([1, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256], np.int64)
_ACT_LUT = np.searchsorted(_ACT_EDGES, np.arange(_ACT_EDGES[-1] + 1), side="right")
_NB = tuple(np.array(nb, np.int64).reshape(-1, 2) for *_, nb in PASSES)  # neighbour offsets per pass
HALF = 1024  # table range +-HALF; beyond: escape + raw int32
N_OFFSETS = 4  # MSE layers: reconstruction offsets for |q| = 1, 2, 3 and >= 4
_MAGIC = b"L1"
_HEAD = struct.Struct("<2sBffI")  # magic, flags, step, bias_db, used-class bitmap


@dataclass
class LayerData:
    """A decoded layer: ``q`` (int64, tile shape; None when the layer sends no residuals), its
    ``step`` (normalised units) and the tile's ``bias_db`` shift."""

    q: np.ndarray | None
    step: float
    bias_db: float
    offsets: tuple[int, ...] | None = None  # MSE reconstruction: per |q| = 1..N_OFFSETS, in step/256
    residual: np.ndarray | None = None  # a wavelet layer: the decoded residual itself (q is None)
    filter: "RestorationFilter | None" = None  # an MSE layer's restoration filter (flag 5), applied last

    @property
    def reach(self) -> int:
        """Pixels beyond a window the layer needs to reconstruct it (its filter's reach): a
        decoder of part of a tile crops to the window widened by this, then keeps the window."""
        return self.filter.reach if self.filter is not None else 0

    def crop(self, rows: tuple[int, int], cols: tuple[int, int]) -> None:
        """Keep only the tile-local window rows x cols (a decoder that needs part of a tile)."""
        if self.q is not None:
            self.q = self.q[rows[0]:rows[1], cols[0]:cols[1]]
        if self.residual is not None:
            self.residual = self.residual[rows[0]:rows[1], cols[0]:cols[1]]

    def values(self) -> np.ndarray:
        """q * step, or with ``offsets`` each bin's centroid: sign(q) (|q| - offset(|q|)/256) step;
        a wavelet layer's decoded residual."""
        if self.residual is not None:
            return self.residual
        if self.offsets is None:
            return self.q * float(self.step)
        a = np.abs(self.q)
        off = np.asarray((0,) + tuple(self.offsets), np.float64)[np.minimum(a, N_OFFSETS)]
        return np.sign(self.q) * (a - off / 256.0) * float(self.step)

    def apply(self, base: np.ndarray, lo_db: float, hi_db: float) -> np.ndarray:
        """t̂ = base + q * step + bias, then the restoration filter if any, in normalised units
        (float32, unclipped)."""
        out = self.unfiltered(base, lo_db, hi_db)
        if self.filter is not None:
            out = self.filter.apply(out)
        return out.astype(np.float32)

    def unfiltered(self, base: np.ndarray, lo_db: float, hi_db: float) -> np.ndarray:
        """base + q * step + bias (float64): what the restoration filter sees."""
        out = np.asarray(base, np.float64)
        shift = float(self.bias_db) / (hi_db - lo_db) if self.bias_db else 0.0
        if self.residual is not None:
            return out + self.residual + shift
        if self.q is None:
            return out + shift
        # the bias shift is for the learned reconstruction: restored pixels (q != 0) are exact
        return out + self.values() + np.where(self.q == 0, shift, 0.0)


def _context(q: np.ndarray, p: int, raw: bool = False) -> tuple[np.ndarray, ...]:
    """(rows, cols, class, signed neighbour sum, neighbour count) of pass ``p`` given the values
    of the earlier passes in ``q`` (integers only). ``raw``: the values are a whole image (the
    lossless mode), not a zero-mean residual: the class comes from the neighbours' spread
    (max - min, a local gradient) instead of their magnitude. ``rows`` and ``cols`` are read-only
    broadcast views (index with them, never write into them)."""
    r0, c0, s, nb = PASSES[p]
    h, w = q.shape
    ar, ac = np.arange(r0, h, s), np.arange(c0, w, s)
    nr, nc = ar.size, ac.size
    rr = np.broadcast_to(ar[:, None], (nr, nc))
    cc = np.broadcast_to(ac[None, :], (nr, nc))
    if not nb or rr.size == 0:
        z = np.zeros(rr.shape, np.int64)
        return rr, cc, z, z, z
    m = _PAD
    # sparse residuals take the NumPy path below unless numba is already loaded in this process
    # (a default outlier layer never loads it; an MSE layer's encoder has)
    nz = None if raw or jit.ready() else np.flatnonzero(q)
    if (nz is None or nz.size * 64 >= q.size) and not raw and jit.on():
        # a dense residual: per position in compiled code (same integers, the counts too)
        base = 1 + (_GROUP[p] - 1) * N_ACT
        return (rr, cc) + jit.context(np.ascontiguousarray(q, np.int64), r0, c0, s, _NB[p], base, _ACT_LUT,
                                      int(_ACT_EDGES[-1]))
    # in-bounds neighbour counts: len(nb) inside, fewer on the border rows and columns only
    n = np.full((nr, nc), len(nb), np.int64)
    for dr, dc in nb:
        okr = (ar + dr >= 0) & (ar + dr < h)
        okc = (ac + dc >= 0) & (ac + dc < w)
        n[~okr, :] -= okc
        n[:, ~okc] -= okr[:, None]
        n[np.ix_(~okr, ~okc)] -= 1
    if nz is not None and nz.size * 64 < q.size:  # (the class as below, computed where a != 0)
        # sparse residual (bright targets only, or none): add each non-zero value to the pass
        # positions it neighbours instead of visiting every position (same integers)
        a = np.zeros(nr * nc, np.int64)
        ssum = np.zeros(nr * nc, np.int64)
        base = 1 + (_GROUP[p] - 1) * N_ACT  # the class of a position without non-zero neighbours
        cls = np.full(nr * nc, base, np.int64)
        if nz.size:
            i, j = np.divmod(nz, w)
            v = q.reshape(-1)[nz].astype(np.int64)
            touched = []
            for dr, dc in nb:
                ti, tj = i - dr - r0, j - dc - c0
                ok = (ti >= 0) & (tj >= 0) & (ti % s == 0) & (tj % s == 0) & (ti < s * nr) & (tj < s * nc)
                t = (ti[ok] // s) * nc + tj[ok] // s
                np.add.at(a, t, np.abs(v[ok]))
                np.add.at(ssum, t, v[ok])
                touched.append(t)
            t = np.concatenate(touched)
            cls[t] = base + _ACT_LUT[np.minimum((16 * a[t]) // n.reshape(-1)[t], _ACT_EDGES[-1])]
        return rr, cc, cls.reshape(nr, nc), ssum.reshape(nr, nc), n
    else:
        a = np.zeros((nr, nc), np.int64)
        ssum = np.zeros((nr, nc), np.int64)
        hi = np.full((nr, nc), np.iinfo(np.int64).min)
        lo = np.full((nr, nc), np.iinfo(np.int64).max)
        # neighbours as strided views of q padded with zeros (0 outside, like a missing
        # neighbour's value)
        qp = np.pad(np.asarray(q, np.int64), m)
        for dr, dc in nb:
            v = qp[m + r0 + dr:m + r0 + dr + s * (nr - 1) + 1:s, m + c0 + dc:m + c0 + dc + s * (nc - 1) + 1:s]
            a += np.abs(v)
            ssum += v
            if raw:
                ok = ((ar[:, None] + dr >= 0) & (ar[:, None] + dr < h)) & ((ac + dc >= 0) & (ac + dc < w))
                hi = np.where(ok, np.maximum(hi, v), hi)
                lo = np.where(ok, np.minimum(lo, v), lo)
        if raw:
            a = np.where(hi >= lo, hi - lo, 0) * n // 2  # spread, scaled like a mean |q| of n neighbours
    act = _ACT_LUT[np.minimum((16 * a) // n, _ACT_EDGES[-1])]  # = searchsorted(_ACT_EDGES, ., "right")
    cls = 1 + (_GROUP[p] - 1) * N_ACT + act
    return rr, cc, cls, ssum, n


def _row_diff(v: np.ndarray) -> np.ndarray:
    """Differences along rows; the first column as differences down the column (first value as is)."""
    d = np.empty_like(v)
    d[:, 1:] = np.diff(v, axis=1)
    d[:, 0] = np.diff(v[:, 0], prepend=0)
    return d


def _row_undiff(d: np.ndarray) -> np.ndarray:
    v = np.empty_like(d)
    v[:, 0] = np.cumsum(d[:, 0])
    v[:, 1:] = d[:, 1:]
    return np.cumsum(v, axis=1)


def _predict(alpha: int, ssum: np.ndarray, n: np.ndarray) -> np.ndarray:
    """round(alpha/32 * ssum/n), half up, in exact integer arithmetic."""
    if alpha == 0:
        return np.zeros(ssum.shape, np.int64)
    return np.floor_divide(2 * alpha * ssum + 32 * n, 64 * n)


def _sig_table(p0: int) -> np.ndarray:
    """Frequencies of (zero, non-zero)."""
    p0 = min(max(int(p0), 1), 65535)
    return np.array([p0, 65536 - p0], np.int64)


def _mag_table(theta: int) -> np.ndarray:
    """Two-sided geometric frequencies of the non-zero values -k..-1, (0 unused), 1..k, then the
    escape; from integers only, so identical on every machine. The range k stops where a
    frequency would fall below 1 (at most ``HALF``); larger values are escaped."""
    theta = min(max(int(theta), 0), 255)
    g = []
    cur = (32768 * (256 - theta)) << 8  # P(|e| = 1) in 1/65536 per side, times 2^16 (fixed point)
    while len(g) < HALF and (cur >> 16 >= 1 or not g):
        g.append(max(1, cur >> 16))
        cur = (cur * theta) >> 8  # geometric decay by theta / 256
    g = np.asarray(g, np.int64)
    return np.concatenate([g[::-1], [1], g, [1]]).astype(np.int64)


def _fit_class(e: np.ndarray) -> tuple[int, int]:
    """(p0, theta) by maximum likelihood for the prediction errors ``e`` of one class."""
    n = e.size
    nz = np.abs(e[e != 0])
    p0 = min(max(int(round(65536 * (n - nz.size + 0.5) / (n + 1.0))), 1), 65535)
    if nz.size == 0:
        return p0, 0
    m = float(np.minimum(nz, HALF).mean())  # mean of |e| given |e| >= 1: 1 / (1 - theta)
    return p0, min(int(round(256 * max(0.0, 1.0 - 1.0 / m))), 255)


def _bits(e: np.ndarray, p0: int, theta: int) -> float:
    """Estimated bits of ``e`` under (p0, theta) (for the encoder's choice of alpha)."""
    p0f = min(max(p0, 1), 65535) / 65536.0
    th = min(max(theta, 1), 255) / 256.0
    a = np.abs(e)
    nz = a[a > 0]
    return float(-(a.size - nz.size) * np.log2(p0f)
                 - np.sum(np.log2((1 - p0f) / 2 * (1 - th)) + (np.minimum(nz, HALF) - 1) * np.log2(th)))


class _Models:
    """constriction models of one tile's classes: significance and value tables."""

    def __init__(self, params: dict[int, tuple[int, int]]):
        import constriction

        cat = constriction.stream.model.Categorical
        self.sig = {k: cat(_sig_table(p0).astype(np.float64), perfect=False) for k, (p0, _) in params.items()}
        self.val = {}
        self.half = {}
        for k, (_, th) in params.items():
            f = _mag_table(th)
            self.val[k] = cat(f.astype(np.float64), perfect=False)
            self.half[k] = (len(f) - 2) // 2


def _groups(cls: np.ndarray):
    """(class, flat indices) in increasing class order, each in raster order."""
    flat = cls.reshape(-1)
    order = stable_order(flat, N_CLASSES)  # a radix sort: classes fit in a byte
    bounds = np.flatnonzero(np.diff(flat[order])) + 1
    for grp in np.split(order, bounds):
        if grp.size:
            yield int(flat[grp[0]]), grp


def encode_layer(q: np.ndarray | None, step: float, bias_db: float = 0.0, raw: bool = False) -> bytes:
    """Code a tile's residual integers ``q`` (None or all zero: none) with its ``step`` and
    ``bias_db``. Returns b"" when there is nothing to send.

    Layout: header (magic, flags, step f32, bias f32, used-class bitmap u32), per used class
    (p0 u16, theta u8), one alpha (int8) per pass, u32 word count, range-coder words, u32 escape
    count, escapes (int32). One range-coder stream carries, pass by pass and class by class, the
    significance (zero / non-zero) of every value, then the non-zero values.

    ``raw`` (flag 2): ``q`` is a whole integer image (lossless mode), not a residual: pass 0 is
    coded as differences along its rows (the first column down the column), later passes
    against the rounded mean of their neighbours (alpha 32) with classes from the neighbours'
    spread."""
    import constriction

    has_q = q is not None and bool(np.any(q))
    if not has_q and not bias_db:
        return b""
    if not has_q and not raw:
        return _HEAD.pack(_MAGIC, 0, float(step), float(bias_db), 0)
    q = np.asarray(q, np.int64)
    if np.abs(q).max() >= 2**31:
        raise InputError("pixel-layer residual out of int32 range")
    alphas: list[int] = []
    pieces: list[tuple[np.ndarray, np.ndarray]] = []
    groups: list[list] = []  # per pass, _groups(cls): one sort serves the choice of alpha and the coding
    for p in range(len(PASSES)):
        rr, cc, cls, ssum, n = _context(q, p, raw)
        r0, c0, s, _ = PASSES[p]
        v = q[r0::s, c0::s]  # = q[rr, cc]
        groups.append(list(_groups(cls)))
        alpha = 0
        if raw:
            if PASSES[p][3]:
                alphas.append(32)
                pieces.append((v - _predict(32, ssum, n), cls))
            else:
                alphas.append(0)
                pieces.append((_row_diff(v), cls))
            continue
        if PASSES[p][3]:
            m = ssum / n
            den = float(np.sum(m * m))
            cand = int(np.clip(round(32 * float(np.sum(v * m)) / den), -32, 32)) if den > 0 else 0
            if cand:
                best = None
                for a in (0, cand):
                    e = (v - _predict(a, ssum, n)).reshape(-1)
                    b = sum(_bits(e[grp], *_fit_class(e[grp])) for _, grp in groups[-1])
                    if best is None or b < best[0]:
                        best = (b, a)
                alpha = best[1]
        alphas.append(alpha)
        pieces.append((v - _predict(alpha, ssum, n), cls))
    allc = np.concatenate([c.reshape(-1) for _, c in pieces])
    alle = np.concatenate([e.reshape(-1) for e, _ in pieces])
    params = {int(k): _fit_class(alle[allc == k]) for k in np.unique(allc)}
    used = sum(1 << k for k in params)
    models = _Models(params)
    enc = constriction.stream.queue.RangeEncoder()
    escapes: list[np.ndarray] = []
    for (e, cls), grps in zip(pieces, groups):
        ef = e.reshape(-1)
        for k, grp in grps:
            vals = ef[grp]
            nz = vals != 0
            enc.encode(nz.astype(np.int32), models.sig[k])
            if nz.any():
                h = models.half[k]
                x = vals[nz]
                out = np.abs(x) > h
                if out.any():
                    escapes.append(x[out])
                sym = np.where(out, 2 * h + 1, x + h)
                enc.encode(sym.astype(np.int32), models.val[k])
    words = enc.get_compressed().astype("<u4")
    esc = np.concatenate(escapes).astype("<i4") if escapes else np.zeros(0, "<i4")
    parts = [_HEAD.pack(_MAGIC, 2 if raw else 1, float(step), float(bias_db), used)]
    parts += [struct.pack("<HB", *params[k]) for k in sorted(params)]
    parts.append(struct.pack(f"<{len(PASSES)}b", *alphas))
    parts += [struct.pack("<I", words.size), words.tobytes(), struct.pack("<I", esc.size), esc.tobytes()]
    return b"".join(parts)


def read_alphas(blob: bytes, pos: int) -> tuple[tuple[int, ...], int]:
    """A layer blob's per-pass prediction weights (int8, |alpha| <= 32) at ``pos``."""
    alphas = struct.unpack_from(f"<{len(PASSES)}b", blob, pos)
    if any(abs(a) > 32 for a in alphas):
        raise ValueError("bad prediction weight")
    return alphas, pos + len(PASSES)


def read_words(blob: bytes, pos: int) -> tuple[np.ndarray, int]:
    """A layer blob's range-coder stream (u32 count, then the words) at ``pos``; at least one
    u32 must follow it."""
    (n_words,) = struct.unpack_from("<I", blob, pos)
    pos += 4
    if pos + 4 * n_words + 4 > len(blob):
        raise ValueError("stream is truncated")
    return np.frombuffer(blob, "<u4", n_words, pos).astype(np.uint32), pos + 4 * n_words


def decode_coded(blob: bytes, shape: tuple[int, int]) -> LayerData:
    """A blob of :func:`encode_layer` (flags 0, 1, 2) for a tile of ``shape``; a malformed blob
    raises what it hits (ValueError, struct.error, ...), which :func:`sarcodec.layer.decode_layer`
    wraps."""
    import constriction

    magic, flags, step, bias_db, used = _HEAD.unpack_from(blob, 0)
    if magic != _MAGIC or flags not in (0, 1, 2) or not np.isfinite(step) or not np.isfinite(bias_db) \
            or abs(bias_db) > 100 or not 0 < step < 1e3 or used >> N_CLASSES:
        raise ValueError("bad layer header")
    if flags == 0:
        if len(blob) != _HEAD.size:
            raise ValueError("trailing bytes")
        return LayerData(None, step, bias_db)
    pos = _HEAD.size
    params = {}
    for k in range(N_CLASSES):
        if used >> k & 1:
            params[k] = struct.unpack_from("<HB", blob, pos)
            pos += 3
    alphas, pos = read_alphas(blob, pos)
    words, pos = read_words(blob, pos)
    (n_esc,) = struct.unpack_from("<I", blob, pos)
    pos += 4
    if pos + 4 * n_esc != len(blob):
        raise ValueError("escape list does not match the blob size")
    esc = np.frombuffer(blob, "<i4", n_esc, pos).astype(np.int64)
    models = _Models(params)
    dec = constriction.stream.queue.RangeDecoder(words)
    q = np.zeros(shape, np.int64)
    ei = 0
    raw = flags == 2
    for p in range(len(PASSES)):
        rr, cc, cls, ssum, n = _context(q, p, raw)
        if rr.size == 0:
            continue
        e = np.zeros(rr.size, np.int64)
        for k, grp in _groups(cls):
            if k not in params:
                raise ValueError("a context class has no table")
            nz = np.asarray(dec.decode(models.sig[k], grp.size), np.int64) == 1
            m = int(nz.sum())
            if m:
                h = models.half[k]
                sym = np.asarray(dec.decode(models.val[k], m), np.int64)
                vals = sym - h
                ei = fill_escapes(vals, sym == 2 * h + 1, esc, ei)
                if np.any(vals == 0):
                    raise ValueError("a non-zero value decoded as zero")
                e[grp[nz]] = vals
        r0, c0, s, _ = PASSES[p]
        if raw and not PASSES[p][3]:
            v = _row_undiff(e.reshape(rr.shape))
        else:
            v = e.reshape(rr.shape) + _predict(alphas[p], ssum, n)
        if np.abs(v).max() >= 2**31:
            raise ValueError("value out of range")
        q[r0::s, c0::s] = v  # the pass's lattice: rows rr, columns cc
    if ei != esc.size:
        raise ValueError("unused escape values")
    return LayerData(q, step, bias_db)


def centroid_offsets(q: np.ndarray, r: np.ndarray, step: float) -> tuple[int, ...]:
    """Per |q| = 1..N_OFFSETS (the last: and above), the mean of |q| - |r|/step over the values
    ``q`` of residuals ``r`` (the tile's valid pixels) in that bin, in 1/256: how far the bin's
    centroid lies towards zero, the MSE-optimal reconstruction of a peaked residual."""
    a = np.abs(q)
    d = a - np.abs(r) / step
    out = []
    for k in range(1, N_OFFSETS + 1):
        sel = a == k if k < N_OFFSETS else a >= k
        out.append(int(np.clip(np.round(256 * d[sel].mean()), -127, 127)) if sel.any() else 0)
    return tuple(out)
