"""In-memory encode / decode of SAR rasters (NumPy arrays) through the .sarc container.

Both go through the scene engine (``scene.py``): tiles with a latent halo, so arrays of any size
are coded without seams and with bounded working memory per tile.
"""
from __future__ import annotations

import io
import numbers
import os
from typing import Any, Sequence

import numpy as np

from .checkpoint import DEFAULT_RADIOMETRY, load_model
from .container import ContainerReader, ContainerWriter, Header, with_header
from .entropy import STEP_ONE, step_from_delta
from .errors import InputError, ModelError, ModelMismatchError
from .layer import LayerSpec
from .models import SarCodec
from .models.refine import check_refine
from .parallel import check_workers
from .radiometry import Radiometry, check_array, check_kind, check_nodata, check_output_dtype
from .scene import (
    DEFAULT_TILE,
    ArraySource,
    check_lossless_dtype,
    check_precision,
    check_tile_size,
    coding_metadata,
    encode_container,
    fit_radiometry,
    new_header,
    resolve_window,
    window_decoder,
)


MAX_PIXELS = 4e9  # default size limit (bands x rows x cols): two polarisations of the largest GRD are ~0.9 GP


def clip_defaults(model: SarCodec, clip: tuple[float, float] | None) -> dict[str, Any]:
    """The radiometry defaults of ``model`` with the clip percentiles ``clip`` (low, high) if given."""
    d = dict(getattr(model, "radiometry_defaults", DEFAULT_RADIOMETRY))
    if clip is not None:
        try:
            lo, hi = (float(v) for v in clip)
        except (TypeError, ValueError) as e:
            raise InputError(f"clip must be two percentiles (low, high), got {clip!r}") from e
        if not 0.0 <= lo < hi <= 100.0:
            raise InputError(f"clip percentiles must satisfy 0 <= low < high <= 100, got {lo}, {hi}")
        d.update(low_pct=lo, high_pct=hi)
    return d


def model_info(model: SarCodec) -> dict[str, Any]:
    return {"id": getattr(model, "name", None) or "unnamed", "hash": model.weights_hash(),
            "arch": model.arch, "config": model.config}


def encode(
    array: np.ndarray,
    model: SarCodec | str,
    *,
    quality: float | None = None,
    step: float | None = None,
    max_error: float | None = None,
    psnr: float | None = None,
    bpp: float | None = None,
    **kwargs: Any,
) -> bytes:
    """Compress a (rows, cols) or (bands, rows, cols) SAR raster to .sarc bytes.

    ``kind`` says what the values are (intensity, amplitude, dn, db); each band gets its own clip
    bounds (percentiles fitted on its valid pixels) unless ``radiometry`` is given. Invalid pixels
    (NaN, inf, <= 0 for linear kinds, ``nodata``) are stored as a lossless mask. ``batch`` tiles
    go through the analysis transform together (default: 4 on a GPU, 1 on a CPU). ``refine`` > 0
    runs that many steps of encoder-side latent refinement per tile (slower encoding, smaller
    files at the same quality; decoding unchanged, see :mod:`sarcodec.models.refine`).
    ``workers`` processes entropy-code tiles in parallel (default: automatic, see
    :func:`sarcodec.parallel.auto_workers`; 0: none); the bytes are the same whatever the number.
    ``precision`` of the analysis transform, "fp32" or "bf16" (default: bf16 where the GPU or CPU
    has bf16 units, else fp32; :func:`sarcodec.scene.encoder_precision`): bf16 costs +0.04%
    BD-rate (measured) and decoding is unaffected and stays exact.

    Quality: ``quality`` is continuous, from 0 to N + 1 for a family of N rate points (``"default"``:
    0-5): an integer k is rate point k as trained, values between move the latent quantisation
    step Δ of the nearest rate point (:func:`quality_point`), 0 is the smallest file and N + 1
    the finest step of the last point. ``step`` sets Δ of one model directly (0.25-4).

    SAR fidelity (a pixel layer beside the learned one, :mod:`sarcodec.layer`):
    ``max_error`` (dB) bounds every valid pixel's dB error by construction (a dense residual;
    also the way to rates beyond the learned models'); ``outliers`` ("high", "both", "none")
    restores pixels beyond the clip range (bright targets) within 0.35 dB; ``bias`` makes every
    tile's mean linear intensity equal the original's; ``clip=(low_pct, high_pct)`` sets the
    percentiles of the coded range (default 0.1, 99.9). ``bound=False`` with ``max_error``: the
    dense layer keeps its step but reconstructs each bin at its centroid (minimum MSE: about
    +0.7 to +1 dB at the same size, measured on the validation locations; no per-pixel bound).
    The psnr / bpp searches use such layers.

    Targets (the encoder searches; bands share one model, the target is over all of them):
    ``psnr`` (dB, in the codec's clipped dB domain, the benchmark's) gives the smallest file that
    reaches it, ``bpp`` the highest PSNR within that many bits per pixel. Given a family name
    (``"default"``), the search runs over its continuous quality and, beyond it, over ``max_error``
    pixel layers on each rate point; ``max_error`` alone with a family name codes on the rate
    point that gives the smallest file. The container records the target and the PSNR reached.

    Other keyword arguments: ``kind``, ``nodata``, ``radiometry``, ``tile_size``,
    ``band_descriptions``, ``metadata``, ``batch``, ``refine``, ``workers``, ``precision``,
    ``outliers``, ``bias``, ``clip`` as described above, and ``lossless=True``: integer rasters
    (GRD DN) coded exactly by the pixel layer's integer coder alone (no learned layer; decoding
    needs no model).
    """
    if psnr is not None and bpp is not None:
        raise InputError("give a psnr target or a bpp target, not both")
    if (psnr is not None or bpp is not None) and max_error is not None:
        raise InputError("max_error is the search's own knob: give it or a psnr/bpp target, not both")
    if (psnr is not None or bpp is not None) and (quality is not None or step is not None):
        raise InputError("quality and step are the search's own knobs: give them or a psnr/bpp target, not both")
    if quality is not None and step is not None:
        raise InputError("give quality or step, not both")
    for name, v, lo, hi in (("psnr", psnr, 5.0, 120.0), ("bpp", bpp, 0.005, 64.0)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or not lo <= v <= hi):
            raise InputError(f"{name} target must be a number in [{lo}, {hi}], got {v!r}")
    psnr, bpp = (None if v is None else float(v) for v in (psnr, bpp))  # numpy scalars too (JSON metadata)
    if kwargs.get("lossless"):
        if psnr is not None or bpp is not None or max_error is not None or quality is not None or step is not None:
            raise InputError("lossless excludes quality, step, max_error, psnr and bpp")
        return _encode_one(array, family_members(model)[0], **kwargs)
    bases = family_members(model)
    if quality is not None or step is not None:
        (m, st), = coding_points(bases, quality, step)
        return _encode_one(array, m, step=st, max_error=max_error, **kwargs)
    if psnr is None and bpp is None:
        if max_error is None or len(bases) == 1:
            return _encode_one(array, bases[0], max_error=max_error, **kwargs)
        return min((_encode_one(array, m, max_error=max_error, **kwargs) for m in bases), key=len)
    kwargs.pop("bound", None)  # the search's layers minimise MSE (no per-pixel bound is asked for)
    memo = search_memo(int(np.asarray(array).size))
    return search_target(lambda m, st, e, stats: _encode_one(array, m, step=st, max_error=e, stats=stats, bound=False,
                                                             memo=memo, **kwargs),
                         bases, psnr=psnr, bpp=bpp, pixels=int(np.asarray(array).size))


def family_members(model: SarCodec | str | Sequence[SarCodec]) -> list[SarCodec]:
    """The rate points of a bundled family given by name (``"default"``: q1..qN, lowest rate first),
    or the model(s) given (a loaded model or a list of them, a ``-qN`` name or a path)."""
    from .checkpoint import bundled_manifest

    if isinstance(model, (list, tuple)):
        if not model:
            raise InputError("an empty list of models")
        return list(model)
    if not isinstance(model, str):
        return [model]
    models = bundled_manifest().get("models", {})
    aliases = bundled_manifest().get("aliases", {})
    base = aliases.get(model, model).rsplit("-q", 1)[0] if model in aliases else model
    qs = sorted((k for k in models if k.rsplit("-q", 1)[0] == base and k.rsplit("-q", 1)[-1].isdigit()),
                key=lambda k: int(k.rsplit("-q", 1)[1]))
    if model in aliases or model == base and qs:
        return [load_model(k) for k in qs] if qs else [load_model(model)]
    return [load_model(model)]


# Continuous quality over a family of N rate points (lowest rate first). Measured on the validation
# locations (mexico-b, spain-6860600, sar2sar-ramb; default-q1..q4): halving the quantisation step
# of rate point k costs about the bits of rate point k + 1 at unit step, with the same PSNR within
# +-0.3 dB (e.g. mexico-b VV: q1 at Δ 0.5, 0.450 bpp / 34.04 dB; q2 at Δ 1, 0.440 bpp / 33.79 dB).
# So one quality unit is a factor 2 in Δ: quality Q in [k - 1/2, k + 1/2) is rate point k at
# Δ = 2^(k - Q). Below 1 the first point's step grows three times as fast, to the coder's
# coarsest (Δ = 2^(3 (1 - Q)), 8 at Q = 0: 0.04-0.09 bpp on the validation images, single-look
# included; Δ 4 as the coarsest left a GRD test crop at 0.17 bpp); above N the last
# point's step shrinks to 0.5.
QUALITY_MIN = 0.0
_LOW_SLOPE = 3.0


def quality_point(bases: Sequence[SarCodec], quality: float) -> tuple[SarCodec, int]:
    """(model, latent step numerator) of a continuous ``quality`` in [0, N + 1] over ``bases``
    (N rate points, lowest rate first). Integers k in 1..N give rate point k at unit step."""
    import math

    n = len(bases)
    if isinstance(quality, bool) or not isinstance(quality, numbers.Real) or not math.isfinite(quality) \
            or not QUALITY_MIN <= quality <= n + 1:
        raise InputError(f"quality must be a number in [{QUALITY_MIN:g}, {n + 1}] for {n} rate point(s), got {quality!r}")
    q = float(quality)
    if q < 1.0:
        return bases[0], step_from_delta(2.0 ** (_LOW_SLOPE * (1.0 - q)))
    k = min(n, int(math.floor(q + 0.5)))
    return bases[k - 1], step_from_delta(2.0 ** (k - q))


def coding_points(bases: Sequence[SarCodec], quality: float | None, step: float | None
                  ) -> list[tuple[SarCodec, int]]:
    """The (model, latent step numerator) pairs an encode chooses from: the one of ``quality``
    over the family ``bases``, the one model at quantisation step ``step`` (a float Δ), or, with
    neither, every base at the unit step."""
    if quality is not None:
        return [quality_point(bases, quality)]
    if step is not None:
        if len(bases) != 1:
            raise InputError("step sets the quantisation step of one model; with a family use quality")
        return [(bases[0], step_from_delta(step))]
    return [(m, STEP_ONE) for m in bases]


# max_error ladder of the search's MSE pixel layers (dB), coarse to fine; finer steps are bisected.
# The coarse end (12 .. 4.5 dB, a step of 24 .. 9 dB) is for speckle the learned bases cannot carry
# (single-look): on a low quality it fills the range where the base alone saturates
ERROR_LADDER = (12.0, 8.0, 6.0, 4.5, 3.0, 2.0, 1.4, 1.0, 0.7, 0.5, 0.35, 0.25, 0.18, 0.12, 0.08, 0.05)
_BISECT = 4  # halvings of a bracket: quality to 1/16 of a unit, max_error to a factor ~1.1 or finer
_LADDER_START = ERROR_LADDER.index(3.0)  # where the first base's ladder walk starts


def layer_bases(n: int) -> list[float]:
    """The qualities a search puts MSE pixel layers on (a family of ``n`` rate points): every
    rate point, quality 0 and 0.5 below them, and N + 1 above. Which one codes a target smallest
    depends on the image: on single-look speckle a layer on quality 0-0.5 wins from ~0.8 bpp, on
    GRD the highest rate points, so the search tries them all."""
    return [QUALITY_MIN, 0.5] + [float(k) for k in range(1, n + 2)]


SEARCH_MEMO_PIXELS = 2**26  # rasters up to 64 MP keep what a search's trials share (~7 bytes/pixel)


def search_memo(pixels: int) -> dict | None:
    """A fresh memo for the trials of one target search (see :func:`sarcodec.scene.encode_tiles`),
    or None for rasters too large to keep their latents and base reconstructions in memory."""
    return {} if pixels <= SEARCH_MEMO_PIXELS else None


def search_target(encode_fn, bases: list[SarCodec], *, psnr: float | None, bpp: float | None,
                  pixels: int, on_trial=None) -> bytes:
    """Search (quality, max_error) for a PSNR or bpp target. ``encode_fn(model, step, max_error,
    stats) -> bytes`` encodes once and fills ``stats`` (squared error and count per band).

    Candidates: (1) the continuous quality alone (:func:`quality_point`, the default pixel layer):
    integer qualities upward until the target is crossed, then bisection; (2) MSE pixel layers
    (``max_error`` from :data:`ERROR_LADDER`, bisected geometrically at the crossing) on each of
    :func:`layer_bases` below the quality scan's crossing, from the crossing downward while a lower
    base does better, each walk starting where the previous base's crossed. The smallest file that
    meets a PSNR target, or the best PSNR that fits a bpp budget, wins. Returns its bytes, with the
    target, the quality (and max_error) used and the PSNR reached recorded in its metadata.
    ``on_trial()`` is called after each trial encode (progress)."""
    import math

    tried: list[tuple[float, int, bytes, dict[str, float]]] = []  # (psnr, bytes, data, knob)
    target = {"psnr": psnr} if psnr is not None else {"bpp": bpp}

    def run(m: SarCodec, st: int, e: float | None, knob: dict[str, float]) -> tuple[float, int, bytes, dict]:
        stats: dict[str, Any] = {}
        data = encode_fn(m, st, e, stats)
        sse, cnt = sum(stats.get("sse", [0.0])), sum(stats.get("count", [0]))
        p = math.inf if sse == 0 else 10 * math.log10(max(cnt, 1) / sse)
        # sized as it will be written: with the target's record (at most this long: "met" false)
        tried.append((p, len(_record_target(data, target, p, False, knob)), data, knob))
        if on_trial is not None:
            on_trial()
        return tried[-1]

    def at(q: float) -> tuple[float, int, bytes, dict]:
        m, st = quality_point(bases, q)
        return run(m, st, None, {"quality": round(q, 4)})

    def ok(t: tuple) -> bool:
        return t[0] >= psnr if psnr is not None else 8 * t[1] / pixels <= bpp

    # The knob is searched by safeguarded regula falsi: log(size) (bpp) or PSNR is close to linear
    # in the quality and in log(max_error), so interpolating the bracket's ends lands near the
    # crossing in one or two trials where halving took four; each step stays inside the middle
    # 70% of the bracket, and the search stops once the side that meets the target is within
    # 1% of the budget (0.02 dB of the PSNR), as close as a further trial could usefully get.
    goal = psnr if psnr is not None else math.log(bpp * pixels / 8)

    def score(t: tuple) -> float:
        return t[0] if psnr is not None else math.log(t[1])

    def close(t: tuple) -> bool:
        return ok(t) and (t[0] - psnr <= 0.02 if psnr is not None else 8 * t[1] / pixels >= 0.99 * bpp)

    def bisect(lo: float, hi: float, t_lo: tuple, t_hi: tuple, evaluate, to_u, from_u, lo_ok: bool) -> None:
        # t_lo = evaluate(lo) and t_hi = evaluate(hi) lie on either side of the target (``lo_ok``:
        # which side lo is on); to_u / from_u map the knob to the scale it is interpolated on
        u_lo, u_hi = to_u(lo), to_u(hi)
        for _ in range(_BISECT):
            if close(t_lo if lo_ok else t_hi):
                break
            s_lo, s_hi = score(t_lo), score(t_hi)
            f = (goal - s_lo) / (s_hi - s_lo) if math.isfinite(s_hi - s_lo) and s_hi != s_lo else 0.5
            u = u_lo + min(0.85, max(0.15, f)) * (u_hi - u_lo)
            t = evaluate(from_u(u))
            if ok(t) == lo_ok:
                u_lo, t_lo = u, t
            else:
                u_hi, t_hi = u, t

    n = len(bases)
    prev = prev_t = None
    cross = float(n + 1) + 1.0  # the quality where the base alone crosses the target
    for q in list(range(1, n + 2)):  # psnr: first that meets; bpp: first that does not fit
        t = at(float(q))
        if ok(t) == (psnr is not None):
            cross = float(q)
            if prev is None:  # the first rate point already crosses: look below it
                prev_t = at(QUALITY_MIN)
                if ok(prev_t) == (psnr is not None):
                    cross = QUALITY_MIN
                    break  # even the smallest quality crosses
                prev = QUALITY_MIN
            bisect(prev, float(q), prev_t, t, at, float, float, lo_ok=bpp is not None)
            break
        prev, prev_t = float(q), t

    def best(ts: list) -> tuple | None:  # the winner among ``ts`` (None: none meets the target)
        good = [t for t in ts if ok(t)]
        if not good:
            return None
        return min(good, key=lambda t: t[1]) if psnr is not None else max(good, key=lambda t: t[0])

    # MSE layers on the bases below the crossing (above it the base alone meets a PSNR target
    # with a smaller file; a bpp budget it does not fit at all)
    start = _LADDER_START
    prev_best = best(tried)  # the quality alone
    # downward from the crossing, while a lower base does better: the size that meets a PSNR (the
    # PSNR that fits a budget) is unimodal in the base (GRD: the base next to the crossing wins
    # or nothing does, one base tried; single-look: bases down to 0-1)
    for qb in sorted((q for q in layer_bases(n) if q < cross), reverse=True):
        first = len(tried)
        m, st = quality_point(bases, qb)

        def lay(e: float, m=m, st=st, qb=qb) -> tuple:
            return run(m, st, e, {"quality": qb, "max_error": round(e, 4)})

        # walk the ladder from ``start`` to where ``ok`` flips: psnr meets from some step finer,
        # a bpp budget fits up to some step finer
        i = start
        t_i = lay(ERROR_LADDER[i])
        going_coarser = ok(t_i) == (psnr is not None)
        while True:
            j = i - 1 if going_coarser else i + 1
            if not 0 <= j < len(ERROR_LADDER):
                j = None
                break
            t_j = lay(ERROR_LADDER[j])
            if ok(t_j) != ok(t_i):
                break
            i, t_i = j, t_j
        if j is None:  # the whole ladder is on one side of the target for this base
            start = i
        else:
            c, f = min(i, j), max(i, j)  # coarse and fine index of the crossing
            start = c if psnr is not None else f
            t_c, t_f = (t_i, t_j) if i == c else (t_j, t_i)
            bisect(ERROR_LADDER[c], ERROR_LADDER[f], t_c, t_f, lay, math.log, math.exp, lo_ok=ok(t_c))
        mine = best(tried[first:])
        if prev_best is not None and (mine is None or best([prev_best, mine]) is prev_best):
            break  # this base does worse than the one above it (or the quality alone)
        prev_best = mine if mine is not None else prev_best
    pick = best(tried)
    met = pick is not None
    if not met:  # closest: the best PSNR, or the smallest file
        pick = max(tried, key=lambda t: t[0]) if psnr is not None else min(tried, key=lambda t: t[1])
    return _record_target(pick[2], target, pick[0], met, pick[3])


def _record_target(data: bytes, target: dict[str, float], reached: float, met: bool,
                   knob: dict[str, float] | None = None) -> bytes:
    """The container ``data`` with the search's target and outcome (and the quality or max_error
    that reached it) in its metadata."""
    hdr = ContainerReader(data).header
    hdr.metadata["target"] = {**target, "psnr_reached": round(reached, 3), "met": met, **(knob or {})}
    return with_header(data, hdr)


def _encode_one(
    array: np.ndarray,
    model: SarCodec | str,
    *,
    kind: str = "intensity",
    nodata: float | None = None,
    radiometry: Radiometry | Sequence[Radiometry] | None = None,
    tile_size: int = DEFAULT_TILE,
    band_descriptions: Sequence[str | None] | None = None,
    metadata: dict[str, Any] | None = None,
    batch: int | None = None,
    refine: int = 0,
    workers: int | None = None,
    precision: str | None = None,
    max_error: float | None = None,
    outliers: str = "high",
    bias: bool = True,
    clip: tuple[float, float] | None = None,
    stats: dict[str, Any] | None = None,
    lossless: bool = False,
    max_pixels: float | None = MAX_PIXELS,
    step: int = STEP_ONE,
    bound: bool = True,
    memo: dict | None = None,
) -> bytes:
    """One encode with one model at latent step numerator ``step`` (see :func:`encode`); ``memo``:
    shared by a search's trials (:func:`search_memo`)."""
    check_kind(kind)
    check_workers(workers)
    check_precision(precision)
    arr = check_array(array)
    check_tile_size(tile_size)
    if isinstance(model, str):
        model = load_model(model)
    check_refine(model, refine)
    nodata = check_nodata(nodata)
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise InputError(f"batch must be a positive integer, got {batch!r}")
    metadata = check_metadata(metadata)
    check_size(int(arr.size), max_pixels)
    spec = LayerSpec(max_error, outliers, bias=bias, bound=bound)
    if lossless:  # (encode refuses lossless with max_error, psnr or bpp)
        check_lossless_dtype(arr.dtype)
    src = ArraySource(arr[None] if arr.ndim == 2 else arr)
    if radiometry is None:
        rads = fit_radiometry(src, kind, nodata, clip_defaults(model, clip))
    else:
        rads = [radiometry] * src.bands if isinstance(radiometry, Radiometry) else list(radiometry)
        if len(rads) != src.bands:
            raise InputError(f"{len(rads)} radiometry objects for {src.bands} bands")
    descs = list(band_descriptions) if band_descriptions is not None else [None] * src.bands
    if len(descs) != src.bands:
        raise InputError(f"{len(descs)} band descriptions for {src.bands} bands")
    step = coding_step(model, step, lossless)
    buf = io.BytesIO()
    header = new_header(model_info(model), src, rads, tile_size, descs, dict(metadata or {}))
    header.metadata.setdefault("ndim", arr.ndim)
    header.metadata.update(coding_metadata(model, step, spec, clip, lossless))
    writer = ContainerWriter(buf)
    encode_container(src, model, rads, writer, header, batch=batch, refine=refine, workers=workers,
                     precision=precision, layer=spec, stats=stats, memo=memo)
    return buf.getvalue()


def coding_step(model: SarCodec, step: int, lossless: bool = False) -> int:
    """``step`` checked against the model (before any work): a non-unit step needs a hyperprior
    latent codec; a lossless file has no learned layer (its step is the unit one)."""
    if lossless or step == STEP_ONE:
        return STEP_ONE
    model.coder(step)  # InputError for a step out of range, ModelError for a factorized model
    return step


def check_source(data: Any) -> bytes | bytearray | memoryview | str | os.PathLike:
    """A container given as bytes or a path to an existing file (InputError otherwise)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return data
    if isinstance(data, (str, os.PathLike)):
        if not os.path.isfile(data):
            raise InputError(f"{data}: file not found")
        return data
    raise InputError(f"decode takes .sarc bytes or a path, got {type(data).__name__}")


def check_window(window: Any) -> tuple[int, int, int, int]:
    """(col_off, row_off, width, height) as four integers (InputError otherwise)."""
    if not isinstance(window, (tuple, list)) or len(window) != 4 or \
            not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in window):
        raise InputError(f"window must be four integers (col_off, row_off, width, height), got {window!r}")
    return tuple(int(v) for v in window)  # type: ignore[return-value]


def check_metadata(metadata: Any) -> dict[str, Any]:
    """User metadata must be a JSON-serialisable mapping (it goes into the footer)."""
    import json

    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InputError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as e:
        raise InputError(f"metadata must be JSON-serialisable ({e})") from e
    return dict(metadata)


def check_size(pixels: int, max_pixels: float | None, name: str = "input") -> None:
    """Refuse rasters above ``max_pixels`` (bands x rows x cols) before hours of work start, with an
    estimate of the time they would take (0.5 MP/s, this CPU's whole-scene rate)."""
    if max_pixels is not None and pixels > max_pixels:
        raise InputError(f"{name}: {pixels / 1e6:.0f} MP is above the limit of {max_pixels / 1e6:.0f} MP "
                         f"(about {pixels / 0.5e6 / 3600:.1f} h at 0.5 MP/s on a CPU); raise it with "
                         "max_pixels= / --max-pixels if that is intended")


_DECODERS: dict[tuple[str, str | None, str | None], SarCodec] = {}  # bundled decoders named by headers


def _header_decoder(name: str, hash_: str | None, device: str | None) -> SarCodec:
    """The model a header names, loaded once per process (the last four kept): decoding many
    files (a batch, an xarray dataset) then pays the load and the weights hash once. Only this
    module holds these objects and it never changes them."""
    key = (name, hash_, None if device is None else str(device))
    if key not in _DECODERS:
        m = load_model(name, device)
        if m.weights_hash() != hash_:
            return m  # the caller reports the mismatch; nothing cached
        while len(_DECODERS) >= 4:
            _DECODERS.pop(next(iter(_DECODERS)))
        _DECODERS[key] = m
    return _DECODERS[key]


def resolve_decoder(header: Header, model: SarCodec | str | Sequence[SarCodec] | None,
                    device: str | None = None) -> SarCodec:
    """The model named by the header (loaded on ``device``, default cpu, when not given as a
    loaded model), checked against its weights hash; given several (a family's rate points), the
    one whose hash the header names. A lossless file needs none (None)."""
    if header.metadata.get("lossless"):
        return None
    want = header.model
    if isinstance(model, (list, tuple)):
        model = next((m for m in model if m.weights_hash() == want.get("hash")), model[0] if model else None)
    if model is None:
        try:
            model = _header_decoder(want.get("id", ""), want.get("hash"), device)
        except ModelError as e:
            raise ModelError(
                f"this file was encoded with model {want.get('id')!r} (hash {want.get('hash')}), which is not "
                f"bundled here: pass model=<checkpoint> ({e})") from e
    elif isinstance(model, str):
        model = load_model(model, device)
    if model.weights_hash() != want.get("hash"):
        raise ModelMismatchError(
            f"file was encoded with model {want.get('id')!r} (hash {want.get('hash')}); "
            f"the given model {getattr(model, 'name', '?')!r} has hash {model.weights_hash()}")
    return model


def decode(data: bytes | str, model: SarCodec | str | Sequence[SarCodec] | None = None, *, kind: str | None = None,
           dtype: np.dtype | str | None = None, normalized: bool = False,
           window: tuple[int, int, int, int] | None = None, workers: int | None = None) -> np.ndarray:
    """Decompress .sarc bytes (or a path). The model is found from the header unless given (a model,
    a checkpoint path, or a list of models such as a family's rate points: the one the file names).

    Returns the raster in the input's kind and dtype (override with ``kind``/``dtype``), invalid
    pixels set to nodata (NaN for floats without nodata). ``normalized=True`` returns the codec's
    [0, 1] reconstruction. ``window=(col_off, row_off, width, height)`` decodes only the tiles it
    touches (and their neighbours' latents); it equals the same window of a full decode.
    ``workers``: processes that entropy-decode tiles ahead (as in :func:`encode`).
    """
    if kind is not None:
        check_kind(kind)
    check_workers(workers)
    dtype = check_output_dtype(dtype)
    data = check_source(data)
    if window is not None:
        check_window(window)
    with ContainerReader(data) as reader:
        hdr = reader.header
        nb, rows, cols = hdr.shape
        c0, r0, w, h = resolve_window(window, rows, cols)
        with window_decoder(reader, resolve_decoder(hdr, model), r0, r0 + h, c0, c0 + w, workers) as dec:
            out = np.stack([dec.read_band(b, r0, r0 + h, c0, c0 + w, normalized=normalized, kind=kind, dtype=dtype)
                            for b in range(nb)])
        return out[0] if hdr.metadata.get("ndim", 3) == 2 else out
