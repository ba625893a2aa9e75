"""Dependent (trellis-coded) quantisation of an MSE layer: layer flag 9.

A scalar quantiser leaves ~1.5 dB of the rate-distortion bound on the table at high rate (its
cells are cubes). Dependent quantisation (VVC's DQ, a trellis-coded quantiser) recovers most of
that: two quantisers, Q0 (even multiples of ``delta``) and Q1 (zero and odd multiples), and a
state machine driven by the parity of each coded level picks which one the next value uses: the
8 states of Ungerboeck's one-dimensional code (ECM's choice too, :data:`MACHINE`). The encoder
chooses the levels of a whole chain with the Viterbi algorithm (cost = squared error + lambda *
bits); the decoder only follows the state machine.

Chains and contexts follow the context coder's passes (:data:`coder.PASSES`): within a pass, each
row of the pass's lattice is one chain (state 0 at its left end), and the context class of every
value comes, as for the scalar layer, from the magnitudes of the four nearest values of earlier
passes. The table of a value is chosen by its (class, quantiser): the state says which quantiser
(and so what a level means), so zero and small levels get different probabilities in Q0 and Q1.
A decoder steps along the chains one lattice column at a time, every row at once (vectorised).

Each table is the context coder's zero-inflated geometric law over |level| (``p0`` in 1/65536,
``theta`` in 1/256, integers fitted by the encoder), truncated to ``ALPHABET - 1`` symbols plus
an escape (the excess sent raw as int32). Signs are range-coded after each lattice column with
adaptive binary models, one per context (:func:`_sign_bucket`, :func:`_context_of`: which way the
unrounded prediction lies from the predicted level, the magnitude, the quantiser; counts start
at 1/2 and halve past ``SIGN_HALVE``): the prediction's rounding drops its fraction, and the sign
follows it where residuals are correlated or skewed. Every probability comes from exactly
decoded integers, so decoding is identical on every machine.

The decoded layer is a :class:`coder.LayerData` whose ``q`` is the reconstruction index
``2 k - sgn(k) [Q1]`` (the value in units of ``delta``), reconstructed with per-index centroid
offsets.

Measured on the validation residuals (wavelet subbands over a low base): +0.3 dB at 0.75-1 bpp
and +0.45-0.6 dB at 1.5-2.5 bpp over the scalar quantiser at equal estimated rate.
"""
from __future__ import annotations

import struct

import numpy as np

from . import coder as L
from . import jit

# The state machine: state x parity of the level -> next state, and the quantiser (0: Q0, 1: Q1)
# each state selects: Ungerboeck's 8-state code for one-dimensional signal sets (parity-check
# polynomials h0 = 13, h1 = 04 octal; state (a, b, w) -> (a ^ w, a, b ^ parity), quantiser a),
# whose union cosets are a denser packing than VVC's 4 states: +0.1-0.2 dB at 1.5-3 bits per value
# on Gaussian and Laplacian sources.
NEXT8 = np.array([[0, 1], [4, 5], [1, 0], [5, 4], [6, 7], [2, 3], [7, 6], [3, 2]], np.int64)
QUANT8 = np.array([0, 0, 0, 0, 1, 1, 1, 1], np.int64)
MACHINE = (NEXT8, QUANT8)
N_SIGN = 7 * 3 * 2  # sign contexts: prediction-residual bucket x min(|e|, 3) x quantiser
SIGN_HALVE = 4096  # an adaptive sign count is halved past this total (tracks local statistics)
SCALE = 0.6  # delta of the union of both quantisers, relative to the scalar layer's step
LAMBDA = 0.3  # Viterbi cost: squared error in delta^2 + LAMBDA * bits
DIRECT = 16  # |level| < DIRECT is a symbol of its own; larger levels: a bucket [2^n, 2^(n+1)), n raw bits
ALPHABET = DIRECT + 27  # buckets up to 2^31
N_TABLES = 2 * L.N_CLASSES
FLAG = 9  # the layer flag of a dependent-quantisation blob
_TAIL = struct.Struct("<Q")  # used-table bitmap


def recon_index(k: np.ndarray, q1: np.ndarray) -> np.ndarray:
    """The value of level ``k`` in quantiser ``q1`` (0 or 1), in units of delta: 2k in Q0,
    2k - sgn(k) in Q1."""
    return 2 * k - np.where(q1 > 0, np.sign(k), 0)


def _table(p0: int, theta: int) -> np.ndarray:
    """Integer frequencies (in 2^-32) of the symbols: |level| = 0 .. DIRECT - 1, then the buckets
    [2^n, 2^(n+1)) for n = 4 .. 30, from (p0, theta) only: P(0) = p0 / 2^16 and P(|k| >= a | k != 0)
    = (theta / 256)^(a - 1), powers in 2^-32 fixed point, each product floored (integers only)."""
    p0 = min(max(int(p0), 1), 65535)
    theta = min(max(int(theta), 0), 255)
    nonzero = (65536 - p0) << 16
    t = theta << 24  # theta / 256 in 2^-32
    pw = [1 << 32]  # (theta / 256)^e for e = 0 .. DIRECT
    for _ in range(DIRECT):
        pw.append(pw[-1] * t >> 32)
    big = [pw[DIRECT - 1]]  # e = 2^n - 1 for n = 4 .. 31: e' = 2 e + 1
    for _ in range(ALPHABET - DIRECT):
        big.append((big[-1] * big[-1] >> 32) * t >> 32)
    tail = [nonzero * x >> 32 for x in pw]  # mass of |k| >= e + 1
    btail = [nonzero * x >> 32 for x in big]  # mass of |k| >= 2^n, n = 4 .. 31
    f = [p0 << 16] + [max(1, tail[e] - tail[e + 1]) for e in range(DIRECT - 1)]
    f += [max(1, btail[i] - btail[i + 1]) for i in range(ALPHABET - DIRECT)]
    return np.asarray(f, np.int64)


def _symbol(a: np.ndarray) -> np.ndarray:
    """The symbol of magnitudes ``a``: itself below DIRECT, else DIRECT + (bit length - 5)."""
    sym = np.minimum(a, DIRECT)
    big = a >= DIRECT
    if big.any():
        sym[big] = DIRECT - 5 + np.frexp(a[big].astype(np.float64))[1]  # bit length (exact below 2^53)
    return sym


def _fit_tables(a: np.ndarray, tid: np.ndarray) -> dict[int, tuple[int, int]]:
    """``{t: coder._fit_class(a[tid == t])}`` (p0, theta by maximum likelihood) for every table ``t`` in ``tid``, from per-table counts and sums
    in one pass (the same numbers: the sums are of integers, exact in float64)."""
    a, tid = np.abs(a).reshape(-1), tid.reshape(-1)
    n = np.bincount(tid)
    nz = np.bincount(tid, a != 0, n.size)
    tot = np.bincount(tid, np.minimum(a, L.HALF), n.size)
    out = {}
    for t in np.flatnonzero(n).tolist():
        cnt, k = int(n[t]), int(nz[t])
        p0 = min(max(int(round(65536 * (cnt - k + 0.5) / (cnt + 1.0))), 1), 65535)
        out[t] = (p0, 0) if k == 0 else (p0, min(int(round(256 * max(0.0, 1.0 - 1.0 / (float(tot[t]) / k)))), 255))
    return out


class _Tables:
    """Per used table: the probability row (float64 from integers) and the bits of each symbol."""

    def __init__(self, params: dict[int, tuple[int, int]]):
        self.prob = np.zeros((N_TABLES, ALPHABET))
        self.prob[:, 0] = 1.0  # unused tables: never read by a valid stream
        for t, pt in params.items():
            f = _table(*pt)
            self.prob[t] = f / float(f.sum())
        with np.errstate(divide="ignore"):
            self.bits = -np.log2(self.prob)
        self.bits[:, 1:] += 1.0  # the sign
        self.bits[:, DIRECT:] += np.arange(4, 4 + ALPHABET - DIRECT)  # a bucket's raw bits
        self.bits = np.minimum(self.bits, 96.0)


def _lattice(shape: tuple[int, int], p: int) -> tuple[np.ndarray, np.ndarray]:
    r0, c0, s, _ = L.PASSES[p]
    return np.arange(r0, shape[0], s), np.arange(c0, shape[1], s)


def _khat(mu: np.ndarray, q1: bool) -> np.ndarray:
    """The level whose value is nearest the prediction ``mu`` (integers, units of delta) in Q0
    (value 2k: round(mu / 2), half up) or Q1 (value 2k - sgn k)."""
    if q1:
        return np.sign(mu) * ((np.abs(mu) + 1) // 2)
    return np.floor_divide(mu + 1, 2)


def _sign_bucket(alpha: int, ssum: np.ndarray, n: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which way the exact prediction ``alpha/32 * ssum/n`` (with ``alpha`` 0, half the neighbours'
    mean) of positions with neighbour sum ``ssum`` of ``n`` values lies from the value ``v`` (units
    of delta) of their predicted level: 7 buckets at +-0.05, 0.25, 0.75 delta (integers only)."""
    if alpha:
        num, den = alpha * ssum - 32 * n * v, 32 * n
    else:
        num, den = ssum, 2 * n
    t = 20 * num
    return (t >= -15 * den).astype(np.int64) + (t >= -5 * den) + (t >= -den) + (t > den) + (t > 5 * den) + (t > 15 * den)


def _context_of(rb: np.ndarray, a: np.ndarray, q1: np.ndarray) -> np.ndarray:
    """The sign context of non-zero differences of magnitudes ``a`` in quantisers ``q1``: the
    :func:`_sign_bucket` ``rb`` of their prediction, the magnitude (1, 2, >= 3) and the quantiser.
    The rounding of the prediction to a level drops its fraction; the sign of the difference
    follows it."""
    return (rb * 3 + np.minimum(a, 3) - 1) * 2 + q1


class _Signs:
    """Adaptive binary models of the signs, one per context: counts (negative, total) start at
    (1, 2), grow by each coded sign of a lattice column, and halve past SIGN_HALVE."""

    def __init__(self):
        self.neg = np.ones(N_SIGN, np.int64)
        self.tot = np.full(N_SIGN, 2, np.int64)

    def probs(self, ctx: np.ndarray) -> np.ndarray:
        out = np.empty((ctx.size, 2))
        out[:, 1] = self.neg[ctx] / self.tot[ctx]
        out[:, 0] = 1.0 - out[:, 1]
        return out

    def update(self, ctx: np.ndarray, neg: np.ndarray) -> None:
        self.neg += np.bincount(ctx, neg, minlength=N_SIGN).astype(np.int64)
        self.tot += np.bincount(ctx, minlength=N_SIGN)
        # 1 <= neg <= tot - 1 holds after every update (a column adds at most as many negatives as
        # signs); only halving an even total can break it, so only then is neg clipped
        if self.tot.max() > SIGN_HALVE:
            big = self.tot > SIGN_HALVE
            self.neg[big] = (self.neg[big] + 1) // 2
            self.tot[big] = (self.tot[big] + 1) // 2
            self.neg = np.clip(self.neg, 1, self.tot - 1)


def _viterbi(x: np.ndarray, tab: np.ndarray, cls: np.ndarray, khat: tuple[np.ndarray, np.ndarray],
             lam: float, machine=MACHINE) -> tuple[np.ndarray, np.ndarray]:
    """Levels and quantisers of chains = rows of ``x`` (values in units of delta) minimising
    sum (x - value)^2 + lam * bits: ``tab`` the bits per (table, symbol), ``cls`` the class of each
    position, ``khat`` its predicted level in Q0 and in Q1 (a level is coded as its difference)."""
    if jit.on():
        c = lambda a: np.ascontiguousarray(a, np.int64)  # noqa: E731
        return jit.viterbi(np.ascontiguousarray(x, np.float64), np.ascontiguousarray(tab, np.float64), c(cls),
                           c(khat[0]), c(khat[1]), float(lam), c(machine[0]), c(machine[1]), DIRECT)
    R, C = x.shape
    # the best level of each (quantiser, parity) at every position: independent of the path, so
    # computed for all positions at once; the trellis then only adds and compares
    bcost = np.empty((C, 2, 2, R))  # per column, quantiser and parity: the cheapest level's cost
    blev = np.empty((2, 2, C, R), np.int64)  # ... and that level
    for q1 in (0, 1):
        if q1:
            kk = np.floor((x + 1) / 2).astype(np.int64)
            cands = (kk - 1, kk, kk + 1, np.zeros_like(kk))
        else:
            kk = np.floor(x / 2).astype(np.int64)
            cands = (kk, kk + 1, np.zeros_like(kk))
        # per parity, the cheapest candidate (the first of equal costs, as an argmin would pick)
        bc: list = [None, None]
        bk: list = [None, None]
        for k in cands:
            rec = 2 * k - np.sign(k) if q1 else 2 * k
            inc = (x - rec) ** 2 + lam * tab[2 * cls + q1, _symbol(np.abs(k - khat[q1]))]
            odd = (k & 1).astype(bool)
            for p in (0, 1):
                c = np.where(odd if p else ~odd, inc, np.inf)
                if bc[p] is None:
                    bc[p], bk[p] = c, k
                else:
                    upd = c < bc[p]
                    bc[p], bk[p] = np.where(upd, c, bc[p]), np.where(upd, k, bk[p])
        for p in (0, 1):
            bcost[:, q1, p], blev[q1, p] = bc[p].T, bk[p].T
    nxt, quant = machine
    S = len(quant)
    cost = np.full((R, S), np.inf)
    cost[:, 0] = 0.0
    back = np.zeros((C, R, S), np.int8)  # which of the two predecessors
    pred = [[(s, p) for s in range(S) for p in range(2) if nxt[s][p] == t] for t in range(S)]
    # every state at once: state t's two predecessors (s0, s1) with their levels' parities
    s0, p0, s1, p1 = (np.array([pred[t][i][f] for t in range(S)]) for i in (0, 1) for f in (0, 1))
    qs0, qs1 = np.asarray(quant)[s0], np.asarray(quant)[s1]
    for j in range(C):
        c0 = cost[:, s0] + bcost[j][qs0, p0].T
        c1 = cost[:, s1] + bcost[j][qs1, p1].T
        take1 = c1 < c0
        cost = np.where(take1, c1, c0)
        back[j] = take1
    s = np.argmin(cost, 1)
    rows = np.arange(R)
    ks = np.zeros((R, C), np.int64)
    st = np.zeros((R, C), np.int64)
    ps, pp = np.stack([s0, s1], 1), np.stack([p0, p1], 1)  # per state and choice: predecessor, parity
    for j in range(C - 1, -1, -1):
        b = back[j][rows, s]
        prev = ps[s, b]
        ks[:, j] = blev[quant[prev], pp[s, b], j, rows]
        s = prev
        st[:, j] = s
    return ks, quant[st]


def _estimate_bits(e: np.ndarray, tid: np.ndarray) -> float:
    """Bits of ``e`` under a zero-inflated geometric law fitted per table id (for choices only)."""
    a = np.abs(e).astype(np.float64)
    return _table_bits(np.bincount(tid, minlength=N_TABLES), np.bincount(tid, a > 0, minlength=N_TABLES),
                       np.bincount(tid, a, minlength=N_TABLES))


def _table_bits(n: np.ndarray, nz: np.ndarray, tot: np.ndarray) -> float:
    """:func:`_estimate_bits` from per-table counts of values, of non-zero values and the sums of
    their magnitudes (integer-valued: the same floats whether counted by NumPy or a kernel)."""
    n, nz, tot = (np.asarray(v, np.float64) for v in (n, nz, tot))
    p0 = (n - nz + 0.5) / (n + 1.0)
    mean = np.where(nz > 0, tot / np.maximum(nz, 1), 1.0)
    th = np.clip(1.0 - 1.0 / np.maximum(mean, 1.0), 1 / 256, 255 / 256)
    return float(np.sum(-(n - nz) * np.log2(p0) - nz * np.log2((1 - p0) / 2 * (1 - th))
                        - (tot - nz) * np.log2(th)))


def _alpha_sums(m: np.ndarray, p: int, ssum: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Per neighbour count g (0..4), the sums of m * ssum and of ssum^2 over pass ``p``'s
    positions with g neighbours (int64: exact, the same in compiled code)."""
    r0, c0, s, _ = L.PASSES[p]
    if jit.on():
        return jit.alpha_sums(np.ascontiguousarray(m, np.int64), r0, c0, s, ssum, n)
    ml = m[r0::s, c0::s]
    out = np.zeros((5, 2), np.int64)
    for g in range(1, 5):
        sel = n == g
        out[g] = int(np.sum(ml[sel] * ssum[sel])), int(np.sum(ssum[sel] * ssum[sel]))
    return out


def _alpha_candidate(sums: np.ndarray) -> int:
    """The least-squares prediction weight (in 1/32, within +-32) of a pass whose values ``m``
    are predicted as weight x the neighbours' mean ssum / n: round(32 sum(m ssum / n) /
    sum((ssum / n)^2)), from :func:`_alpha_sums` (integer sums per count, so every path gives
    the same float); 0 where every neighbour sum is 0."""
    num = sum(float(sums[g, 0]) / g for g in range(1, 5))
    den = sum(float(sums[g, 1]) / (g * g) for g in range(1, 5))
    return int(np.clip(round(32 * num / den), -32, 32)) if den > 0 else 0


def _contexts(m: np.ndarray, k: np.ndarray, qs: np.ndarray):
    """Per position of a band with reconstruction indices ``m`` (levels ``k``, quantisers ``qs``): its
    class and predicted level in Q0 and Q1, each pass from the values of earlier passes (what a
    decoder knows), with per pass the prediction weight (in 1/32 of the neighbours' mean value)
    that codes the levels in fewer estimated bits: 0 or the least-squares one. Returns (weights,
    class, predicted level in Q0, in Q1, per pass the neighbour sums and counts or None)."""
    cls = np.zeros(m.shape, np.int64)
    k0 = np.zeros(m.shape, np.int64)
    k1 = np.zeros(m.shape, np.int64)
    out, sums = [], []
    for p in range(len(L.PASSES)):
        rr, cc, c, ssum, n = L._context(m, p)
        lat = np.s_[L.PASSES[p][0]::L.PASSES[p][2], L.PASSES[p][1]::L.PASSES[p][2]]  # = [rr, cc], as a view
        sums.append((ssum, n) if rr.size else None)
        if rr.size == 0:
            out.append(0)
            continue
        a = 0
        cand = _alpha_candidate(_alpha_sums(m, p, ssum, n)) if L.PASSES[p][3] else 0
        if jit.on():  # per position in compiled code: the same levels and per-table counts
            best = None
            for al in (0, cand) if cand else (0,):
                *lev, cn, cnz, ctot = jit.predicted_levels(al, ssum, n, k[lat], qs[lat], c, N_TABLES)
                bits = _table_bits(cn, cnz, ctot) if cand else 0.0
                if best is None or bits < best:
                    a, best, levels = al, bits, lev
            cls[lat], k0[lat], k1[lat] = c, *levels
            out.append(a)
            continue
        if cand:
            best = None
            q1 = qs[lat] > 0
            tid = (2 * c + q1).reshape(-1)
            for al in (0, cand):
                mu = L._predict(al, ssum, n)
                bits = _estimate_bits((k[lat] - np.where(q1, _khat(mu, True), _khat(mu, False))).reshape(-1), tid)
                if best is None or bits < best:
                    a, best = al, bits
        out.append(a)
        mu = L._predict(a, ssum, n)
        cls[lat], k0[lat], k1[lat] = c, _khat(mu, False), _khat(mu, True)
    return out, cls, k0, k1, sums


def _residuals(m, k, qs):
    """What is coded for levels ``k`` in quantisers ``qs`` (values ``m``): the prediction weights,
    the differences e = k - predicted level, the table id of every position, and the contexts
    (class, predicted levels in Q0 and Q1, per pass the neighbour sums and counts)."""
    alphas, cls, k0, k1, sums = _contexts(m, k, qs)
    q1 = qs > 0
    return alphas, k - np.where(q1, k1, k0), 2 * cls + q1, (cls, k0, k1, sums)


def estimate_scalar_bits(q: np.ndarray) -> tuple[float, int]:
    """(estimated bits, tables) of scalar levels ``q`` (all in Q0) under the context model: the
    estimate the quantiser's first iteration starts from, for an encoder's choices (e.g. a
    packet tree) without running the trellis. Tables: one per used class and quantiser."""
    _, e, tid, _ = _residuals(2 * q, q, np.zeros_like(q))
    tid = tid.reshape(-1)
    return _estimate_bits(e.reshape(-1), tid), 2 * int(np.count_nonzero(np.bincount(tid, minlength=N_TABLES)))


def _quantise(xs: list[np.ndarray], lam: float, iterations: int = 2, machine=MACHINE):
    """Levels, quantisers, prediction weights, differences, table ids and table parameters of bands
    ``xs`` (units of delta, all of one shape).

    Each iteration runs the Viterbi on every chain of every pass at once (the chains of the
    passes of one lattice stride, of all bands, are rows of one array), with the contexts,
    predictions and tables of the previous iteration's levels (the first: the scalar quantiser at
    the union's mean spacing); what is coded is then computed from the final levels, exactly as
    a decoder will see them."""
    shape = xs[0].shape
    nb = len(xs)
    groups = {}
    for p in range(len(L.PASSES)):
        rr, cc = _lattice(shape, p)
        if rr.size and cc.size:
            groups.setdefault(cc.size, []).append((rr, cc))
    state = []
    for x in xs:
        k0 = np.rint(x / 2.0).astype(np.int64)
        st0 = np.zeros(shape, np.int64)
        m0 = 2 * k0
        alphas, e, tid, ctx = _residuals(m0, k0, st0)
        pr = {}
        for t, fit in _fit_tables(e, tid // 2).items():
            pr[2 * t] = pr[2 * t + 1] = fit
        state.append((ctx, pr))
    for _ in range(iterations):
        tab = np.concatenate([_Tables(pr).bits for _, pr in state])
        ctx = [c for c, _ in state]
        k = np.zeros((nb,) + shape, np.int64)
        st = np.zeros((nb,) + shape, np.int64)
        for lats in groups.values():
            sel = lambda arrs, off=0: np.concatenate([a[np.ix_(rr, cc)] + off * i  # noqa: E731
                                                      for i, a in enumerate(arrs) for rr, cc in lats])
            kp, sp = _viterbi(sel(xs), tab, sel([c[0] for c in ctx], L.N_CLASSES),
                              (sel([c[1] for c in ctx]), sel([c[2] for c in ctx])), lam, machine)
            pos = 0
            for i in range(nb):
                for rr, cc in lats:
                    n = rr.size
                    k[i][np.ix_(rr, cc)] = kp[pos:pos + n]
                    st[i][np.ix_(rr, cc)] = sp[pos:pos + n]
                    pos += n
        state = []
        out = []
        for i in range(nb):
            m = recon_index(k[i], st[i])
            alphas, e, tid, c = _residuals(m, k[i], st[i])
            pr = _fit_tables(e, tid)
            state.append((c, pr))
            out.append((k[i], st[i], alphas, e, tid, pr, c[3]))
    return out


def encode_dq(band: np.ndarray, step: float, lam: float = LAMBDA) -> tuple[bytes, L.LayerData]:
    """Code ``band`` (normalised units) with dependent quantisation at delta = SCALE * ``step``.
    Returns (blob, the layer a decoder reads: ``q`` the reconstruction indices; b"" and a layer
    without values when every level is zero). Layout: layer header (flag 9, delta), u64 used-table bitmap, per used table (p0 u16, theta u8), N_OFFSETS int8
    centroid offsets, one prediction weight per pass (int8), u32 word count, range-coder words
    (the signs too), u32 count and the raw bits (packed) of the buckets' low bits, in coding
    order."""
    return encode_dq_bands([band], [step], lam)[0]


def encode_dq_bands(bands: list[np.ndarray], steps: list[float], lam: float = LAMBDA
                    ) -> list[tuple[bytes, L.LayerData]]:
    """:func:`encode_dq` of several bands (bands of one shape share the Viterbi's steps)."""
    out: list = [None] * len(bands)
    groups: dict = {}
    for i, b in enumerate(bands):
        groups.setdefault(np.shape(b), []).append(i)
    for idx in groups.values():
        deltas = [float(np.float32(SCALE * steps[i])) for i in idx]
        xs = [np.asarray(bands[i], np.float64) / d for i, d in zip(idx, deltas)]
        for j, (i, res) in enumerate(zip(idx, _quantise(xs, lam))):
            out[i] = _pack(np.asarray(bands[i], np.float64), deltas[j], *res)
    return out


def _pack(band, delta, k, qs, alphas, e, tid, params, sums) -> tuple[bytes, L.LayerData]:
    """The blob of levels ``k`` in quantisers ``qs`` (see :func:`encode_dq`); ``sums``: per pass
    the neighbour sums and counts of :func:`_contexts`, for the sign contexts."""
    m = recon_index(k, qs)
    if not m.any():
        return b"", L.LayerData(None, delta, 0.0)
    offsets = L.centroid_offsets(m.reshape(-1), band.reshape(-1), delta)
    tables = _Tables(params)
    if jit.on():
        words, raw = _pack_compiled(k, qs, alphas, e, tid, sums, tables)
    else:
        words, raw = _pack_numpy(k, qs, alphas, e, tid, sums, tables)
    used = sum(1 << t for t in params)
    parts = [L._HEAD.pack(L._MAGIC, FLAG, delta, 0.0, 0), _TAIL.pack(used)]
    parts += [struct.pack("<HB", *params[t]) for t in sorted(params)]
    parts.append(struct.pack(f"<{L.N_OFFSETS}b", *offsets))
    parts.append(struct.pack(f"<{len(L.PASSES)}b", *alphas))
    parts += [struct.pack("<I", words.size), words.astype("<u4").tobytes(), struct.pack("<I", len(raw)),
              np.packbits(np.asarray(raw, np.uint8)).tobytes()]
    return b"".join(parts), L.LayerData(m, delta, 0.0, offsets)


def _pass_inputs(k, qs, alphas, e, tid, sums, p):
    """One pass's differences, table ids, quantisers and sign buckets (None: an empty pass)."""
    rr, cc = _lattice(k.shape, p)
    if rr.size == 0 or cc.size == 0:
        return None
    ep, tp = e[np.ix_(rr, cc)], tid[np.ix_(rr, cc)]
    qp = qs[np.ix_(rr, cc)]
    # the prediction's sign bucket for every position of the pass
    rb = _sign_bucket(alphas[p], *sums[p], recon_index(k[np.ix_(rr, cc)] - ep, qp))
    return ep, tp, qp, rb


def _pack_compiled(k, qs, alphas, e, tid, sums, tables):
    """:func:`_pack_numpy` in compiled code (:mod:`.jit`): the same words and raw bits."""
    cdf = jit.quantised_cdf(tables.prob)
    st, out = jit.encoder(2 * k.size)
    raw = np.zeros(31 * k.size, np.uint8)
    ri = 0
    signs = _Signs()
    for p in range(len(L.PASSES)):
        got = _pass_inputs(k, qs, alphas, e, tid, sums, p)
        if got is not None:
            ep, tp, qp, rb = (np.ascontiguousarray(a, np.int64) for a in got)
            ri = jit.encode_dq_pass(st, out, cdf, ep, tp, rb, qp, DIRECT, signs.neg, signs.tot, SIGN_HALVE, raw, ri)
    return jit.sealed(st, out), raw[:ri]


def _pack_numpy(k, qs, alphas, e, tid, sums, tables):
    """The range-coder words and the raw bits of a layer's passes (constriction, column by
    column)."""
    import constriction

    fam = constriction.stream.model.Categorical(perfect=False)
    enc = constriction.stream.queue.RangeEncoder()
    raw: list[int] = []
    signs = _Signs()
    for p in range(len(L.PASSES)):
        got = _pass_inputs(k, qs, alphas, e, tid, sums, p)
        if got is None:
            continue
        ep, tp, qp, rb = got
        for j in range(ep.shape[1]):
            a = np.abs(ep[:, j])
            sym = _symbol(a)
            enc.encode(sym.astype(np.int32), fam, tables.prob[tp[:, j]])
            for v, sy in zip(a[sym >= DIRECT].tolist(), sym[sym >= DIRECT].tolist()):
                nb = sy - DIRECT + 4  # the bits below the leading one, most significant first
                raw.extend((v >> i) & 1 for i in range(nb - 1, -1, -1))
            nz = a > 0
            neg = (ep[:, j][nz] < 0).astype(np.int64)
            if nz.any():
                ctx = _context_of(rb[:, j][nz], a[nz], qp[:, j][nz])
                enc.encode(neg.astype(np.int32), fam, signs.probs(ctx))
                signs.update(ctx, neg)
    return enc.get_compressed().astype(np.uint32), raw


def decode_dq(blob: bytes, shape: tuple[int, int]) -> L.LayerData:
    """Inverse of :func:`encode_dq` (raises ValueError / struct.error on a malformed blob)."""
    import constriction

    magic, flags, delta, bias_db, used0 = L._HEAD.unpack_from(blob, 0)
    if magic != L._MAGIC or flags != FLAG or bias_db or used0 or not np.isfinite(delta) or not 0 < delta < 1e3:
        raise ValueError("bad dependent-quantisation header")
    nxt, quant = MACHINE
    pos = L._HEAD.size
    (used,) = _TAIL.unpack_from(blob, pos)
    pos += _TAIL.size
    if used >> N_TABLES:
        raise ValueError("bad table bitmap")
    params = {}
    for t in range(N_TABLES):
        if used >> t & 1:
            params[t] = struct.unpack_from("<HB", blob, pos)
            pos += 3
    offsets = struct.unpack_from(f"<{L.N_OFFSETS}b", blob, pos)
    pos += L.N_OFFSETS
    alphas, pos = L.read_alphas(blob, pos)
    words, pos = L.read_words(blob, pos)
    (n_raw,) = struct.unpack_from("<I", blob, pos)
    pos += 4
    if pos + (n_raw + 7) // 8 != len(blob):
        raise ValueError("raw bits do not match the blob size")
    raw = np.unpackbits(np.frombuffer(blob, np.uint8, (n_raw + 7) // 8, pos))[:n_raw].astype(np.int64)
    tables = _Tables(params)
    compiled = jit.on()
    if compiled:  # the same integers (:mod:`.jit`): each pass, predictions included, in one call
        cdf, dec = jit.quantised_cdf(tables.prob), jit.decoder(words)
    else:
        cdf, dec = None, constriction.stream.queue.RangeDecoder(words)
    m = np.zeros(shape, np.int64)  # reconstruction indices: the contexts and predictions
    ri = 0
    signs = _Signs()
    for p in range(len(L.PASSES)):
        rr, cc, cls, ssum, n = L._context(m, p)
        if rr.size == 0:
            continue
        if compiled:
            r0, c0, step, _ = L.PASSES[p]
            ri = jit.decode_dq_pass(dec, words, cdf, *(np.ascontiguousarray(a, np.int64) for a in (cls, ssum, n)),
                                    int(alphas[p]), nxt, quant, DIRECT, signs.neg, signs.tot, SIGN_HALVE, raw, ri,
                                    m, r0, c0, step)
            if ri == -1:
                raise ValueError("invalid range-coder data")
            if ri == -2:
                raise ValueError("raw bits are short")
        else:
            m[rr, cc], ri = _decode_pass(dec, tables, signs, raw, ri, alphas[p], cls, ssum, n)
        if np.abs(m).max() >= 2**40:
            raise ValueError("value out of range")
    if ri != raw.size:
        raise ValueError("unused raw bits")
    return L.LayerData(m, delta, 0.0, offsets)


def _decode_pass(dec, tables, signs, raw, ri, alpha, cls, ssum, n) -> tuple[np.ndarray, int]:
    """One pass of :func:`decode_dq` with constriction, every row of a lattice column at once:
    its reconstruction indices and the raw-bit position after it."""
    import constriction

    nxt, quant = MACHINE
    fam = constriction.stream.model.Categorical(perfect=False)
    mu = L._predict(alpha, ssum, n)
    k0, k1 = _khat(mu, False), _khat(mu, True)
    # the prediction's sign bucket in each quantiser, for every position
    rb0 = _sign_bucket(alpha, ssum, n, recon_index(k0, np.zeros_like(k0)))
    rb1 = _sign_bucket(alpha, ssum, n, recon_index(k1, np.ones_like(k1)))
    st = np.zeros(cls.shape[0], np.int64)
    kp = np.zeros(cls.shape, np.int64)
    sp = np.zeros(cls.shape, np.int64)
    for j in range(cls.shape[1]):
        q1 = quant[st]
        a = np.asarray(dec.decode(fam, tables.prob[2 * cls[:, j] + q1]), np.int64)
        big = a >= DIRECT
        if big.any():  # buckets: 2^nb + nb raw bits
            nb = a[big] - DIRECT + 4
            start = ri + np.concatenate([[0], np.cumsum(nb)[:-1]])
            ri += int(nb.sum())
            if ri > raw.size:
                raise ValueError("raw bits are short")
            v = np.ones(nb.size, np.int64)
            for i in range(int(nb.max())):
                live = i < nb
                v = np.where(live, (v << 1) | raw[np.where(live, start + i, 0)], v)
            a[big] = v
        nz = a > 0
        kh = np.where(q1, k1[:, j], k0[:, j])
        if nz.any():
            ctx = _context_of(np.where(q1, rb1[:, j], rb0[:, j])[nz], a[nz], q1[nz])
            neg = np.asarray(dec.decode(fam, signs.probs(ctx)), np.int64)
            signs.update(ctx, neg)
            a[nz] = np.where(neg == 1, -a[nz], a[nz])
        k = kh + a
        kp[:, j] = k
        sp[:, j] = q1
        st = nxt[st, k & 1]
    return recon_index(kp, sp), ri
