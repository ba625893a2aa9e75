"""The restoration filter of an MSE layer (flag 5 around a flag 8 or 9 blob).

A Wiener filter the encoder fits to each tile (least squares against the original), like the
adaptive loop filter of VVC / the Wiener loop restoration of AV1: the reconstruction plus a
weighted sum of symmetric second differences over a diamond of radius 4 within 7 x 7 (18 pairs),
one set of weights per activity class (local |Laplacian| over 5 x 5, class edges the tile's
quartiles). It removes part of the quantisation noise a wavelet or pixel layer leaves where the
image is correlated (multi-looked GRD: +0.2-0.4 dB at 1-2 bpp on the validation crops); on white
single-look speckle it finds nothing and the encoder leaves it out. Pixels only: the filter never
feeds an entropy model, so the decoded integers stay exact on every machine.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from . import jit
from .coder import _HEAD, _MAGIC, LayerData

FILTER_PAIRS = tuple((dr, dc) for dr in range(4) for dc in range(-3, 4)
                     if (dr > 0 or dc > 0) and abs(dr) + abs(dc) <= 4)
_PAIRS = np.array(FILTER_PAIRS, np.int64)
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
        if jit.on():
            return jit.restore(xp, FILTER_REACH, _PAIRS, self.edges.astype(np.float64),
                               self.taps.astype(np.float64) / _TAP_ONE, self.dc.astype(np.float64) / _DC_ONE)
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

    reach = FILTER_REACH  # pixels around an output pixel the filter reads

    @property
    def nbytes(self) -> int:
        return len(self.pack())


def fit_filter(x: np.ndarray, t: np.ndarray, valid: np.ndarray, classes: int = FILTER_CLASSES
               ) -> RestorationFilter:
    """The least-squares :class:`RestorationFilter` taking the reconstruction ``x`` towards the
    original ``t`` over the ``valid`` pixels (weights quantised as the blob stores them)."""
    x = np.asarray(x, np.float64)
    xp = _padded(x)
    compiled = jit.on()
    act = jit.filter_activity(xp, FILTER_REACH) if compiled else _filter_activity(xp, x.shape)
    av = act[valid]
    edges = np.quantile(av, np.linspace(0, 1, classes + 1)[1:-1]).astype(np.float32) if av.size else \
        np.zeros(classes - 1, np.float32)
    edges = np.maximum.accumulate(edges)
    cls = np.searchsorted(edges.astype(np.float64), act, side="right")
    taps = np.zeros((classes, len(FILTER_PAIRS)), np.int16)
    dc = np.zeros(classes, np.int16)

    def solve(k: int, g: np.ndarray, gy: np.ndarray) -> None:
        c = np.linalg.solve(g + 1e-9 * np.trace(g) / len(g) * np.eye(len(g)), gy)
        taps[k] = np.clip(np.round(c[:-1] * _TAP_ONE), -32767, 32767)
        dc[k] = np.clip(np.round(c[-1] * _DC_ONE), -32767, 32767)

    if compiled:  # one pass accumulating each class's normal equations (~5x faster than gathers)
        y = np.asarray(t, np.float64) - x
        g, gy = jit.filter_normal(xp, FILTER_REACH, _PAIRS, cls, np.ascontiguousarray(valid, np.bool_), y, classes)
        counts = np.bincount(cls[valid], minlength=classes)
        for k in range(classes):
            if counts[k] > g.shape[1]:
                solve(k, g[k], gy[k])
        return RestorationFilter(edges, taps, dc)
    feats = _filter_features(xp, x.shape)
    # the valid pixels grouped by class, each class in raster order: one gather per feature
    # instead of a stacked matrix masked per class (the same rows, so the same sums)
    flat = np.flatnonzero(valid)
    cv = cls.reshape(-1)[flat]
    order = np.argsort(cv, kind="stable")
    idx = flat[order]
    a = np.empty((idx.size, len(feats) + 1))
    for j, f in enumerate(feats):
        a[:, j] = f.reshape(-1)[idx]
    a[:, -1] = 1.0
    y = (np.asarray(t, np.float64) - x).reshape(-1)[idx]
    bounds = np.searchsorted(cv[order], np.arange(classes + 1))
    for k in range(classes):
        lo, hi = bounds[k], bounds[k + 1]
        if hi - lo > a.shape[1]:
            ak = a[lo:hi]
            solve(k, ak.T @ ak, ak.T @ y[lo:hi])
    return RestorationFilter(edges, taps, dc)


def with_filter(blob: bytes, lay: LayerData, t: np.ndarray, base: np.ndarray, valid: np.ndarray,
                 lo_db: float, hi_db: float, cost) -> tuple[bytes, LayerData]:
    """An MSE layer's blob and layer with a restoration filter where it pays (lower
    ``cost(error, extra bytes)``: make_layer's SSE + lambda * bits over the valid pixels), else as
    they are. Layout (flag 5): header, the filter, then the inner MSE layer blob (flag 8 or 9)
    to the end."""
    x = lay.unfiltered(base, lo_db, hi_db)
    filt = fit_filter(x, t, valid)
    if cost(x - t, 0) <= cost(filt.apply(x) - t, filt.nbytes + _HEAD.size):
        return blob, lay
    lay.filter = filt
    return _HEAD.pack(_MAGIC, 5, lay.step, 0.0, 0) + filt.pack() + blob, lay
