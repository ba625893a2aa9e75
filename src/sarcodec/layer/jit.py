"""Compiled loops of the pixel layer's coder (numba): the range coder and the dependent-quantisation
decoder's walk along its chains, bit-exact with the NumPy + constriction path they replace.

Why compiled: a layer's decoder steps along its chains one lattice column at a time (the trellis
state of a value depends on the level before it), so the NumPy path makes ~10 array calls and two
constriction calls per column: ~90 us per column, 0.6 s for a 1024^2 tile at 1 bpp, 74% of a
layered decode. Per symbol the work is a few integer operations; compiled, the same walk runs
~10-20x faster. numba rather than a C extension: wheels for every platform numba supports, no
compiler at install, the kernels stay readable Python beside the code they mirror; the price is a
compile on first use (cached on disk, ``cache=True``) and a ~40 MB dependency.

**The format does not change.** The layer's streams are constriction's range coder
(``stream.queue``: 64-bit state, 32-bit words, 24-bit precision) with models built by its "fast"
leaky quantisation of float64 probabilities (``Categorical(perfect=False)``). The kernels here
reproduce both exactly (``docs/format.md`` section 7):

* a row of probabilities ``p`` (n symbols) quantises to the CDF ``c[s] = floor(P_s * scale) + s``
  with ``P_s`` the running float64 sum of ``p[:s]`` (left to right), ``scale = (2^24 - n) / P_n``,
  and ``c[n] = 2^24``;
* decoding a symbol: ``scale = range >> 24``, ``quantile = (point - lower) / scale`` (an error
  when >= 2^24), the symbol whose ``[c[s], c[s+1])`` holds it, ``lower += scale c[s]``,
  ``range = scale (c[s+1] - c[s])``, and a word shifted in when ``range < 2^32``.

Every operation is integer arithmetic or IEEE float64 additions, multiplications and divisions
(no fast-math), so the results equal constriction's on every machine;
``tests/test_jit.py`` checks that against constriction on random models and on real layers.
``SARCODEC_JIT=0`` (or numba missing) selects the NumPy + constriction path, the reference.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

# numba is imported, and the kernels compiled, on first use (:func:`on`): a file without a dense
# layer (the default outlier layer) never pays its import (~0.3 s, ~60 MB)
AVAILABLE = importlib.util.find_spec("numba") is not None
ENABLED = AVAILABLE and os.environ.get("SARCODEC_JIT", "1") != "0"
_KERNELS: list[str] = []
_INLINE: set[str] = set()
_compiled = False


def on() -> bool:
    """Whether the compiled loops are used (numba installed, ``SARCODEC_JIT`` not 0); the first
    call that says yes compiles them (or loads them from numba's cache)."""
    global _compiled
    if ENABLED and not _compiled:
        import numba

        g = globals()
        for name in _KERNELS:  # rebinding the names lets the kernels call each other compiled
            g[name] = numba.njit(cache=True, nogil=True, inline="always" if name in _INLINE else "never")(g[name])
        _compiled = True
    return ENABLED


def ready() -> bool:
    """Whether the kernels are in use and already compiled (never compiles them): for choices
    that may take the compiled path only where a process pays for numba anyway."""
    return ENABLED and _compiled


PRECISION = 24
_ONE = np.uint64(1)
_P = np.uint64(PRECISION)
_W = np.uint64(32)
_TOP = np.uint64(1 << PRECISION)
_LOW = np.uint64(1 << 32)  # range below this: shift a word in
_FULL = np.uint64(0xFFFFFFFFFFFFFFFF)


def _njit(fn):
    """Mark ``fn`` as a kernel, compiled by :func:`on`."""
    _KERNELS.append(fn.__name__)
    return fn


def _inline(fn):
    """A kernel inlined into its callers by numba itself: a call to a separately compiled kernel
    is not inlined by LLVM, and a range decoder's state passed through one (a tuple out, scalars
    in) stays out of registers: 40 ns a symbol called, ~24 ns inlined."""
    _INLINE.add(fn.__name__)
    return _njit(fn)


@_njit
def quantised_cdf(prob):
    """constriction's fast leaky quantisation of each row of ``prob`` (float64, rows x n): the
    integer CDFs (rows x n+1, int64), the last entry 2^24."""
    rows, n = prob.shape
    out = np.empty((rows, n + 1), np.int64)
    free = float((1 << PRECISION) - n)
    for r in range(rows):
        norm = 0.0
        for s in range(n):
            norm += prob[r, s]
        scale = free / norm
        cum = 0.0
        for s in range(n):
            out[r, s] = np.int64(cum * scale) + s
            cum += prob[r, s]
        out[r, n] = 1 << PRECISION
    return out


@_inline
def _binary_cdf1(neg, tot):
    """The middle CDF entry of the two-symbol row (1 - neg/tot, neg/tot), quantised as above."""
    p1 = neg / tot
    p0 = 1.0 - p1
    scale = float((1 << PRECISION) - 2) / (p0 + p1)
    return np.int64(p0 * scale) + 1


@_njit
def _start(words):
    """A decoder's state (lower, range, point, next word) over ``words`` (uint32)."""
    point = np.uint64(0)
    k = 0
    while k < 2 and k < words.size:
        point = (point << _W) | np.uint64(words[k])
        k += 1
    if k == 1:
        point = point << _W
    st = np.empty(4, np.uint64)
    st[0] = np.uint64(0)
    st[1] = _FULL
    st[2] = point
    st[3] = np.uint64(k)
    return st


@_njit
def _decode(st, words, cdf, n):
    """One symbol with CDF ``cdf`` (n symbols; ``cdf[n]`` = 2^24) on a decoder state array
    (:func:`_start`): :func:`_symbol_at`; -1 on invalid data."""
    sym, st[0], st[1], st[2], k = _symbol_at(st[0], st[1], st[2], np.int64(st[3]), words,
                                             cdf.reshape((1, cdf.size)), 0, n)
    st[3] = np.uint64(k)
    return sym


@_inline
def _shift_in(lower, rng, point, k, words):
    """Shift a word in (zeros past the end) when the range falls below 2^32."""
    if rng < _LOW:
        lower = lower << _W
        rng = rng << _W
        point = point << _W
        if k < words.size:
            point = point | np.uint64(words[k])
        k += 1
    return lower, rng, point, k


@_inline
def _symbol_at(lower, rng, point, k, words, cdf, row, n):
    """One symbol with the CDF ``cdf[row]`` (n symbols) on a decoder state held in scalars
    (lower, range, point, next word): ``scale = range >> 24``, ``quantile = (point - lower) /
    scale`` (invalid when >= 2^24), the symbol whose [c[s], c[s+1]) holds it, ``lower += scale
    c[s]``, ``range = scale (c[s+1] - c[s])``, then :func:`_shift_in`. Returns (symbol or -1 on
    invalid data, the new state). The state in registers instead of an array: a loop of symbols
    runs ~2.4x faster (57 -> 24 ns a symbol)."""
    scale = rng >> _P
    q = (point - lower) // scale
    qi = np.int64(min(q, _TOP))  # (one return: an early one kept the state out of registers)
    s = 0
    while s < n - 1 and cdf[row, s + 1] <= qi:
        s += 1
    lo = cdf[row, s]
    lower = lower + scale * np.uint64(lo)
    rng = scale * np.uint64(cdf[row, s + 1] - lo)
    lower, rng, point, k = _shift_in(lower, rng, point, k, words)
    return (s if q < _TOP else -1), lower, rng, point, k


@_inline
def _bit_at(lower, rng, point, k, words, cdf1):
    """One symbol of a two-symbol model with middle CDF entry ``cdf1`` on a decoder state held in
    scalars, as :func:`_symbol_at`."""
    scale = rng >> _P
    q = (point - lower) // scale
    if np.int64(min(q, _TOP)) < cdf1:
        rng = scale * np.uint64(cdf1)
        b = 0
    else:
        lower = lower + scale * np.uint64(cdf1)
        rng = scale * np.uint64((1 << PRECISION) - cdf1)
        b = 1
    lower, rng, point, k = _shift_in(lower, rng, point, k, words)
    return (b if q < _TOP else -1), lower, rng, point, k


@_njit
def _decode_bit(st, words, cdf1):
    """One symbol of a two-symbol model with middle CDF entry ``cdf1`` on a decoder state array:
    :func:`_bit_at`; -1 on invalid data."""
    b, st[0], st[1], st[2], k = _bit_at(st[0], st[1], st[2], np.int64(st[3]), words, cdf1)
    st[3] = np.uint64(k)
    return b


@_njit
def _update_signs(sign_neg, sign_tot, add_neg, add_tot, sign_halve):
    """``dq._Signs.update``: add a column's counts (and clear them), halve the contexts past
    ``sign_halve`` and keep 1 <= neg <= tot - 1."""
    big = False
    for c in range(sign_neg.size):
        sign_neg[c] += add_neg[c]
        sign_tot[c] += add_tot[c]
        add_neg[c] = 0
        add_tot[c] = 0
        if sign_tot[c] > sign_halve:
            big = True
    if big:
        for c in range(sign_neg.size):
            if sign_tot[c] > sign_halve:
                sign_neg[c] = (sign_neg[c] + 1) // 2
                sign_tot[c] = (sign_tot[c] + 1) // 2
            sign_neg[c] = min(max(sign_neg[c], 1), sign_tot[c] - 1)


def decoder(words: np.ndarray) -> np.ndarray:
    """A decoder state over a layer's range-coder ``words`` (pass it to :func:`decode_dq_pass`)."""
    return _start(np.ascontiguousarray(words, np.uint32))


@_inline
def _predicted(alpha, ssum, n):
    """``coder._predict`` of one position: round(alpha/32 * ssum/n), half up."""
    if not alpha:
        return np.int64(0)
    num = 2 * alpha * ssum + 32 * n
    if n == 4:  # (a floor division by 2^k is an arithmetic shift: the same integers, no divide)
        return num >> 8
    if n == 2:
        return num >> 7
    return num // (64 * n)


@_inline
def _khat_of(mu, q1):
    """``dq._khat``: the level of quantiser ``q1`` whose value is nearest ``mu``."""
    if q1:
        return ((abs(mu) + 1) // 2) * (1 if mu > 0 else (-1 if mu < 0 else 0))
    return (mu + 1) // 2


@_inline
def _bucket(alpha, ssum, n, v):
    """``dq._sign_bucket`` of one position whose predicted level has value ``v``."""
    if alpha:
        num, den = alpha * ssum - 32 * n * v, 32 * n
    else:
        num, den = ssum, 2 * n
    t = 20 * num
    return ((t >= -15 * den) + (t >= -5 * den) + (t >= -den) + (t > den) + (t > 5 * den)
            + (t > 15 * den))


@_njit
def decode_dq_pass(st, words, cdf, cls, ssum, cnt, alpha, nxt, quant, direct, sign_neg, sign_tot,
                   sign_halve, raw, ri, m, r0, c0, step):
    """The chains (rows) of one pass of a dependent-quantisation layer, column by column, exactly
    as ``dq.decode_dq``'s NumPy loop: per column the magnitudes of every row (table
    ``2 class + quantiser``, buckets completed from ``raw``), then the signs of the non-zero ones
    with the column's frozen adaptive counts (context: the prediction's bucket, the magnitude, the
    quantiser), then the counts updated (and halved past ``sign_halve``). The prediction of each
    position comes from its neighbour sum ``ssum`` and count ``cnt`` with weight ``alpha``; the
    reconstruction indices go into ``m`` at (r0 + i step, c0 + j step). Returns the raw-bit
    position, or -1 on invalid data, -2 when the raw bits run short."""
    R, C = cls.shape
    n = cdf.shape[1] - 1
    state = np.zeros(R, np.int64)
    a = np.empty(R, np.int64)
    q1 = np.empty(R, np.int64)
    kh = np.empty(R, np.int64)
    add_neg = np.zeros(sign_neg.size, np.int64)  # the column's counts
    add_tot = np.zeros(sign_neg.size, np.int64)
    lower, rng, point, wk = st[0], st[1], st[2], np.int64(st[3])  # the decoder's state, in registers
    c1 = np.empty(sign_neg.size, np.int64)  # each sign context's model, fixed within a column
    for j in range(C):
        for c in range(c1.size):
            c1[c] = _binary_cdf1(sign_neg[c], sign_tot[c])
        for i in range(R):
            q = quant[state[i]]
            q1[i] = q
            s, lower, rng, point, wk = _symbol_at(lower, rng, point, wk, words, cdf, 2 * cls[i, j] + q, n)
            if s < 0:
                return -1
            if s >= direct:
                nb = s - direct + 4
                if ri + nb > raw.size:
                    return -2
                v = np.int64(1)
                for b in range(nb):
                    v = (v << 1) | raw[ri + b]
                ri += nb
                a[i] = v
            else:
                a[i] = s
        for i in range(R):
            k = _khat_of(_predicted(alpha, ssum[i, j], cnt[i, j]), q1[i])
            kh[i] = k
            if a[i] != 0:
                v = 2 * k - (k > 0) + (k < 0) if q1[i] else 2 * k  # the predicted level's value
                ctx = (_bucket(alpha, ssum[i, j], cnt[i, j], v) * 3 + min(a[i], 3) - 1) * 2 + q1[i]
                neg, lower, rng, point, wk = _bit_at(lower, rng, point, wk, words, c1[ctx])
                if neg < 0:
                    return -1
                add_tot[ctx] += 1
                if neg == 1:
                    add_neg[ctx] += 1
                    a[i] = -a[i]
        _update_signs(sign_neg, sign_tot, add_neg, add_tot, sign_halve)
        for i in range(R):
            k = kh[i] + a[i]
            m[r0 + i * step, c0 + j * step] = 2 * k - (k > 0) + (k < 0) if q1[i] else 2 * k
            state[i] = nxt[state[i], k & 1]
    st[0], st[1], st[2], st[3] = lower, rng, point, np.uint64(wk)
    return ri


@_njit
def filter_activity(xp, r):
    """``restoration._filter_activity`` of the tile padded by ``r`` in ``xp``, in its order (the
    Laplacian, then the 5 x 5 sum row by row from 0): the same floats."""
    H, W = xp.shape[0] - 2 * r, xp.shape[1] - 2 * r
    lap = np.empty((H + 4, W + 4))
    for i in range(H + 4):
        for j in range(W + 4):
            y, x = i + r - 2, j + r - 2
            lap[i, j] = abs(4.0 * xp[y, x] - xp[y - 1, x] - xp[y + 1, x] - xp[y, x - 1] - xp[y, x + 1])
    act = np.zeros((H, W))
    # row by row (each pixel's 25 terms still added in NumPy's order, a then b): 25 sweeps of the
    # whole tile would stream it through memory 25 times
    for i in range(H):
        for a in range(5):
            for b in range(5):
                for j in range(W):
                    act[i, j] += lap[i + a, j + b]
    return act


@_njit
def filter_normal(xp, r, pairs, cls, valid, y, classes):
    """The normal equations of ``restoration.fit_filter``, one pass over the tile: per class the
    Gram matrix of the features (each pair's ``x[p+d] + x[p-d] - 2x``, then 1) over the valid
    pixels, and their products with the target ``y``. Encoder-side only (the fitted taps are
    rounded and stored), so its summation order need not be NumPy's."""
    H, W = xp.shape[0] - 2 * r, xp.shape[1] - 2 * r
    n = pairs.shape[0] + 1
    g = np.zeros((classes, n, n))
    b = np.zeros((classes, n))
    f = np.empty(n)
    for i in range(H):
        for j in range(W):
            if not valid[i, j]:
                continue
            x2 = 2.0 * xp[i + r, j + r]
            for k in range(n - 1):
                dr, dc = pairs[k, 0], pairs[k, 1]
                f[k] = xp[i + r + dr, j + r + dc] + xp[i + r - dr, j + r - dc] - x2
            f[n - 1] = 1.0
            gc, bc = g[cls[i, j]], b[cls[i, j]]
            yv = y[i, j]
            for u in range(n):  # the whole square (contiguous rows, which vectorise)
                fu = f[u]
                bc[u] += fu * yv
                for v in range(n):
                    gc[u, v] += fu * f[v]
    return g, b


@_njit
def restore(xp, r, pairs, edges, taps, dc):
    """The restoration filter (``restoration.RestorationFilter.apply``) of the tile padded by
    ``r`` in ``xp``, pixel by pixel with NumPy's operations in NumPy's order (the activity's
    Laplacian, its 5 x 5 sum row by row from 0, the class as ``searchsorted(edges, side='right')``,
    then ``x + dc`` plus each pair's ``tap * (x[p+d] + x[p-d] - 2x)`` in pair order), so the
    pixels are the same floats. ``taps`` and ``dc`` already scaled (float64)."""
    H, W = xp.shape[0] - 2 * r, xp.shape[1] - 2 * r
    act = filter_activity(xp, r)
    out = np.empty((H, W))
    ne = edges.size
    cls = np.empty(W, np.int64)
    tk = np.empty(W)
    for i in range(H):
        for j in range(W):
            c = 0
            while c < ne and edges[c] <= act[i, j]:
                c += 1
            cls[j] = c
            out[i, j] = xp[i + r, j + r] + dc[c]
        # then each pair over the whole row (contiguous loads that vectorise), per pixel in pair
        # order as before
        for k in range(pairs.shape[0]):
            dr, dcol = pairs[k, 0], pairs[k, 1]
            for j in range(W):
                tk[j] = taps[cls[j], k]
            up = xp[i + r + dr, r + dcol:r + dcol + W]
            down = xp[i + r - dr, r - dcol:r - dcol + W]
            mid = xp[i + r, r:r + W]
            o = out[i]
            for j in range(W):
                o[j] += tk[j] * (up[j] + down[j] - 2.0 * mid[j])
    return out


@_inline
def _symbol_of(a, direct):
    """``dq._symbol`` of one magnitude: itself below ``direct``, else ``direct - 5 +`` its bit length."""
    if a < direct:
        return a
    n = 0
    while a > 0:
        a >>= 1
        n += 1
    return direct - 5 + n


@_njit
def viterbi(x, tab, cls, k0, k1, lam, nxt, quant, direct):
    """``dq._viterbi`` chain by chain (rows of ``x``), with its floats in its order: per position
    and (quantiser, parity) the cheapest candidate level (the first of equal costs), then the
    trellis (a state's second predecessor only where strictly cheaper; the end state the first
    of the cheapest), then the path back. Returns (levels, quantisers)."""
    R, C = x.shape
    S = quant.size
    # per state t its two predecessors (s, parity) in (state, parity) order
    ps = np.empty((S, 2), np.int64)
    pp = np.empty((S, 2), np.int64)
    cnt = np.zeros(S, np.int64)
    for s in range(S):
        for p in range(2):
            t = nxt[s, p]
            ps[t, cnt[t]] = s
            pp[t, cnt[t]] = p
            cnt[t] += 1
    ks = np.empty((R, C), np.int64)
    qs = np.empty((R, C), np.int64)
    bcost = np.empty((C, 2, 2))
    blev = np.empty((C, 2, 2), np.int64)
    back = np.empty((C, S), np.int8)
    cost = np.empty(S)
    new = np.empty(S)
    cand = np.empty(4, np.int64)
    for r in range(R):
        for j in range(C):
            xv = x[r, j]
            c = cls[r, j]
            for q1 in range(2):
                if q1:
                    kk = np.int64(np.floor((xv + 1) / 2))
                    cand[0], cand[1], cand[2], cand[3] = kk - 1, kk, kk + 1, 0
                    nc = 4
                    kh = k1[r, j]
                else:
                    kk = np.int64(np.floor(xv / 2))
                    cand[0], cand[1], cand[2] = kk, kk + 1, 0
                    nc = 3
                    kh = k0[r, j]
                row = 2 * c + q1
                best0, best1 = np.inf, np.inf
                lev0, lev1 = cand[0], cand[0]
                for i in range(nc):
                    k = cand[i]
                    if q1:
                        rec = 2 * k - (1 if k > 0 else (-1 if k < 0 else 0))
                    else:
                        rec = 2 * k
                    d = xv - rec
                    inc = d * d + lam * tab[row, _symbol_of(abs(k - kh), direct)]
                    if k & 1:
                        if inc < best1:
                            best1, lev1 = inc, k
                    else:
                        if inc < best0:
                            best0, lev0 = inc, k
                bcost[j, q1, 0], bcost[j, q1, 1] = best0, best1
                blev[j, q1, 0], blev[j, q1, 1] = lev0, lev1
        for s in range(S):
            cost[s] = np.inf
        cost[0] = 0.0
        for j in range(C):
            for t in range(S):
                s0, s1 = ps[t, 0], ps[t, 1]
                c0 = cost[s0] + bcost[j, quant[s0], pp[t, 0]]
                c1 = cost[s1] + bcost[j, quant[s1], pp[t, 1]]
                if c1 < c0:
                    new[t] = c1
                    back[j, t] = 1
                else:
                    new[t] = c0
                    back[j, t] = 0
            for t in range(S):
                cost[t] = new[t]
        s = 0
        for t in range(1, S):
            if cost[t] < cost[s]:
                s = t
        for j in range(C - 1, -1, -1):
            b = back[j, s]
            prev = ps[s, b]
            ks[r, j] = blev[j, quant[prev], pp[s, b]]
            s = prev
            qs[r, j] = quant[s]
    return ks, qs


@_njit
def context(q, r0, c0, s, nb, base, lut, top):
    """``coder._context`` of a residual (not ``raw``) for the lattice (r0::s, c0::s) with neighbour
    offsets ``nb`` (k x 2): per position the class ``base + lut[min(16 sum|v| // n, top)]``, the
    signed neighbour sum and the count of in-bounds neighbours (missing ones count 0)."""
    h, w = q.shape
    nr = (h - r0 + s - 1) // s if h > r0 else 0
    nc = (w - c0 + s - 1) // s if w > c0 else 0
    cls = np.empty((nr, nc), np.int64)
    ssum = np.empty((nr, nc), np.int64)
    cnt = np.empty((nr, nc), np.int64)
    for i in range(nr):
        y = r0 + i * s
        for j in range(nc):
            x = c0 + j * s
            a = np.int64(0)
            t = np.int64(0)
            n = np.int64(0)
            for k in range(nb.shape[0]):
                yy, xx = y + nb[k, 0], x + nb[k, 1]
                if 0 <= yy < h and 0 <= xx < w:
                    v = q[yy, xx]
                    a += abs(v)
                    t += v
                    n += 1
            cls[i, j] = base + lut[min((4 * a) if n == 4 else (16 * a) // n, top)]
            ssum[i, j] = t
            cnt[i, j] = n
    return cls, ssum, cnt



@_njit
def alpha_sums(m, r0, c0, s, ssum, cnt):
    """``dq._alpha_sums``: per neighbour count g (0..4), the sums of m * ssum and of ssum^2 over
    the positions of the lattice (r0::s, c0::s) with g neighbours (int64, exact)."""
    out = np.zeros((5, 2), np.int64)
    nr, nc = ssum.shape
    for i in range(nr):
        for j in range(nc):
            g = cnt[i, j]
            t = ssum[i, j]
            out[g, 0] += m[r0 + i * s, c0 + j * s] * t
            out[g, 1] += t * t
    return out


@_njit
def predicted_levels(alpha, ssum, cnt, k, qs, c, ntab):
    """``dq._contexts`` for one pass at prediction weight ``alpha``: the predicted level of each
    lattice position in Q0 and in Q1 and, per table id ``2 c + (qs > 0)``, the count of values,
    of non-zero differences ``k`` - predicted level and the sum of their magnitudes (what
    ``dq._estimate_bits`` weighs; integers, so the bits computed from them are the NumPy path's)."""
    nr, nc = ssum.shape
    k0 = np.empty((nr, nc), np.int64)
    k1 = np.empty((nr, nc), np.int64)
    n = np.zeros(ntab, np.int64)
    nz = np.zeros(ntab, np.int64)
    tot = np.zeros(ntab, np.int64)
    for i in range(nr):
        for j in range(nc):
            mu = _predicted(alpha, ssum[i, j], cnt[i, j])
            a0 = _khat_of(mu, False)
            a1 = _khat_of(mu, True)
            k0[i, j] = a0
            k1[i, j] = a1
            q1 = qs[i, j] > 0
            e = k[i, j] - (a1 if q1 else a0)
            t = 2 * c[i, j] + (1 if q1 else 0)
            n[t] += 1
            if e != 0:
                nz[t] += 1
                tot[t] += abs(e)
    return k0, k1, n, nz, tot

# --- the range encoder (constriction's ``stream.queue.RangeEncoder``) ---------------------------
# state: lower, range, the count of held-back ("inverted") words (0: normal), the first of them,
# the count of words written to the output buffer
@_inline
def _emit(st, out, word):
    n = np.int64(st[4])
    out[n] = np.uint32(word)
    st[4] = np.uint64(n + 1)


@_inline
def _flush(st, out, carry):
    """Write the held-back words: their first word plus the carry, then the rest as all ones
    (no carry) or all zeros (the carry rippled through them)."""
    if carry:
        first, rest = st[3] + _ONE, np.uint64(0)
    else:
        first, rest = st[3], np.uint64(0xFFFFFFFF)
    _emit(st, out, first)
    for _ in range(np.int64(st[2]) - 1):
        _emit(st, out, rest)


@_inline
def _encode(st, out, left, prob):
    """One symbol with left CDF ``left`` and probability ``prob`` (in 2^-24)."""
    lower, rng = st[0], st[1]
    scale = rng >> _P
    rng = scale * np.uint64(prob)
    new_lower = lower + scale * np.uint64(left)
    if st[2] > 0 and new_lower + rng > new_lower:  # an inverted run resolves: write it
        _flush(st, out, new_lower < lower)
        st[2] = np.uint64(0)
    lower = new_lower
    if rng < _LOW:
        rng = rng << _W
        word = lower >> _W
        lower = lower << _W
        if st[2] > 0:
            st[2] += _ONE
        elif lower + rng > lower:
            _emit(st, out, word)
        else:
            st[2] = _ONE
            st[3] = word
    st[0], st[1] = lower, rng


def encoder(capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """A fresh encoder state and an output buffer for ``capacity`` symbols (a symbol writes at
    most one word, and sealing two more)."""
    st = np.zeros(5, np.uint64)
    st[1] = _FULL
    return st, np.zeros(capacity + 4, np.uint32)


def sealed(st: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The encoder's words, sealed as constriction's ``get_compressed`` seals them."""
    st, out = st.copy(), out.copy()
    _seal(st, out)
    return out[:int(st[4])].copy()


@_njit
def _seal(st, out):
    lower, rng = st[0], st[1]
    if rng == _FULL:
        return
    point = lower + np.uint64(0xFFFFFFFF)
    if st[2] > 0:
        _flush(st, out, point < lower)
    pw = point >> _W
    _emit(st, out, pw)
    if ((lower + rng) >> _W) == pw:
        _emit(st, out, 0)


@_njit
def encode_dq_pass(st, out, cdf, e, tid, rb, qp, direct, sign_neg, sign_tot, sign_halve, raw, ri):
    """The encoder's side of :func:`decode_dq_pass` (``dq._pack``'s loop): per column the symbols
    of every row's difference ``e`` with table ``tid``, the buckets' low bits into ``raw`` (most
    significant first, from ``ri``), then the signs of the non-zero ones in contexts of ``rb``,
    ``qp`` with the column's frozen counts, then the counts updated. Returns the raw position."""
    R, C = e.shape
    add_neg = np.zeros(sign_neg.size, np.int64)  # the column's counts
    add_tot = np.zeros(sign_neg.size, np.int64)
    c1s = np.empty(sign_neg.size, np.int64)  # each sign context's model, fixed within a column
    for j in range(C):
        for c in range(c1s.size):
            c1s[c] = _binary_cdf1(sign_neg[c], sign_tot[c])
        for i in range(R):
            a = abs(e[i, j])
            s = _symbol_of(a, direct)
            t = tid[i, j]
            _encode(st, out, cdf[t, s], cdf[t, s + 1] - cdf[t, s])
            if s >= direct:
                nb = s - direct + 4
                for b in range(nb - 1, -1, -1):
                    raw[ri] = (a >> b) & 1
                    ri += 1
        for i in range(R):
            v = e[i, j]
            if v != 0:
                ctx = (rb[i, j] * 3 + min(abs(v), 3) - 1) * 2 + qp[i, j]
                c1 = c1s[ctx]
                if v < 0:
                    _encode(st, out, c1, (1 << PRECISION) - c1)
                    add_neg[ctx] += 1
                else:
                    _encode(st, out, 0, c1)
                add_tot[ctx] += 1
        _update_signs(sign_neg, sign_tot, add_neg, add_tot, sign_halve)
    return ri


# --- the CDF 9/7 lifting of wavelet.py, along either axis of a 2-D array -------------------------
# The same IEEE operations per element as wavelet._dwt1 / _idwt1 (each lifting step a sweep over
# the whole array, as NumPy's, so a step reads the previous step's values): the same floats.
# NumPy's gathers (d[dl] + d[dr]) and axis moves build temporaries for every step.

@_njit
def _lift(u, v, coef, nb0, nb1, axis):
    """Along ``axis``: u[i] += coef * (v[nb0[i]] + v[nb1[i]]) for every index i of it (the
    inverse steps pass -coef: u + (-c) x is u - c x exactly)."""
    if axis == 0:
        for i in range(u.shape[0]):
            a, b = v[nb0[i]], v[nb1[i]]
            for j in range(u.shape[1]):
                u[i, j] = u[i, j] + coef * (a[j] + b[j])
    else:
        for r in range(u.shape[0]):
            a = v[r]
            for i in range(u.shape[1]):
                u[r, i] = u[r, i] + coef * (a[nb0[i]] + a[nb1[i]])


@_njit
def dwt2d(x, axis, lift, kappa, nxt, dl, dr):
    """``wavelet._dwt1(x, axis)`` of a 2-D float64 array at least two long along ``axis``:
    (low, high)."""
    n = x.shape[axis]
    ns, nd = (n + 1) // 2, n // 2
    if axis == 0:
        s, d = x[0::2].copy(), x[1::2].copy()
    else:
        s, d = x[:, 0::2].copy(), x[:, 1::2].copy()
    own = np.arange(ns)
    _lift(d, s, lift[0], own, nxt, axis)
    _lift(s, d, lift[1], dl, dr, axis)
    _lift(d, s, lift[2], own, nxt, axis)
    _lift(s, d, lift[3], dl, dr, axis)
    return s / kappa, d * kappa


@_njit
def idwt2d(s, d, axis, lift, kappa, nxt, dl, dr):
    """``wavelet._idwt1(s, d, axis)`` of 2-D float64 arrays (``d`` at least one long along ``axis``)."""
    s = s * kappa
    d = d / kappa
    own = np.arange(s.shape[axis])
    _lift(s, d, -lift[3], dl, dr, axis)
    _lift(d, s, -lift[2], own, nxt, axis)
    _lift(s, d, -lift[1], dl, dr, axis)
    _lift(d, s, -lift[0], own, nxt, axis)
    if axis == 0:
        x = np.empty((s.shape[0] + d.shape[0], s.shape[1]))
        x[0::2] = s
        x[1::2] = d
    else:
        x = np.empty((s.shape[0], s.shape[1] + d.shape[1]))
        x[:, 0::2] = s
        x[:, 1::2] = d
    return x
