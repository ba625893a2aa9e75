"""The pixel layer of a tile: what the learned base layer leaves, coded exactly.

A tile is layers. The base layer is the learned transform's latents; this package codes a second,
optional layer beside it, in the codec's normalised dB domain *without the clip*
(``t = (dB - lo) / (hi - lo)``, which may leave [0, 1] for bright targets)::

      original t ──────────────────────────┐
                                           ▼
      base x̂ (synthesis of ŷ) ──▶ r = t - x̂ ──▶ q = round(r / step) ──▶ context coder ──▶ bytes
                                                      │ (integers)
      decoder:  t̂ = x̂ + q · step  (+ bias shift)   ◀──┘

One form per job (the byte layout of each: ``docs/format.md``; the flag is byte 2 of a blob):

* flag 0, **bias shift** only: one number per tile (dB) that makes the tile's mean *linear*
  intensity equal the original's (MSE in dB reconstructs the geometric mean, which is biased low).
* flag 1, **residual integers** (:mod:`.coder`), for two uses told apart only by which residuals
  the encoder sends: *dense* (``max_error``: every valid pixel, step = 2 * max_error / (hi - lo),
  so every pixel's dB error is <= max_error by construction) and *sparse outliers* (only pixels
  outside the clip range, bright targets, get a non-zero ``q``; the zeros cost a small fraction of
  a bit). Either may carry the bias shift.
* flag 2, **lossless** integers (:mod:`.coder`, ``raw``): a whole integer image, no learned base.
* flag 9, an **MSE layer** (``bound=False``, what ``--psnr`` and ``--bpp`` use) in the pixel
  domain with **dependent (trellis-coded) quantisation** (:mod:`.dq`: two interleaved
  quantisers, an 8-state machine on the parity of each level, levels chosen by a Viterbi search;
  +0.3-0.6 dB over the scalar quantiser at 1-3 bpp).
* flag 8, an MSE layer in a **wavelet packet** basis (:mod:`.wavelet`): the residual through CDF
  9/7 lifting, any band split again by a tree the encoder picks per tile (rate-distortion best
  basis), each band a flag-9 blob. Where the base leaves spatially correlated residuals
  (multi-looked GRD at 1-2 bpp) the bands it already matches cost almost nothing; on white
  residuals (single-look) the pixel form stays cheaper. The encoder keeps the form with the lower
  ``SSE + lambda * bits`` per tile (:func:`make_layer`; where cheap estimates already tell the
  forms apart, only the better is coded).
* flag 5, a **restoration filter** (:mod:`.restoration`) around a flag 8 or 9 blob: a per-tile
  least-squares Wiener filter on the reconstructed pixels, kept where it lowers the same cost. It
  reads 3 pixels around each output pixel (:attr:`LayerData.reach`), so a decoder of a window
  widens it by that much within the tile.

Modules depend one way: :mod:`.coder` (the context coder, :class:`LayerData`) <- :mod:`.dq` <-
:mod:`.wavelet`; :mod:`.restoration` <- :mod:`.coder`; this module (what the encoder sends,
:func:`make_layer`, and the decoder's dispatch, :func:`decode_layer`) uses all of them.

**Determinism.** Every probability comes from exactly decoded integers: the ``q`` of neighbours
decoded in earlier passes, never from the float base pixels (which may differ by 1e-7 between
machines). Tables are built from a few integer parameters with integer arithmetic only.
"""
from __future__ import annotations

import numbers
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import CorruptedFileError, InputError
from . import coder, dq, jit, wavelet
from .coder import _HEAD, _MAGIC, LayerData, encode_layer
from .restoration import RestorationFilter, with_filter
from .wavelet import encode_packet_layer, rd_lambda

FORM_MARGIN = 0.1  # an MSE layer codes only the form whose estimated cost is this much lower


def decode_layer(blob: bytes, shape: tuple[int, int], where: str = "tile") -> LayerData:
    """Inverse of :func:`encode_layer` for a tile of ``shape``. A malformed blob raises
    :class:`CorruptedFileError` naming ``where``."""
    try:
        return _decode_blob(blob, shape)
    except (CorruptedFileError, struct.error, ValueError, IndexError, OverflowError, AssertionError, RuntimeError,
            TypeError) as e:
        raise CorruptedFileError(f"pixel layer of {where} is corrupted ({e})") from e


def _decode_blob(blob: bytes, shape: tuple[int, int]) -> LayerData:
    """:func:`decode_layer` without the error wrapping: the blob's flag (byte 2) says its form."""
    if len(blob) < _HEAD.size or blob[:2] != _MAGIC:
        raise ValueError("bad layer header")
    flag = blob[2]
    if flag in (0, 1, 2):
        return coder.decode_coded(blob, shape)
    if flag == dq.FLAG:
        return dq.decode_dq(blob, shape)
    if flag == 8:
        return wavelet.decode_packet(blob, shape)
    if flag == 5:
        _, _, step, bias_db, used = _HEAD.unpack_from(blob, 0)
        if bias_db or used:
            raise ValueError("a filtered layer carries no bias shift or classes")
        filt, pos = RestorationFilter.unpack(blob, _HEAD.size)
        inner = blob[pos:]
        if inner[:2] != _MAGIC or inner[2:3] not in (b"\x08", b"\x09"):
            raise ValueError("a restoration filter must wrap an MSE layer")
        lay = _decode_blob(inner, shape)
        lay.filter = filt
        return lay
    raise ValueError(f"unknown layer form {flag}")


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


def integer_output_step(values: np.ndarray, kind: str, max_error_db: float) -> float:
    """The largest dB step of a bound layer with which every integer in ``values`` (a tile's valid
    stored values, of ``kind``) still lies within ``max_error_db`` of itself once the decoder has
    rounded its reconstruction to an integer. Two ways a value v is safe: its reconstruction stays
    inside v's own rounding interval (v ± 1/2, then it comes back exactly: small DN, whose interval
    is wide in dB), or within max_error minus what rounding can add next to it (large DN). The
    step is twice the smallest of those allowances (at most 2 x max_error): halved at worst, for
    the values where the two meet (DN ~17 at 0.5 dB)."""
    from ..radiometry import to_intensity

    v = np.unique(np.asarray(values, np.float64))
    if kind != "db":
        v = v[v > 0]
    if v.size == 0:
        return 2.0 * max_error_db

    def db(x):
        if kind == "db":
            return x
        with np.errstate(divide="ignore", invalid="ignore"):
            return 10.0 * np.log10(to_intensity(x, kind))

    def lin(d):  # dB -> stored value
        if kind == "db":
            return d
        i = np.power(10.0, d / 10.0)
        return i if kind == "intensity" else np.sqrt(i)

    dv = db(v)
    below = np.where(v - 0.5 > 0, db(np.maximum(v - 0.5, 1e-300)), -np.inf) if kind != "db" else v - 0.5
    exact = np.minimum(db(v + 0.5) - dv, dv - below)  # stays in v's rounding interval
    x = lin(dv - max_error_db)  # the lowest reconstruction within the bound: rounding costs most there
    x_lo = np.where(x - 0.5 > 0, db(np.maximum(x - 0.5, 1e-300)), -np.inf) if kind != "db" else x - 0.5
    near = max_error_db - np.maximum(db(x + 0.5) - db(x), db(x) - x_lo)
    allow = np.maximum(exact, near) - 1e-4  # a margin for the float synthesis and float32 storage
    return float(min(2.0 * max_error_db, 2.0 * max(float(allow.min()), 1e-4)))


def make_layer(t: np.ndarray, base: np.ndarray, mask: np.ndarray | None, spec: LayerSpec,
               lo_db: float, hi_db: float, integer: tuple[np.ndarray, str] | None = None) -> tuple[bytes, LayerData]:
    """The encoder's side: the layer blob of one tile from the original ``t`` (normalised,
    unclipped), the base reconstruction ``base`` and the invalid-pixel ``mask``, and the layer as
    a decoder will read it (step and bias at the float32 precision the blob stores), so that the
    encoder knows the reconstruction without decoding its own blob. ``integer``: (the tile's valid
    stored values, their kind) when the decoder will round to integers: a bound layer then takes
    the step of :func:`integer_output_step`, so that the bound holds after the rounding too."""
    span = hi_db - lo_db
    t = np.asarray(t, np.float64)
    base = np.asarray(base, np.float64)
    valid = np.ones(t.shape, bool) if mask is None else ~mask
    r = np.where(valid, t - base, 0.0)
    if spec.max_error_db is not None:
        step = 2.0 * spec.max_error_db / span
        if integer is not None and spec.bound:
            step = min(step, integer_output_step(integer[0], integer[1], spec.max_error_db) / span)
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
        step = float(np.float32(step))
        lam = rd_lambda(step)
        cost = lambda e, n: float(np.sum(np.where(valid, e, 0.0) ** 2)) + lam * 8 * n  # noqa: E731
        # both forms are coded and the cheaper kept, unless the estimates (the scalar quantiser's
        # cost, as the best basis weighs bands) tell them apart by more than FORM_MARGIN: on 234
        # validation tiles (4 locations, 3 bases, max_error 0.3-5 dB) no such call was wrong, and
        # it spares ~17% of the forms' coding time
        tree, w_est = wavelet.best_basis(r, step)
        p_est = wavelet.proxy_cost(r, step, 1.0, lam)
        pixel, packet = w_est >= (1 - FORM_MARGIN) * p_est, w_est <= (1 + FORM_MARGIN) * p_est
        blob, lay = dq.encode_dq(r, step) if pixel else (b"", None)
        if not blob:
            lay = LayerData(None, step, 0.0)
        if packet:
            wblob, res = encode_packet_layer(r, step, tree)
            if not pixel or cost(r - res, len(wblob)) < cost(r - (lay.values() if blob else 0.0), len(blob)):
                blob, lay = wblob, LayerData(None, step, 0.0, residual=res)
        if not blob:
            return blob, lay
        return with_filter(blob, lay, t, base, valid, lo_db, hi_db, cost)
    blob = encode_layer(q, step, bias)
    lay = LayerData(q if q.any() else None, float(np.float32(step)), float(np.float32(bias)) if blob else 0.0)
    return blob, lay


def estimate_layer(t: np.ndarray, base: np.ndarray, mask: np.ndarray | None, max_error_db: float,
                   lo_db: float, hi_db: float) -> tuple[float, float]:
    """About what an MSE layer (``bound=False``) of ``max_error_db`` costs and leaves on one tile,
    without coding it (~0.1 s per MP): (bits, squared error) of the scalar quantiser, the bits as
    the context model estimates them for its levels (:func:`dq.estimate_scalar_bits`), the
    error over the valid pixels in the [0, 1] domain (both sides clipped, as an encode measures
    it). Not the layer's own figures (the trellis, the wavelet packet and the filter do better:
    on the validation locations the coded layer is 0.5-0.75 of the bits, the ratio moving with
    ``max_error`` and the image) but they follow the content: the ratio of two rasters'
    estimates at the same ``max_error`` and base predicts the ratio of their layers' (what a
    rate or PSNR target's search uses to carry a sample's outcome to the whole raster)."""
    valid = np.ones(t.shape, bool) if mask is None else ~mask
    step = 2.0 * max_error_db / (hi_db - lo_db)
    t = np.asarray(t, np.float64)
    q = np.rint(np.where(valid, t - base, 0.0) / step).astype(np.int64)
    d = np.clip(base + q * step, 0.0, 1.0)[valid] - np.clip(t[valid], 0.0, 1.0)
    return (dq.estimate_scalar_bits(q)[0] if q.any() else 0.0), float(np.dot(d, d))


_warm = False


def warm_kernels() -> None:
    """Load the compiled layer kernels (:mod:`.jit`) in this process by coding and decoding a
    small layer of each kind: numba compiles (or loads from its cache) a kernel at its first call,
    ~1 s for a fresh process (the import ~0.7 s). A pool of worker processes forked after this
    starts with them loaded; without it each worker of each encode paid that second again
    (measured: a --bpp search's ~19 encodes on 2 workers spent ~1/3 of their time there). A no-op
    when the kernels are off or already warm."""
    global _warm
    if _warm or not jit.on():
        return
    rng = np.random.default_rng(0)
    t = np.clip(0.5 + rng.laplace(0, 0.05, (64, 64)), 0.0, 1.0)
    base = np.clip(t + rng.normal(0, 0.02, t.shape), 0.0, 1.0)
    for spec in (LayerSpec(1.0, bound=False), LayerSpec(1.0)):  # an MSE (DQ, filtered) and a bound layer
        blob, _ = make_layer(t, base, None, spec, -25.0, 5.0)
        if blob:
            decode_layer(blob, t.shape).apply(base, -25.0, 5.0)
    dq.decode_dq(dq.encode_dq(t - base, 0.01)[0], t.shape)
    _warm = True
