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
    ``workers`` processes entropy-code tiles and code their pixel layers in parallel (default:
    automatic, see :func:`sarcodec.parallel.auto_workers`: for latents none on a CPU, for pixel
    layers one per core; 0: none); the bytes are the same whatever the number.
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
    arr = check_array(array)
    memo = search_memo(int(arr.size))
    full = arr[None] if arr.ndim == 2 else arr
    mosaic = read_sample(lambda b, r0, r1, c0, c1: full[b, r0:r1, c0:c1], *full.shape)
    sample = None
    if mosaic is not None:
        # the sample is coded with the whole raster's clip bounds (its own would differ)
        skw = dict(kwargs)
        if skw.get("radiometry") is None:
            skw["radiometry"] = fit_radiometry(ArraySource(full), check_kind(skw.get("kind", "intensity")),
                                               check_nodata(skw.get("nodata")), clip_defaults(bases[0], skw.get("clip")))
        smemo: dict = {}
        sample = (lambda m, st, e, stats: _encode_one(mosaic if arr.ndim == 3 else mosaic[0], m, step=st, max_error=e,
                                                      stats=stats, bound=False, memo=smemo, **skw), int(mosaic.size))
    return search_target(lambda m, st, e, stats: _encode_one(arr, m, step=st, max_error=e, stats=stats, bound=False,
                                                             memo=memo, **kwargs),
                         bases, psnr=psnr, bpp=bpp, pixels=int(arr.size), sample=sample)


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
_BISECT = 4  # refining trials of a search's winning line (beyond the one its bracket gives)
SEARCH_TRIALS = 12  # trial encodes a --psnr / --bpp search typically makes (8-22 on the validation crops)


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


# A search on a large raster runs on a sample of it: SAMPLE_BLOCKS blocks of SAMPLE_BLOCK^2 pixels
# per band, one from each cell of a grid over the raster, side by side in a mosaic of two rows
# (512 x 2048 for 16 blocks: two tiles or more, whose pixel layers code on two cores at once; as one
# 1024^2 tile the same trials took 1.5-1.7x as long for the same bytes within 0.3%); the knob found
# there is then applied to the whole raster and corrected along the sample's slope (one encode of
# the whole, two or three where the sample misjudged it).
SAMPLE_BLOCK = 256
SAMPLE_BLOCKS = 16
SAMPLE_FROM = 3 * SAMPLE_BLOCKS * SAMPLE_BLOCK ** 2  # pixels per band from which a search samples (~3 MP)
_WHOLE_TRIALS = 3  # encodes of the whole raster after a sampled search, at most
CARRY_MARGIN = 0.0025  # a budget carried to the whole is aimed this much under (see carried_step)
# A bracket narrower than JUMP_WIDTH (knob units: quality, log max_error) is not bisected further
# once neither end could reach the aim even at JUMP_SLOPES times the line's slope across it: the
# aim then lies in a jump of the outcome (the size of a 512^2 crop can step 5% between max_error
# 1.1725 and 1.1736 where a tile's layer changes form). Wider brackets are always bisected: a
# slope taken where a layer codes almost nothing can be 10x too flat, so the test takes at least the
# typical slope (Search.typical_slope).
JUMP_WIDTH = 0.05
JUMP_SLOPES = 2.0
# The quality line changes rate point at each half-integer (quality_point): there the outcome
# jumps (a 4096^2 scene at 1 bpp: 0.926 bpp at the finest step of rate point 3, 1.13 at the
# coarsest of 4). A bracket across such a switch tries its two sides first (SWITCH_SIDE below it,
# then the switch itself): either the bracket then lies within one rate point, or it is the jump
# itself, which the jump test ends; bisecting towards it took one to three trials more.
SWITCH_SIDE = 1e-3


def sample_blocks(rows: int, cols: int) -> list[tuple[int, int]] | None:
    """The top-left corners of the blocks a search samples a (rows, cols) raster with, row by row
    of a grid of about :data:`SAMPLE_BLOCKS` cells shaped like the raster (each block at its cell's
    centre); None for a raster too small to sample (searched whole)."""
    import math

    b = SAMPLE_BLOCK
    if rows * cols < SAMPLE_FROM or rows < b or cols < b:
        return None
    gy = max(1, min(SAMPLE_BLOCKS, rows // b, round(math.sqrt(SAMPLE_BLOCKS * rows / cols))))
    gx = max(1, min(cols // b, -(-SAMPLE_BLOCKS // gy)))
    if gy * gx % 2 and gy * gx > 1:  # an even count fills the mosaic's two rows
        gy, gx = (gy - 1, gx) if gy > 1 else (gy, gx - 1)
    return [(round((i + 0.5) * rows / gy - b / 2), round((j + 0.5) * cols / gx - b / 2))
            for i in range(gy) for j in range(gx)]


def read_sample(read, bands: int, rows: int, cols: int) -> np.ndarray | None:
    """The mosaic (bands, 2 B, n / 2 B) of the n blocks of :func:`sample_blocks` (one row for a
    single block) read through ``read(band, r0, r1, c0, c1)``, blocks in their grid order, row
    by row; None when the raster is searched whole."""
    corners = sample_blocks(rows, cols)
    if corners is None:
        return None
    b = SAMPLE_BLOCK
    gy = 2 if len(corners) % 2 == 0 else 1
    gx = len(corners) // gy
    out = None
    for k, (r, c) in enumerate(corners):
        for band in range(bands):
            blk = np.asarray(read(band, r, r + b, c, c + b))
            if out is None:
                out = np.empty((bands, gy * b, gx * b), blk.dtype)
            i, j = divmod(k, gx)
            out[band, i * b:(i + 1) * b, j * b:(j + 1) * b] = blk
    return out


# What a search costs on 2 CPU cores, measured (512^2 validation crops: 8-15 trials, 3.2-5.4 s; a
# 4096^2 scene at `default --bpp 1`: ~43 s): a raster searched whole runs ~8-15 trial encodes,
# ~0.06 MP/s in all; a sampled one ~15 trials of the 1 MP sample per band (~16 s), then the
# whole's base and its layer, each coded about once (~0.6 MP/s for the two; a raster too large
# for the search's memo codes base and layer together, 2-3 times).
_WHOLE_SEARCH_MPS, _SAMPLE_SEARCH_S, _ONE_PASS_MPS = 0.06e6, 16.0, 0.6e6


def search_seconds(bands: int, rows: int, cols: int) -> float:
    """About how long a --psnr / --bpp search of a (bands, rows, cols) raster takes on 2 CPU cores."""
    if sample_blocks(rows, cols) is None:
        return bands * rows * cols / _WHOLE_SEARCH_MPS
    pixels = bands * rows * cols
    return bands * _SAMPLE_SEARCH_S + (1.0 if search_memo(pixels) is not None else 2.5) * pixels / _ONE_PASS_MPS


def search_target(encode_fn, bases: list[SarCodec], *, psnr: float | None, bpp: float | None,
                  pixels: int, on_trial=None, sample: tuple | None = None) -> bytes:
    """Search (quality, max_error) for a PSNR or bpp target. ``encode_fn(model, step, max_error,
    stats) -> bytes`` encodes once and fills ``stats`` (squared error and count per band).

    Candidates, each a line along one knob: (1) the continuous quality alone
    (:func:`quality_point`, the default pixel layer); (2) an MSE pixel layer (its ``max_error``,
    on a log scale) on the base of :func:`layer_bases` next below where the quality alone crosses
    the target and, where that one beats the quality alone, on the lowest base, then inward from
    the better of the two while the next base does better. Each line is followed
    by secant steps (regula falsi once the target is bracketed) only until its outcome *at* the
    target (the PSNR a bpp budget buys, the size a PSNR costs) can be interpolated between
    trials near it; only the best line is then refined until a trial meets the target within 1%
    of the budget (0.02 dB of the PSNR; the whole raster after a sampled search within 3%, 0.06 dB). A base below another starts where the one above crossed,
    with its slope, so that one or two trials place it. The smallest file that meets a PSNR
    target, or the best PSNR that fits a bpp budget, wins. Returns its bytes, with the target,
    the quality (and max_error) used and the PSNR reached recorded in its metadata.

    ``sample=(sample_fn, sample_pixels)``: the search runs on a sample of the raster
    (:func:`read_sample`, ``sample_fn`` encodes it as ``encode_fn`` the whole); the winning knob
    then codes the whole raster, corrected along the winning line's slope until the whole file
    meets the target closely (at most :data:`_WHOLE_TRIALS` encodes of the whole). A target won
    by a layer is first carried to the whole through the layer's estimated bits or error on
    both (``carried_step``): the whole's base is coded once, then its layer, usually once.
    ``on_trial(fraction)`` is called after each trial encode with the part of the work it was
    (about: a search's length is not known up front)."""
    import math

    target = {"psnr": psnr} if psnr is not None else {"bpp": bpp}
    psnr_goal = psnr is not None
    n = len(bases)

    class Search:
        """The trials of one raster (the whole or its sample) and the tests on them."""

        def __init__(self, fn, pix: int, share: float, slack: float = 0.01):
            # slack: how far inside the target a trial may land and be close to it (that part of
            # the budget; twice as many dB above a PSNR); secant steps aim at the middle of it
            self.fn, self.pix, self.share, self.slack = fn, pix, share, slack
            self.tried: list[tuple[float, int, bytes, dict[str, float]]] = []  # (psnr, bytes, data, knob)
            self.line_of: dict[int, Line] = {}  # id(trial) -> its line
            # a trial's score is what the target is on (PSNR, or log size for a budget), its gain
            # what the search maximises at the target (PSNR within a budget, -log size at a PSNR)
            self.goal = psnr if psnr_goal else math.log(bpp * pix / 8)
            self.aim = self.goal + slack if psnr_goal else self.goal + math.log(1 - slack / 2)
            self.near = 0.3 if psnr_goal else 0.06  # dB, or log size (6%): close enough to interpolate

        def run(self, m: SarCodec, st: int, e: float | None, knob: dict[str, float]) -> tuple:
            stats: dict[str, Any] = {}
            data = self.fn(m, st, e, stats)
            sse, cnt = sum(stats.get("sse", [0.0])), sum(stats.get("count", [0]))
            p = math.inf if sse == 0 else 10 * math.log10(max(cnt, 1) / sse)
            # sized as it will be written: with the target's record (at most this long: "met" false)
            self.tried.append((p, len(_record_target(data, target, p, False, knob)), data, knob))
            if on_trial is not None:
                on_trial(self.share)
            return self.tried[-1]

        def score(self, t: tuple) -> float:
            return t[0] if psnr_goal else math.log(t[1])

        def gain(self, t: tuple) -> float:
            return -math.log(t[1]) if psnr_goal else t[0]

        def ok(self, t: tuple) -> bool:
            return t[0] >= psnr if psnr_goal else 8 * t[1] / self.pix <= bpp

        def close(self, t: tuple) -> bool:
            return self.ok(t) and (t[0] - psnr <= 2 * self.slack if psnr_goal
                                   else 8 * t[1] / self.pix >= (1 - self.slack) * bpp)

        def pick(self) -> tuple[tuple, bool]:
            """The winner (the smallest file that meets a PSNR, the best PSNR within a budget) and
            whether it meets the target; else the closest (the best PSNR, the smallest file)."""
            good = [t for t in self.tried if self.ok(t)]
            if good:
                return (min(good, key=lambda t: t[1]) if psnr_goal else max(good, key=lambda t: t[0])), True
            return (max(self.tried, key=lambda t: t[0]) if psnr_goal else min(self.tried, key=lambda t: t[1])), False

        def quality_line(self) -> Line:
            def at(q: float) -> tuple:
                m, st = quality_point(bases, q)
                return self.run(m, st, None, {"quality": round(q, 4)})

            typical = self.typical_slope(False)
            return Line(self, at, QUALITY_MIN, float(n + 1), typical, 1.5, typical,
                        switches=[k + 0.5 for k in range(1, n)])

        def typical_slope(self, layer: bool) -> float:
            """d score / d knob as measured on the validation crops: per quality unit, or per unit
            of log max_error along a pixel layer."""
            return (-8.5 if psnr_goal else -0.9) if layer else (3.0 if psnr_goal else 0.55)

        def layer_line(self, qb: float, slope: float, reach: float = 1.0) -> Line:
            m, st = quality_point(bases, qb)

            def at(u: float) -> tuple:
                e = math.exp(u)
                return self.run(m, st, e, {"quality": qb, "max_error": round(e, 4)})

            return Line(self, at, math.log(ERROR_LADDER[-1]), math.log(ERROR_LADDER[0]), slope, reach,
                        self.typical_slope(True))

    class Line:
        """One candidate along knob ``u`` in [lo, hi] of a :class:`Search`; ``slope``: the prior
        d score / d u; ``reach``: the longest secant step; ``typical``: a slope the line surely
        reaches where it codes (:meth:`Search.typical_slope`, for the jump test); ``switches``:
        knob values where the outcome jumps (see :data:`SWITCH_SIDE`)."""

        def __init__(self, s: Search, evaluate, lo: float, hi: float, slope: float, reach: float, typical: float,
                     switches: Sequence[float] = ()):
            self.s, self.evaluate, self.lo, self.hi, self.slope, self.reach = s, evaluate, lo, hi, slope, reach
            self.typical, self.switches = typical, tuple(switches)
            self.pts: list[tuple[float, tuple]] = []

        def at(self, u: float) -> None:
            u = min(self.hi, max(self.lo, u))
            if all(abs(v - u) > 1e-9 for v, _ in self.pts):
                t = self.evaluate(u)
                self.pts.append((u, t))
                self.s.line_of[id(t)] = self

        def pair(self) -> list[tuple[float, tuple]]:
            """The trials to interpolate between: the nearest to the goal on either side of it
            when the goal is bracketed, else the two nearest."""
            s = self.s
            fin = sorted((p for p in self.pts if math.isfinite(s.score(p[1]))), key=lambda p: abs(s.score(p[1]) - s.goal))
            meet = [p for p in fin if s.ok(p[1])]
            miss = [p for p in fin if not s.ok(p[1])]
            return [meet[0], miss[0]] if meet and miss else fin[:2]

        def bracketed(self) -> bool:
            return any(self.s.ok(t) for _, t in self.pts) and not all(self.s.ok(t) for _, t in self.pts)

        def fitted_slope(self) -> float:
            pr = self.pair()
            if len(pr) == 2 and pr[0][0] != pr[1][0]:
                d = (self.s.score(pr[1][1]) - self.s.score(pr[0][1])) / (pr[1][0] - pr[0][0])
                if math.isfinite(d) and d * self.slope > 0:  # a noisy pair pointing the wrong way: the prior
                    return d
            return self.slope

        def next_u(self) -> float | None:
            """Where to try next: regula falsi inside the bracket (each step within its middle
            70%), else a secant step (at most ``reach``; the whole of it where the score hardly
            moves, as an MSE layer coarser than the base's own error, which codes nothing); None
            when the domain is exhausted."""
            s, pr = self.s, self.pair()
            if not pr:
                return None
            (ua, ta) = pr[0]
            if self.bracketed():
                (ub, tb) = pr[1]
                if abs(ub - ua) < JUMP_WIDTH and min(abs(s.aim - s.score(ta)), abs(s.aim - s.score(tb))) > \
                        JUMP_SLOPES * max(abs(self.slope), abs(self.typical)) * abs(ub - ua):
                    return None  # the aim lies in a jump inside the bracket: no knob value lands near it
                f = (s.aim - s.score(ta)) / (s.score(tb) - s.score(ta))
                u = ua + min(0.85, max(0.15, f)) * (ub - ua)
                lo, hi = min(ua, ub), max(ua, ub)
                inside = [h for h in self.switches if lo < h <= hi]
                if inside:  # the switch nearest the regula falsi step: its sides first
                    h = min(inside, key=lambda v: abs(v - u))
                    sides = [v for v in (h - SWITCH_SIDE, h) if lo + 1e-9 < v < hi - 1e-9]
                    if sides:
                        return sides[0]
                return u
            d = self.fitted_slope()
            move = (s.aim - s.score(ta)) / d if abs(d) > 0.25 * abs(self.slope) else math.copysign(
                self.reach, (s.aim - s.score(ta)) * self.slope)
            u = min(self.hi, max(self.lo, ua + max(-self.reach, min(self.reach, move))))
            return None if any(abs(v - u) < 1e-9 for v, _ in self.pts) else u

        def predict(self, gain_slope: float | None = None, wide: bool = False) -> float | None:
            """The gain at the goal, interpolated (or extrapolated a little) from :meth:`pair`;
            from one trial with ``gain_slope`` (d gain / d score of a neighbouring line). None
            while no trial is near enough (``wide``: any bracket will do)."""
            s, pr = self.s, self.pair()
            if not pr or abs(s.score(pr[0][1]) - s.goal) > s.near and not (wide and self.bracketed()):
                return None
            (_, ta) = pr[0]
            if len(pr) == 2 and s.score(pr[1][1]) != s.score(ta):
                tb = pr[1][1]
                return s.gain(ta) + (s.goal - s.score(ta)) * (s.gain(tb) - s.gain(ta)) / (s.score(tb) - s.score(ta))
            return None if gain_slope is None else s.gain(ta) + (s.goal - s.score(ta)) * gain_slope

        def gain_slope(self) -> float | None:
            s, pr = self.s, self.pair()
            if len(pr) == 2 and s.score(pr[1][1]) != s.score(pr[0][1]):
                return (s.gain(pr[1][1]) - s.gain(pr[0][1])) / (s.score(pr[1][1]) - s.score(pr[0][1]))
            return None

        def crossing(self) -> float | None:
            """The knob at the goal, from the trial nearest it along :meth:`fitted_slope`
            (within the domain; None before any trial)."""
            pr = self.pair()
            if not pr:
                return None
            (ua, ta) = pr[0]
            return min(self.hi, max(self.lo, ua + (self.s.aim - self.s.score(ta)) / self.fitted_slope()))

        def settle(self, u0: float, prior: float | None = None, refine: bool = False, budget: int = 6) -> None:
            """Trials from ``u0`` until the gain at the goal can be predicted (``refine``: until
            a trial is close to the goal), at most ``budget`` more of them."""
            if not self.pts:
                self.at(u0)
            for _ in range(budget):
                if any(self.s.close(t) for _, t in self.pts) or not refine and self.predict(prior) is not None:
                    return
                u = self.next_u()
                if u is None:
                    return
                self.at(u)

    def search(s: Search) -> tuple[Line, tuple]:
        """The candidates of ``s`` (see above); returns the winner's line and trial."""
        # (1) the quality alone; where it crosses the target bounds the bases worth a layer
        qline = s.quality_line()
        qline.settle(min(2.0, float(n)))
        below = all(s.ok(t) for _, t in qline.pts) != psnr_goal  # every quality tried is below the target
        ends = [u for u, _ in qline.pts]
        if not qline.bracketed() and (max(ends) == qline.hi if below else min(ends) == qline.lo):
            cross = float(n + 2) if below else QUALITY_MIN  # the whole quality range on one side
        else:
            cross = qline.crossing() if qline.crossing() is not None else QUALITY_MIN
        lines = [(qline.predict(), qline)]
        aim = psnr if psnr_goal else lines[0][0] if lines[0][0] is not None else qline.pair()[0][1][0]
        # (2) MSE layers on bases below the crossing (above it the base alone meets a PSNR target
        # with a smaller file; a bpp budget it does not fit at all): the base next to the
        # crossing, and where it beats the quality alone the lowest base, then inward from the
        # better of the two while a base does better. The outcome at the target is about unimodal
        # in the base, its best at either end or (GRD at 1.5-3 bpp) between; a walk down from the
        # crossing alone often stops a base too early on noise

        def layer_on(qb: float, prev: Line | None) -> tuple[float | None, Line]:
            line = s.layer_line(qb, prev.fitted_slope() if prev else s.typical_slope(True))
            # an MSE layer's step sets the PSNR it reaches: error ~ step / sqrt(12) where it codes,
            # so max_error ~ 55 x the RMS error aimed at (normalised; 50-80 measured on the
            # validation locations at 0.5-1.5 bpp); on another base the max_error that crossed
            # barely moves
            start = prev.crossing() if prev is not None else math.log(min(ERROR_LADDER[0], max(
                ERROR_LADDER[-1], 55.0 * 10 ** (-aim / 20))))
            prior = prev.gain_slope() if prev is not None else None
            line.settle(start, prior, budget=3)  # a line that will not settle (a jump in size) is
            g = line.predict(prior, wide=True)   # judged on its bracket
            lines.append((g, line))
            return g, line

        def better(a: float | None, b: float | None) -> bool:
            return a is not None and (b is None or a > b)

        below_cross = sorted((q for q in layer_bases(n) if q < cross), reverse=True)
        if below_cross:
            g_top, top = layer_on(below_cross[0], None)
            if len(below_cross) > 1 and (lines[0][0] is None or better(g_top, lines[0][0])):
                g_bot, bot = layer_on(below_cross[-1], top)
                # inward from the better end, while the next base does better
                inner = below_cross[-2:0:-1] if better(g_bot, g_top) else below_cross[1:-1]
                g, prev = (g_bot, bot) if better(g_bot, g_top) else (g_top, top)
                for qb in inner:
                    g_next, line = layer_on(qb, prev)
                    if not better(g_next, g):
                        break
                    g, prev = g_next, line
        # (3) the best line refined until a trial meets the target closely
        ranked = [(g, ln) for g, ln in lines if g is not None]
        # (a sample's winner too: carried to the whole from an unrefined trial 5% off the budget,
        # along a slope measured further out, a 4096^2 scene's layer lands 3.5% under and takes a
        # second encode of the whole, ~14 s, where two more trials of the sample take ~2 s)
        if ranked:
            max(ranked, key=lambda x: x[0])[1].settle(0.0, refine=True, budget=_BISECT + 1)
        t = s.pick()[0]
        return s.line_of[id(t)], t

    def carried_step(won: Line, trial: tuple, s: Search, sample_fn, whole_fn) -> float:
        """How far (log max_error) the whole raster's layer should move from the sample's
        winning ``trial`` to meet the target: the whole's base is coded first (its size is then
        known exactly, and the layer encodes after it reuse it through the memo), both bases
        give the layer's estimated bits and error at the trial's max_error
        (:func:`sarcodec.layer.estimate_layer`), and the sample's coded layer (its size, or the
        error it left), scaled by their ratio, predicts the whole's; the step then moves along
        the sample's slope. The mosaic's seams between unrelated blocks cost a layer bits the
        whole does not spend (uncarried, a 2048^2 scene's first whole encode lands 4-8% under the
        budget, and a second one corrects it); its estimate sees the seams too. 0.0 where there
        is nothing to carry."""
        knob = trial[3]
        m, st = quality_point(bases, knob["quality"])
        e0 = knob["max_error"]
        ws: dict[str, Any] = {"estimate_at": [e0]}
        ss: dict[str, Any] = {"estimate_at": [e0]}
        base_w = len(whole_fn(m, st, None, ws))
        base_s = len(sample_fn(m, st, None, ss))
        slope = won.fitted_slope()
        if psnr_goal:  # the error the whole's layer leaves, as the sample's scaled by the estimates
            mse_w, mse_s = (x["estimate_sse"][0] / max(sum(x["count"]), 1) for x in (ws, ss))
            if not math.isfinite(trial[0]) or mse_w <= 0 or mse_s <= 0 or slope >= 0:
                return 0.0
            reached = trial[0] - 10 * math.log10(mse_w / mse_s)
            return max(-0.5, min(0.5, (s.aim - reached) / slope))
        est_w, est_s = ws["estimate_bits"][0], ss["estimate_bits"][0]
        layer_s = trial[1] - base_s
        slope *= trial[1] / max(layer_s, 1)  # d log(layer size) / d log max_error
        # bytes the whole's layer may spend: the budget itself, less CARRY_MARGIN (the prediction
        # runs high: the whole landed 0.8-3.1% under it, 1.5% on average, on two synthetic scenes
        # and a mosaic of 16 training crops, 2048^2 and 4096^2, 0.5-2 bpp; aimed 1.5% under the
        # budget as the other encodes are, half of them fell outside the 3% tolerance)
        want = math.exp(s.goal) * (1 - CARRY_MARGIN) - base_w
        if layer_s <= 0 or est_w <= 0 or est_s <= 0 or want <= 0 or slope >= 0:
            return 0.0
        return max(-0.5, min(0.5, math.log(want / (layer_s * est_w / est_s)) / slope))

    if sample is None:
        s = Search(encode_fn, pixels, 1.0 / SEARCH_TRIALS)
        search(s)
    else:
        fn, pix = sample
        # progress: ~30% for the sample's trials, the rest for (typically) one or two whole encodes
        won, trial = search(Search(fn, pix, 0.3 / SEARCH_TRIALS))
        knob = trial[3]
        s = Search(encode_fn, pixels, 0.3, slack=0.03)  # the whole within 3% of the target
        # a target won by a layer is carried to the whole through its base (coded first; the layer
        # encodes after it reuse it): not where the whole's bases are too large to keep between encodes
        carry = "max_error" in knob and search_memo(pixels) is not None
        if "max_error" in knob:
            line = s.layer_line(knob["quality"], won.fitted_slope(), reach=0.5)
            u0 = math.log(knob["max_error"])
            if carry:
                u0 += carried_step(won, trial, s, fn, encode_fn)
        else:
            line = s.quality_line()
            line.slope, line.reach, u0 = won.fitted_slope(), 0.75, knob["quality"]
        line.settle(u0, refine=True, budget=_WHOLE_TRIALS - 1)
    (p, _, data, knob), met = s.pick()
    return _record_target(data, target, p, met, knob)


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
    ``workers``: processes that entropy-decode tiles and their pixel layers ahead (default:
    automatic, :func:`sarcodec.parallel.auto_workers`: on a CPU, one per core for a file with
    pixel layers; 0: none); the pixels are the same whatever the number.
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
