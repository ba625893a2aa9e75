"""The pixel layer of a tile: what the learned base layer leaves, coded exactly.

A tile is layers (``../shared/DESIGN.md``). The base layer is the learned transform's latents; this
module codes a second, optional layer beside it, in the codec's normalised dB domain *without the
clip* (``t = (dB - lo) / (hi - lo)``, which may leave [0, 1] for bright targets)::

      original t ──────────────────────────┐
                                           ▼
      base x̂ (synthesis of ŷ) ──▶ r = t - x̂ ──▶ q = round(r / step) ──▶ context coder ──▶ bytes
                                                      │ (integers)
      decoder:  t̂ = x̂ + q · step  (+ bias shift)   ◀──┘

Three uses share it, told apart only by which residuals the encoder sends:

* **dense** (``max_error``): every valid pixel, step = 2 * max_error / (hi - lo), so every pixel's
  dB error is <= max_error *by construction* (plus float rounding of the synthesis, < 1e-4 dB).
  This is also the high-rate mode: a quantiser in the pixel domain keeps gaining ~6 dB per bit
  where the learned synthesis flattens, and on single-look speckle (nearly white) there is no
  transform gain to lose.
* **sparse outliers**: only pixels outside the clip range (bright targets: ships, corner
  reflectors, urban double bounce) get a non-zero ``q``; everything else is 0, which the context
  model codes in a small fraction of a bit. Restores what the clip would destroy.
* **bias shift**: one number per tile (dB) that makes the tile's mean *linear* intensity equal the
  original's (MSE in dB reconstructs the geometric mean, which is biased low).

A dense layer without the per-pixel bound (``bound=False``, an *MSE layer*: what ``--psnr`` and
``--bpp`` use) may instead be coded in the **wavelet domain**: the residual through CDF 9/7
lifting steps, each band quantised with ``step / norm`` and coded as its own layer blob by the
same context coder. Flag 4 (sessions 9-12) is the two-level dyadic transform; flag 8 (session 13)
a wavelet *packet*: any band may be split again, by a tree the encoder picks per tile with a
rate-distortion best-basis search (:func:`best_basis`, :func:`encode_packet_layer`) and sends in
a few bits. Where the base leaves spatially correlated residuals (multi-looked GRD at 1-2 bpp)
the bands it already matches cost almost nothing, and splitting the fine bands resolves the
speckle's spectrum inside them (0.3-0.7 dB at 1-2 bpp over the dyadic form on the GRD validation
crops); on white residuals (single-look) the pixel form stays cheaper. The encoder keeps the form
with the lower ``SSE + lambda * bits`` per tile (:func:`make_layer`); both decode from exact integers. In
both forms an MSE layer is quantised with **dependent (trellis-coded) quantisation**
(:mod:`sarcodec.dq`, flag 7: two interleaved quantisers, an 8-state machine on the parity of each
level, levels chosen by a Viterbi search; +0.3-0.6 dB over the scalar quantiser at 1-3 bpp; flag
6, 4 states, from session 11, still decodes).
Either form may then carry a **restoration filter** (flag 5 around it, :class:`RestorationFilter`): a
per-tile least-squares Wiener filter on the reconstructed pixels, kept where it lowers the same
cost. It reads 3 pixels around each output pixel (:attr:`LayerData.reach`), so a decoder of a
window widens it by that much within the tile.

**Determinism.** Every probability comes from exactly decoded integers: the ``q`` of neighbours
decoded in earlier passes, never from the float base pixels (which may differ by 1e-7 between
machines). Tables are built from a few integer parameters with integer arithmetic only.

**Context model** (vectorised, no serial autoregression): seven passes over a 4x4 lattice, coarse
to fine, like a checkerboard extended to two scales. Pass 0 (1/16 of the pixels) has no context;
every later pass sees the four nearest pixels of earlier passes (diagonal or cross, at distance 2
then 1). From them: a class (bucket of the mean |q| of the neighbours) selects a table, and a
prediction ``round(alpha * mean q)`` (alpha fitted per pass by the encoder, sent as an int8 /32)
is subtracted. Each table is a zero-inflated two-sided geometric distribution, two integers per
class (``p0`` in 1/65536, ``theta`` in 1/256) fitted to the tile by the encoder. Values beyond
+-``HALF`` are escaped (raw int32), so any residual is representable.
"""
from __future__ import annotations

import functools
import numbers
import struct
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .entropy import fill_escapes
from .errors import CorruptedFileError, InputError

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
    filter: RestorationFilter | None = None  # an MSE layer's restoration filter (flag 5), applied last

    @property
    def reach(self) -> int:
        """Pixels beyond a window the layer needs to reconstruct it (its filter's reach): a
        decoder of part of a tile crops to the window widened by this, then keeps the window."""
        return FILTER_REACH if self.filter is not None else 0

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
    # in-bounds neighbour counts: len(nb) inside, fewer on the border rows and columns only
    n = np.full((nr, nc), len(nb), np.int64)
    for dr, dc in nb:
        okr = (ar + dr >= 0) & (ar + dr < h)
        okc = (ac + dc >= 0) & (ac + dc < w)
        n[~okr, :] -= okc
        n[:, ~okc] -= okr[:, None]
        n[np.ix_(~okr, ~okc)] -= 1
    m = _PAD
    nz = None if raw else np.flatnonzero(q)
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
    # classes fit in a byte: numpy's stable sort of a uint8 array is a radix sort (same order)
    small = flat.size and 0 <= flat.min() and flat.max() < 256
    order = np.argsort(flat.astype(np.uint8) if small else flat, kind="stable")
    bounds = np.flatnonzero(np.diff(flat[order])) + 1
    for grp in np.split(order, bounds):
        if grp.size:
            yield int(flat[grp[0]]), grp


def encode_layer(q: np.ndarray | None, step: float, bias_db: float = 0.0, raw: bool = False,
                 offsets: tuple[int, ...] | None = None) -> bytes:
    """Code a tile's residual integers ``q`` (None or all zero: none) with its ``step`` and
    ``bias_db``. Returns b"" when there is nothing to send.

    Layout: header (magic, flags, step f32, bias f32, used-class bitmap u32), per used class
    (p0 u16, theta u8), one alpha (int8) per pass, u32 word count, range-coder words, u32 escape
    count, escapes (int32). One range-coder stream carries, pass by pass and class by class, the
    significance (zero / non-zero) of every value, then the non-zero values.

    ``raw`` (flag 2): ``q`` is a whole integer image (lossless mode), not a residual: pass 0 is
    coded as differences along its rows (the first column down the column), later passes
    against the rounded mean of their neighbours (alpha 32) with classes from the neighbours'
    spread.

    ``offsets`` (flag 3, an MSE layer): N_OFFSETS int8 after the alphas, each bin's centroid
    (:meth:`LayerData.values`) instead of its centre."""
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
    parts = [_HEAD.pack(_MAGIC, 2 if raw else 3 if offsets is not None else 1, float(step), float(bias_db), used)]
    parts += [struct.pack("<HB", *params[k]) for k in sorted(params)]
    parts.append(struct.pack(f"<{len(PASSES)}b", *alphas))
    if offsets is not None:
        parts.append(struct.pack(f"<{N_OFFSETS}b", *offsets))
    parts += [struct.pack("<I", words.size), words.tobytes(), struct.pack("<I", esc.size), esc.tobytes()]
    return b"".join(parts)


# ------------------------------------------------------------------------------------------------
# the wavelet form of an MSE layer
# ------------------------------------------------------------------------------------------------
# CDF 9/7 lifting (the JPEG 2000 irreversible wavelet) with whole-sample symmetric extension, any
# length (odd too; a length-1 signal passes unchanged). Float64 numpy, elementwise only: the same
# on every machine as the base synthesis is (the entropy-decoded integers are exact regardless).
_LIFT = (-1.586134342059924, -0.052980118572961, 0.882911075530934, 0.443506852043971)
_KAPPA = 1.230174104914001
WAVELET_LEVELS = 2  # validation (GRD, Sen1Floods11): 2 levels beat 1, 3, 4 and 5 by 0.4-1.8% of the file


def _neighbours(ns: int, nd: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index of s[i + 1] for each d (mirrored at the end) and of d[i - 1], d[i] for each s."""
    i = np.arange(ns)
    return np.minimum(np.arange(nd) + 1, ns - 1), np.clip(i - 1, 0, nd - 1), np.minimum(i, nd - 1)


def _dwt1(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) halves of one 1-D CDF 9/7 level along ``axis``."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, 0)
    s, d = x[0::2].copy(), x[1::2].copy()
    if len(d) == 0:
        return np.moveaxis(s, 0, axis), np.moveaxis(d, 0, axis)
    nxt, dl, dr = _neighbours(len(s), len(d))
    a, b, c, e = _LIFT
    d += a * (s[:len(d)] + s[nxt])
    s += b * (d[dl] + d[dr])
    d += c * (s[:len(d)] + s[nxt])
    s += e * (d[dl] + d[dr])
    return np.moveaxis(s / _KAPPA, 0, axis), np.moveaxis(d * _KAPPA, 0, axis)


def _idwt1(s: np.ndarray, d: np.ndarray, axis: int) -> np.ndarray:
    s, d = np.moveaxis(s, axis, 0), np.moveaxis(d, axis, 0)
    if len(d) == 0:
        return np.moveaxis(s.copy(), 0, axis)
    s, d = s * _KAPPA, d / _KAPPA
    nxt, dl, dr = _neighbours(len(s), len(d))
    a, b, c, e = _LIFT
    s = s - e * (d[dl] + d[dr])
    d = d - c * (s[:len(d)] + s[nxt])
    s = s - b * (d[dl] + d[dr])
    d = d - a * (s[:len(d)] + s[nxt])
    x = np.empty((len(s) + len(d),) + s.shape[1:])
    x[0::2], x[1::2] = s, d
    return np.moveaxis(x, 0, axis)


# A decomposition is a tree: None is a band kept as it is, a 4-tuple (LL, LH, HL, HH) of subtrees
# splits a band by one 2-D level. The dyadic transform splits only the low band (flag 4); a
# wavelet *packet* may split any band (flag 8), which a best-basis search on the encoder picks.
Tree = Optional[tuple]
PACKET_DEPTH = 2  # the encoder's best basis splits a band at most twice (validation: 3 over-splits)
PACKET_MAX_DEPTH = 4  # the deepest tree a decoder accepts
PACKET_MIN_SIZE = 16  # the encoder splits only bands at least this tall and wide
PACKET_BAND_BYTES = 50  # a band blob's fixed bytes (headers, counts, lengths), besides 3 per table


def dyadic_tree(levels: int) -> Tree:
    """The tree of the dyadic transform of ``levels`` levels (what :func:`dwt2` computes)."""
    tree = None
    for _ in range(levels):
        tree = (tree, None, None, None)
    return tree


def split_band(x: np.ndarray) -> list[np.ndarray]:
    """One 2-D CDF 9/7 level: [LL, LH, HL, HH]."""
    lo, hi = _dwt1(x, 1)
    ll, lh = _dwt1(lo, 0)
    hl, hh = _dwt1(hi, 0)
    return [ll, lh, hl, hh]


def merge_bands(ll: np.ndarray, lh: np.ndarray, hl: np.ndarray, hh: np.ndarray) -> np.ndarray:
    """Inverse of :func:`split_band`."""
    return _idwt1(_idwt1(ll, lh, 0), _idwt1(hl, hh, 0), 1)


def split_shapes(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """The shapes :func:`split_band` gives a ``shape`` band."""
    h, w = shape
    return [((h + 1) // 2, (w + 1) // 2), (h // 2, (w + 1) // 2), ((h + 1) // 2, w // 2), (h // 2, w // 2)]


def packet_analyse(x: np.ndarray, tree: Tree) -> list[np.ndarray]:
    """The leaf bands of ``x`` under ``tree``, in pre-order (LL before LH, HL, HH, depth first)."""
    if tree is None:
        return [np.asarray(x, np.float64)]
    out = []
    for band, sub in zip(split_band(x), tree):
        out += packet_analyse(band, sub)
    return out


def packet_synth(bands: list[np.ndarray], tree: Tree) -> np.ndarray:
    """Inverse of :func:`packet_analyse`."""
    it = iter(bands)

    def rec(t):
        return next(it) if t is None else merge_bands(*[rec(sub) for sub in t])
    return rec(tree)


def packet_shapes(shape: tuple[int, int], tree: Tree) -> list[tuple[int, int]]:
    """The shapes of :func:`packet_analyse`'s bands for a ``shape`` image, in its order."""
    if tree is None:
        return [tuple(shape)]
    return [s for sh, sub in zip(split_shapes(shape), tree) for s in packet_shapes(sh, sub)]


@functools.lru_cache(maxsize=256)
def packet_norms(shape: tuple[int, int], tree: Tree) -> tuple[float, ...]:
    """L2 norm of each leaf band's synthesis function (an impulse at the band's centre through
    :func:`packet_synth`, on at most 64 x 64 pixels: the functions of two levels span ~30): a
    quantiser step of ``step / norm`` gives every band the same share of MSE."""
    shapes = packet_shapes((min(shape[0], 64), min(shape[1], 64)), tree)
    out = []
    for k, sh in enumerate(shapes):
        bands = [np.zeros(b) for b in shapes]
        if bands[k].size == 0:
            out.append(1.0)
            continue
        bands[k][sh[0] // 2, sh[1] // 2] = 1.0
        out.append(float(np.sqrt(np.sum(packet_synth(bands, tree) ** 2))))
    return tuple(out)


def tree_bits(tree: Tree) -> list[int]:
    """``tree`` in pre-order, 1 for a split, 0 for a leaf."""
    return [0] if tree is None else [1] + [b for sub in tree for b in tree_bits(sub)]


def parse_tree(bits: list[int], shape: tuple[int, int]) -> Tree:
    """Inverse of :func:`tree_bits` for a ``shape`` image; ValueError unless the bits are exactly
    one tree no deeper than PACKET_MAX_DEPTH that splits only bands of at least 2 x 2."""
    pos = 0

    def rec(sh, depth):
        nonlocal pos
        if pos >= len(bits):
            raise ValueError("packet tree is truncated")
        b = bits[pos]
        pos += 1
        if not b:
            return None
        if depth >= PACKET_MAX_DEPTH or min(sh) < 2:
            raise ValueError("packet tree splits too deep")
        return tuple(rec(s, depth + 1) for s in split_shapes(sh))
    tree = rec(tuple(shape), 0)
    if pos != len(bits):
        raise ValueError("trailing bits after the packet tree")
    return tree


def dwt2(x: np.ndarray, levels: int) -> list[np.ndarray]:
    """Subbands of a ``levels``-level 2-D CDF 9/7 transform: the low band, then (LH, HL, HH) of
    each level, coarsest first."""
    return packet_analyse(x, dyadic_tree(levels))


def idwt2(bands: list[np.ndarray], levels: int) -> np.ndarray:
    """Inverse of :func:`dwt2`."""
    return packet_synth(bands, dyadic_tree(levels))


def band_shapes(shape: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    """The shapes :func:`dwt2` gives a ``shape`` image, in its order."""
    return packet_shapes(shape, dyadic_tree(levels))


def band_norms(shape: tuple[int, int], levels: int) -> tuple[float, ...]:
    """:func:`packet_norms` of the dyadic transform."""
    return packet_norms(tuple(shape), dyadic_tree(levels))


def rd_lambda(step: float) -> float:
    """The Lagrangian (squared error per bit) an MSE layer's choices use: 2 ln2 step^2 / 12, the
    slope of a uniform quantiser of ``step`` at high rate."""
    return 2.0 * np.log(2.0) * step * step / 12.0


def _proxy_cost(c: np.ndarray, s: float, nrm: float, lam: float) -> float:
    """The best basis' cost of band ``c`` (synthesis norm ``nrm``) at step ``s``: squared error
    (in residual units) of the scalar quantiser plus ``lam`` times the bits the dependent
    quantiser's context model would spend on its levels (the estimate of its first iteration) and
    on the band blob's fixed bytes and tables."""
    from . import dq

    q = np.rint(c / s).astype(np.int64)
    err = float(np.sum((c - q * s) ** 2)) * nrm * nrm
    if not q.any():
        return err
    bits, tables = dq.estimate_scalar_bits(q)
    return err + lam * (bits + 8 * (PACKET_BAND_BYTES + 3 * tables))


def best_basis(r: np.ndarray, step: float, depth: int = PACKET_DEPTH) -> Tree:
    """The packet tree of residual ``r`` (0 on invalid pixels) at ``step`` that a cheap rate
    estimate prefers (Coifman and Wickerhauser's best basis with a rate-distortion cost, bottom
    up: a band is split where its four children cost less than it does). Cost: squared error +
    make_layer's lambda * estimated bits; child norms are the parent's times one level's."""
    lam = rd_lambda(step)
    one = packet_norms((64, 64), (None, None, None, None))

    def rec(x, nrm, d):
        leaf = _proxy_cost(x, step / nrm, nrm, lam)
        if d == 0 or min(x.shape) < PACKET_MIN_SIZE:
            return leaf, None
        subs = [rec(b, nrm * v, d - 1) for b, v in zip(split_band(x), one)]
        total = sum(c for c, _ in subs)
        return (total, tuple(t for _, t in subs)) if total < leaf else (leaf, None)
    return rec(np.asarray(r, np.float64), 1.0, depth)[1]


def encode_packet_layer(r: np.ndarray, step: float, tree: Tree | str = "best") -> tuple[bytes, np.ndarray]:
    """An MSE layer coded in a wavelet *packet* basis (flag 8): the residual ``r`` (normalised
    units, 0 on invalid pixels) through :func:`packet_analyse` with ``tree`` (``"best"``: the
    :func:`best_basis` of ``r``), each band quantised with ``step / norm`` by dependent
    quantisation (:mod:`sarcodec.dq`) and coded as its own layer blob. Returns (blob, the residual
    a decoder will reconstruct). Layout: header (flag 8, ``step``), u8 number of tree bits, the
    bits (:func:`tree_bits`, packed, most significant first), per band u32 length + a layer blob
    (length 0: an all-zero band).

    Splitting the fine subbands too resolves the spectrum of multi-looked speckle, whose energy
    falls towards the Nyquist frequency inside them: on the GRD validation crops at 1-2 bpp the
    packet basis gains 0.3-0.6 dB over the dyadic transform at the same rate."""
    if isinstance(tree, str):
        tree = best_basis(r, step)
    bits = tree_bits(tree)
    blobs, res = _dq_bands(r, step, tree)
    return b"".join([_HEAD.pack(_MAGIC, 8, float(step), 0.0, 0), struct.pack("<B", len(bits)),
                     np.packbits(np.asarray(bits, np.uint8)).tobytes()] + blobs), res


def _dq_bands(r: np.ndarray, step: float, tree: Tree) -> tuple[list[bytes], np.ndarray]:
    """The bands of ``r`` under ``tree``, each quantised with ``step / norm`` by dependent
    quantisation: per band u32 length + its layer blob (length 0: an all-zero band), and the
    residual a decoder will reconstruct from them."""
    from . import dq

    bands = packet_analyse(r, tree)
    coded = dq.encode_dq_bands(bands, [step / nrm for nrm in packet_norms(tuple(np.shape(r)), tree)])
    parts, recs = [], []
    for band, (sub, lay) in zip(bands, coded):
        parts += [struct.pack("<I", len(sub)), sub]
        recs.append(lay.values() if sub else np.zeros(band.shape))
    return parts, packet_synth(recs, tree)


def encode_wavelet_layer(r: np.ndarray, step: float, levels: int = WAVELET_LEVELS,
                         dependent: bool = True) -> tuple[bytes, np.ndarray]:
    """An MSE layer coded in the wavelet domain: the residual ``r`` (normalised units, 0 on
    invalid pixels) through :func:`dwt2`, each subband quantised with ``step / norm`` (centroid
    reconstruction) and coded as its own layer blob: ``dependent``, with dependent quantisation
    (:mod:`sarcodec.dq`, flag 7), else with the scalar quantiser (:func:`encode_layer`, flag 3).
    Returns (blob, the residual a decoder will reconstruct). Layout: header (flags 4, ``step``),
    u8 levels, per subband u32 length + a layer blob (length 0: an all-zero subband).

    Where the learned base leaves spatially correlated residuals (GRD, Sen1Floods11 at 1-2 bpp),
    the transform lets a fine layer skip the high-frequency bands the base already matches; the
    encoder keeps whichever form (pixel or wavelet) costs less (:func:`make_layer`)."""
    shape = r.shape
    parts = [_HEAD.pack(_MAGIC, 4, float(step), 0.0, 0), struct.pack("<B", levels)]
    if dependent:
        blobs, res = _dq_bands(r, step, dyadic_tree(levels))
        return b"".join(parts + blobs), res
    recs = []
    for band, nrm in zip(dwt2(r, levels), band_norms(shape, levels)):
        s = float(np.float32(step / nrm))
        q = np.rint(band / s).astype(np.int64)
        if q.any():
            off = centroid_offsets(q.reshape(-1), band.reshape(-1), s)
            sub = encode_layer(q, s, 0.0, offsets=off)
            recs.append(LayerData(q, s, 0.0, off).values())
        else:
            sub = b""
            recs.append(np.zeros(band.shape))
        parts += [struct.pack("<I", len(sub)), sub]
    return b"".join(parts), idwt2(recs, levels)


def _decode_wavelet(blob: bytes, shape: tuple[int, int], step: float, packet: bool = False) -> LayerData:
    """A wavelet layer (flag 4: u8 levels of the dyadic transform) or a wavelet packet layer (flag
    8: u8 number of tree bits, the bits), then its bands."""
    (n,) = struct.unpack_from("<B", blob, _HEAD.size)
    pos = _HEAD.size + 1
    if packet:
        if not n:
            raise ValueError("bad packet tree length")
        nbytes = (n + 7) // 8
        if pos + nbytes > len(blob):
            raise ValueError("packet tree is truncated")
        bits = np.unpackbits(np.frombuffer(blob, np.uint8, nbytes, pos))
        if bits[n:].any():
            raise ValueError("packet tree padding is not zero")
        tree = parse_tree(bits[:n].tolist(), shape)
        pos += nbytes
    else:
        if not 1 <= n <= 8:
            raise ValueError("bad wavelet depth")
        tree = dyadic_tree(n)
    recs = []
    for sh in packet_shapes(shape, tree):
        (n,) = struct.unpack_from("<I", blob, pos)
        pos += 4
        if n > len(blob) - pos:
            raise ValueError("subband is truncated")
        sub = blob[pos:pos + n]
        pos += n
        if not n:
            recs.append(np.zeros(sh))
            continue
        if sub[2:3] not in (b"\x01", b"\x03", b"\x06", b"\x07", b"\x09"):
            raise ValueError("a subband must be a plain, MSE or dependent-quantisation layer")
        recs.append(_decode_blob(sub, sh).values())
    if pos != len(blob):
        raise ValueError("trailing bytes after the subbands")
    return LayerData(None, step, 0.0, residual=packet_synth(recs, tree))


def decode_layer(blob: bytes, shape: tuple[int, int], where: str = "tile") -> LayerData:
    """Inverse of :func:`encode_layer` for a tile of ``shape``. A malformed blob raises
    :class:`CorruptedFileError` naming ``where``."""
    try:
        return _decode_blob(blob, shape)
    except (CorruptedFileError, struct.error, ValueError, IndexError, OverflowError, AssertionError, RuntimeError,
            TypeError) as e:
        raise CorruptedFileError(f"pixel layer of {where} is corrupted ({e})") from e


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


def _decode_blob(blob: bytes, shape: tuple[int, int]) -> LayerData:
    """:func:`decode_layer` without the error wrapping (a malformed blob raises what it hits;
    a wavelet layer decodes its subbands with it, so an error is wrapped once)."""
    import constriction

    magic, flags, step, bias_db, used = _HEAD.unpack_from(blob, 0)
    if magic != _MAGIC or flags not in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9) or not np.isfinite(step) or not np.isfinite(bias_db) \
            or abs(bias_db) > 100 or not 0 < step < 1e3 or used >> N_CLASSES:
        raise ValueError("bad layer header")
    if flags == 0:
        if len(blob) != _HEAD.size:
            raise ValueError("trailing bytes")
        return LayerData(None, step, bias_db)
    if flags in (6, 7, 9):
        from . import dq

        return dq.decode_dq(blob, shape)
    if flags in (4, 8):
        if bias_db or used:
            raise ValueError("a wavelet layer carries no bias shift or classes")
        return _decode_wavelet(blob, shape, step, packet=flags == 8)
    if flags == 5:
        if bias_db or used:
            raise ValueError("a filtered layer carries no bias shift or classes")
        filt, pos = RestorationFilter.unpack(blob, _HEAD.size)
        inner = blob[pos:]
        if inner[:2] != _MAGIC or inner[2:3] not in (b"\x03", b"\x04", b"\x06", b"\x07", b"\x08", b"\x09"):
            raise ValueError("a restoration filter must wrap an MSE layer")
        lay = _decode_blob(inner, shape)
        lay.filter = filt
        return lay
    pos = _HEAD.size
    params = {}
    for k in range(N_CLASSES):
        if used >> k & 1:
            params[k] = struct.unpack_from("<HB", blob, pos)
            pos += 3
    alphas, pos = read_alphas(blob, pos)
    offsets = None
    if flags == 3:
        offsets = struct.unpack_from(f"<{N_OFFSETS}b", blob, pos)
        pos += N_OFFSETS
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
    return LayerData(q, step, bias_db, offsets)


# ------------------------------------------------------------------------------------------------
# what the encoder sends
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerSpec:
    """What the pixel layer carries. ``max_error_db``: dense residual, every valid pixel within
    that many dB (None: no dense residual). ``outliers``: pixels above the clip range (``"high"``),
    also below it (``"both"``) or none (``"none"``) are restored within ``outlier_tol_db``.
    ``bias``: send the per-tile shift that makes mean linear intensity unbiased.
    ``peak_db``: pixels this many dB above the mean dB of their 7x7 neighbourhood count as
    bright targets too, even inside the clip range (a point target the synthesis smooths away);
    16 dB is exceeded by single-look speckle on about 2e-10 of pixels (e^-22.4), by a +20 dB point
    target over its clutter always. None: only the clip range decides.
    ``bound`` (with ``max_error_db``): True, the error bound holds for every pixel (each value
    reconstructed at its bin's centre); False, an MSE layer with the same step: each bin
    reconstructed at its centroid on the tile (offsets per |q|, sent), no per-pixel bound but a
    higher PSNR at the same size (what the psnr / bpp search uses)."""

    max_error_db: float | None = None
    outliers: str = "high"
    outlier_tol_db: float = 0.35
    bias: bool = True
    peak_db: float | None = 16.0
    bound: bool = True

    def __post_init__(self) -> None:
        if self.max_error_db is not None and not (isinstance(self.max_error_db, numbers.Real)
                                                  and 1e-3 <= self.max_error_db <= 20):
            raise InputError(f"max_error must be a number of dB in [0.001, 20], got {self.max_error_db!r}")
        if self.outliers not in ("high", "both", "none"):
            raise InputError(f"outliers must be high, both or none, got {self.outliers!r}")
        if not 1e-3 <= self.outlier_tol_db <= 10:
            raise InputError(f"outlier tolerance must be in [0.001, 10] dB, got {self.outlier_tol_db!r}")

    @property
    def active(self) -> bool:
        return self.max_error_db is not None or self.outliers != "none" or self.bias

    def to_dict(self) -> dict:
        """What the layer does, as recorded in a file (a dense residual covers every pixel)."""
        if self.max_error_db is not None:
            return {"max_error_db": float(self.max_error_db), "outliers": "none", "outlier_tol_db": self.outlier_tol_db,
                    "bias": False, **({} if self.bound else {"bound": False})}
        return {"max_error_db": None, "outliers": self.outliers, "outlier_tol_db": self.outlier_tol_db,
                "bias": self.bias, "peak_db": self.peak_db if self.outliers != "none" else None}


def make_layer(t: np.ndarray, base: np.ndarray, mask: np.ndarray | None, spec: LayerSpec,
               lo_db: float, hi_db: float) -> tuple[bytes, LayerData]:
    """The encoder's side: the layer blob of one tile from the original ``t`` (normalised,
    unclipped), the base reconstruction ``base`` and the invalid-pixel ``mask``, and the layer as
    a decoder will read it (step and bias at the float32 precision the blob stores), so that the
    encoder knows the reconstruction without decoding its own blob."""
    span = hi_db - lo_db
    t = np.asarray(t, np.float64)
    base = np.asarray(base, np.float64)
    valid = np.ones(t.shape, bool) if mask is None else ~mask
    r = np.where(valid, t - base, 0.0)
    if spec.max_error_db is not None:
        step = 2.0 * spec.max_error_db / span
        # a hair below the bound: float32 storage and the synthesis' rounding stay inside it
        q = np.rint(r / step).astype(np.int64)
    else:
        step = 2.0 * spec.outlier_tol_db / span
        out = np.zeros(t.shape, bool)
        if spec.outliers in ("high", "both"):
            out |= t > 1.0
            if spec.peak_db is not None:
                from scipy.ndimage import uniform_filter

                local = uniform_filter(np.where(valid, t, np.median(t[valid]) if valid.any() else 0.0), 7,
                                       mode="nearest")
                out |= t - local > spec.peak_db / span
        if spec.outliers == "both":
            out |= t < 0.0
        q = np.where(out & valid, np.rint(r / step), 0).astype(np.int64)
    bias = 0.0
    if spec.bias and spec.max_error_db is None and valid.any():
        # the shift g (on pixels with q == 0) that makes the tile's mean linear intensity exact:
        # sum(I) = g * sum(I_base over q == 0) + sum(I_restored over q != 0)
        inten = lambda v: np.power(10.0, (lo_db + span * v) / 10.0)  # noqa: E731
        kept = valid & (q == 0)
        rest = float(inten(t[valid]).sum() - inten((base + q * step)[valid & (q != 0)]).sum())
        den = float(inten(base[kept]).sum())
        if den > 0 and rest > 0:
            bias = float(np.clip(np.round(10.0 * np.log10(rest / den), 4), -30.0, 30.0))
    if spec.max_error_db is not None and not spec.bound and q.any():
        # an MSE layer: dependent quantisation (dq.py) in the pixel or the wavelet packet form,
        # whichever costs less (rate + distortion), then the restoration filter where it pays
        from . import dq

        step = float(np.float32(step))
        blob, lay = dq.encode_dq(r, step)
        if not blob:
            lay = LayerData(None, step, 0.0)
        wblob, res = encode_packet_layer(r, step)
        lam = rd_lambda(step)
        cost = lambda e, n: float(np.sum(np.where(valid, e, 0.0) ** 2)) + lam * 8 * n  # noqa: E731
        if cost(r - res, len(wblob)) < cost(r - (lay.values() if blob else 0.0), len(blob)):
            blob, lay = wblob, LayerData(None, step, 0.0, residual=res)
        if not blob:
            return blob, lay
        return _with_filter(blob, lay, t, base, valid, lo_db, hi_db, cost)
    blob = encode_layer(q, step, bias)
    lay = LayerData(q if q.any() else None, float(np.float32(step)), float(np.float32(bias)) if blob else 0.0)
    return blob, lay


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


# ------------------------------------------------------------------------------------------------
# the restoration filter of an MSE layer (flag 5)
# ------------------------------------------------------------------------------------------------
# A Wiener filter the encoder fits to each tile (least squares against the original), like the
# adaptive loop filter of VVC / the Wiener loop restoration of AV1: the reconstruction plus a
# weighted sum of symmetric second differences over a diamond of radius 4 within 7 x 7 (18 pairs),
# one set of weights per activity class (local |Laplacian| over 5 x 5, class edges the tile's
# quartiles). It removes part of the quantisation noise a wavelet or pixel layer leaves where the
# image is correlated (multi-looked GRD: +0.2-0.4 dB at 1-2 bpp on the validation crops); on white
# single-look speckle it finds nothing and the encoder leaves it out. Pixels only: the filter never
# feeds an entropy model, so the decoded integers stay exact on every machine.
FILTER_PAIRS = tuple((dr, dc) for dr in range(4) for dc in range(-3, 4)
                     if (dr > 0 or dc > 0) and abs(dr) + abs(dc) <= 4)
FILTER_REACH = 3  # the taps and the activity (Laplacian 1 + box 2) each reach 3 pixels
FILTER_CLASSES = 4
_TAP_ONE = 4096  # taps in 1/4096 (int16)
_DC_ONE = 65536  # per-class offsets in 1/65536 of the normalised range (int16)
_FILTER_HEAD = struct.Struct("<BB")  # classes, pairs


def _padded(x: np.ndarray) -> np.ndarray:
    return np.pad(np.asarray(x, np.float64), FILTER_REACH, mode="symmetric")


def _filter_activity(xp: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Sum of |4-neighbour Laplacian| over 5 x 5 around each pixel, from the padded ``xp``. Fixed
    summation order, so a window of a tile gives the whole tile's values bit for bit."""
    h, w = shape
    c = xp[1:-1, 1:-1]
    lap = np.abs(4.0 * c - xp[:-2, 1:-1] - xp[2:, 1:-1] - xp[1:-1, :-2] - xp[1:-1, 2:])  # positions -2..h+1
    act = np.zeros(shape)
    for a in range(5):
        for b in range(5):
            act += lap[a:a + h, b:b + w]
    return act


def _filter_features(xp: np.ndarray, shape: tuple[int, int]) -> list[np.ndarray]:
    """x[p + d] + x[p - d] - 2 x[p] for every pair d of :data:`FILTER_PAIRS`."""
    h, w = shape
    r = FILTER_REACH
    x2 = 2.0 * xp[r:r + h, r:r + w]
    return [xp[r + dr:r + dr + h, r + dc:r + dc + w] + xp[r - dr:r - dr + h, r - dc:r - dc + w] - x2
            for dr, dc in FILTER_PAIRS]


@dataclass
class RestorationFilter:
    """Per class: ``edges`` (class k: activity in [edges[k-1], edges[k]), float32), ``taps``
    (classes x pairs, int16 in 1/4096), ``dc`` (int16 in 1/65536)."""

    edges: np.ndarray
    taps: np.ndarray
    dc: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        xp = _padded(x)
        cls = np.searchsorted(self.edges.astype(np.float64), _filter_activity(xp, x.shape), side="right")
        taps = self.taps.astype(np.float64) / _TAP_ONE
        out = x + (self.dc.astype(np.float64) / _DC_ONE)[cls]
        for j, f in enumerate(_filter_features(xp, x.shape)):
            out += taps[cls, j] * f
        return out

    def pack(self) -> bytes:
        return (_FILTER_HEAD.pack(len(self.taps), len(FILTER_PAIRS)) + self.edges.astype("<f4").tobytes()
                + self.taps.astype("<i2").tobytes() + self.dc.astype("<i2").tobytes())

    @classmethod
    def unpack(cls, blob: bytes, pos: int) -> tuple[RestorationFilter, int]:
        k, p = _FILTER_HEAD.unpack_from(blob, pos)
        if not 1 <= k <= 16 or p != len(FILTER_PAIRS):
            raise ValueError("bad restoration filter shape")
        pos += _FILTER_HEAD.size
        n = (k - 1) * 4 + k * p * 2 + k * 2
        if pos + n > len(blob):
            raise ValueError("restoration filter is truncated")
        edges = np.frombuffer(blob, "<f4", k - 1, pos).astype(np.float32)
        pos += 4 * (k - 1)
        taps = np.frombuffer(blob, "<i2", k * p, pos).reshape(k, p).astype(np.int16)
        pos += 2 * k * p
        dc = np.frombuffer(blob, "<i2", k, pos).astype(np.int16)
        if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) < 0):
            raise ValueError("bad restoration filter classes")
        return cls(edges, taps, dc), pos + 2 * k

    @property
    def nbytes(self) -> int:
        return len(self.pack())


def fit_filter(x: np.ndarray, t: np.ndarray, valid: np.ndarray, classes: int = FILTER_CLASSES
               ) -> RestorationFilter:
    """The least-squares :class:`RestorationFilter` taking the reconstruction ``x`` towards the
    original ``t`` over the ``valid`` pixels (weights quantised as the blob stores them)."""
    x = np.asarray(x, np.float64)
    xp = _padded(x)
    act = _filter_activity(xp, x.shape)
    feats = _filter_features(xp, x.shape)
    av = act[valid]
    edges = np.quantile(av, np.linspace(0, 1, classes + 1)[1:-1]).astype(np.float32) if av.size else \
        np.zeros(classes - 1, np.float32)
    edges = np.maximum.accumulate(edges)
    cls = np.searchsorted(edges.astype(np.float64), act, side="right")
    y = (np.asarray(t, np.float64) - x)[valid]
    a = np.stack([f[valid] for f in feats] + [np.ones(int(valid.sum()))], 1)
    cv = cls[valid]
    taps = np.zeros((classes, len(FILTER_PAIRS)), np.int16)
    dc = np.zeros(classes, np.int16)
    for k in range(classes):
        m = cv == k
        if m.sum() <= a.shape[1]:
            continue
        ak = a[m]
        g = ak.T @ ak
        c = np.linalg.solve(g + 1e-9 * np.trace(g) / len(g) * np.eye(len(g)), ak.T @ y[m])
        taps[k] = np.clip(np.round(c[:-1] * _TAP_ONE), -32767, 32767)
        dc[k] = np.clip(np.round(c[-1] * _DC_ONE), -32767, 32767)
    return RestorationFilter(edges, taps, dc)


def _with_filter(blob: bytes, lay: LayerData, t: np.ndarray, base: np.ndarray, valid: np.ndarray,
                 lo_db: float, hi_db: float, cost) -> tuple[bytes, LayerData]:
    """An MSE layer's blob and layer with a restoration filter where it pays (lower
    ``cost(error, extra bytes)``: make_layer's SSE + lambda * bits over the valid pixels), else as
    they are. Layout (flag 5): header, the filter, then the inner MSE layer blob (flag 3, 4, 6, 7, 8 or 9)
    to the end."""
    x = lay.unfiltered(base, lo_db, hi_db)
    filt = fit_filter(x, t, valid)
    if cost(x - t, 0) <= cost(filt.apply(x) - t, filt.nbytes + _HEAD.size):
        return blob, lay
    lay.filter = filt
    return _HEAD.pack(_MAGIC, 5, lay.step, 0.0, 0) + filt.pack() + blob, lay
