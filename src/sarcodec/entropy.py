"""Entropy models, integer-exact parameter path, and table-driven range coding.

Why this module exists (instead of CompressAI's entropy models + rANS):
a learned codec decodes correctly only if the decoder rebuilds *exactly* the probability tables the
encoder used. CompressAI computes the Gaussian scales with float convolutions at both ends, so a
GPU decode (different kernels, TF32, reduction order) picks a different scale index for a few
symbols and the stream desynchronises: NaN or collapsed images (we measured 11 of 70 pairs). Here

* every probability table is an **integer frequency table**, computed once by ``update()`` on the
  CPU in float64 and then stored in the checkpoint (never recomputed at decode time);
* the hyper-synthesis ``h_s`` that selects the table for each latent runs in **fixed point**:
  integer weights and activations held in float64, combined by im2col + matmul, so every partial
  sum is an integer below 2**53 and the result is the same on any device, thread count or BLAS;
* symbols are coded with ``constriction``'s range coder (Rust, deterministic integer arithmetic).

Data flow of the default latent codec (mean-scale hyperprior, Minnen et al. 2018 without context)::

      y ──h_a──▶ z ──round──▶ ẑ ══EntropyBottleneck (per-channel tables)══▶ bytes
                              │
                              └──h_s (fixed point, exact)──▶ μ, table index
      y ──(y-μ) round──▶ q ══GaussianConditional (scale tables)══▶ bytes ;  ŷ = q + μ
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import CorruptedFileError, InputError, ModelError

PROB_BITS = 16  # integer frequency tables sum to about 2**16
LIKELIHOOD_BOUND = 1e-9


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def quantize(x: torch.Tensor, mode: str, means: torch.Tensor | None = None) -> torch.Tensor:
    """'noise': additive U(-0.5, 0.5) (training proxy); 'ste': rounding with straight-through
    gradient; 'round': hard rounding. Rounding is around ``means`` when given."""
    if mode == "noise":
        return x + torch.empty_like(x).uniform_(-0.5, 0.5)
    if means is not None:
        x = x - means
    x = _ste_round(x) if mode == "ste" else torch.round(x)
    return x + means if means is not None else x


def _quantize_freqs(pmf: np.ndarray) -> np.ndarray:
    """Probabilities -> strictly positive integer frequencies (deterministic, float64)."""
    pmf = np.clip(np.asarray(pmf, dtype=np.float64), 0.0, None)
    pmf = pmf / max(pmf.sum(), 1e-300)
    return np.maximum(1, np.rint(pmf * (1 << PROB_BITS))).astype(np.int64)


class TableSet:
    """A list of integer frequency tables, each an alphabet ``{0..n-1}`` whose last symbol is an
    *escape*: values outside the table's range are sent as the escape symbol plus a raw int32."""

    def __init__(self, freqs: Sequence[np.ndarray], offsets: Sequence[int]):
        self.freqs = [np.asarray(f, dtype=np.int64) for f in freqs]
        self.offsets = np.asarray(offsets, dtype=np.int64)  # symbol = value - offset
        self._models: list | None = None

    def __len__(self) -> int:
        return len(self.freqs)

    def __getstate__(self) -> dict:  # constriction models are rebuilt on demand, not pickled
        return {**self.__dict__, "_models": None}

    @property
    def sizes(self) -> np.ndarray:
        return np.array([len(f) - 1 for f in self.freqs], dtype=np.int64)  # without escape

    def models(self) -> list:
        if self._models is None:
            import constriction

            Cat = constriction.stream.model.Categorical
            self._models = [Cat(f.astype(np.float64), perfect=False) for f in self.freqs]
        return self._models

    # packing into tensors for state_dict / checkpoints
    def to_tensors(self) -> dict[str, torch.Tensor]:
        lengths = torch.tensor([len(f) for f in self.freqs], dtype=torch.int64)
        flat = torch.from_numpy(np.concatenate(self.freqs).astype(np.int64)) if self.freqs else torch.zeros(0, dtype=torch.int64)
        return {"lengths": lengths, "flat": flat, "offsets": torch.from_numpy(self.offsets.copy())}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "TableSet":
        lengths = t["lengths"].tolist()
        flat = t["flat"].numpy()
        pos = np.cumsum([0] + lengths)
        return cls([flat[pos[i]:pos[i + 1]] for i in range(len(lengths))], t["offsets"].numpy())


def channel_index(shape: tuple[int, ...]) -> np.ndarray:
    """Table index per element of a (B, C, H, W) array: its channel (one table per channel)."""
    b, c, h, w = shape
    return np.broadcast_to(np.arange(c).reshape(1, c, 1, 1), shape)


def encode_per_channel(values: np.ndarray, tables: "TableSet") -> bytes:
    """Range-code a (B, C, H, W) integer array with one table per channel (factorized prior)."""
    return encode_symbols(values, channel_index(values.shape), tables)


def decode_per_channel(data: bytes, shape: tuple[int, ...], tables: "TableSet") -> tuple[np.ndarray, int]:
    """Inverse of :func:`encode_per_channel`: (values of ``shape``, bytes consumed)."""
    vals, used = decode_symbols(data, channel_index(shape), tables)
    return vals.reshape(shape), used


def encode_symbols(values: np.ndarray, table_idx: np.ndarray, tables: TableSet) -> bytes:
    """Range-code integer ``values``, each with the table ``table_idx`` selects.

    Layout: u32 n_words | range-coder words (u32 LE) | u32 n_escapes | escapes (i32 LE).
    Symbols are coded grouped by table, in increasing table order, each group in raster order:
    the decoder recovers the grouping from the same (exact) indices.
    """
    import constriction

    values = np.asarray(values, dtype=np.int64).reshape(-1)
    table_idx = np.asarray(table_idx, dtype=np.int64).reshape(-1)
    enc = constriction.stream.queue.RangeEncoder()
    models = tables.models()
    sizes = tables.sizes
    escapes: list[np.ndarray] = []
    order = stable_order(table_idx, len(tables))
    sorted_idx = table_idx[order]
    bounds = np.flatnonzero(np.diff(sorted_idx)) + 1
    for grp in np.split(order, bounds):
        if grp.size == 0:
            continue
        t = int(table_idx[grp[0]])
        sym = values[grp] - tables.offsets[t]
        out = (sym < 0) | (sym >= sizes[t])
        if out.any():
            escapes.append(values[grp][out])
            sym = np.where(out, sizes[t], sym)
        enc.encode(sym.astype(np.int32), models[t])
    words = enc.get_compressed().astype("<u4")
    esc = np.concatenate(escapes).astype("<i4") if escapes else np.zeros(0, "<i4")
    if esc.size and (np.abs(np.concatenate(escapes)) >= 2**31).any():  # pragma: no cover
        raise ModelError("latent value out of int32 range: the model diverged")
    return (
        np.uint32(words.size).astype("<u4").tobytes() + words.tobytes()
        + np.uint32(esc.size).astype("<u4").tobytes() + esc.tobytes()
    )


def stable_order(idx: np.ndarray, n: int) -> np.ndarray:
    """``np.argsort(idx, kind="stable")`` of table indices in [0, n): as uint8 / uint16 when they
    fit, where numpy's stable sort is a radix sort (same order, several times faster)."""
    if idx.size and 0 <= idx.min() and idx.max() < n:
        if n <= 1 << 8:
            return np.argsort(idx.astype(np.uint8), kind="stable")
        if n <= 1 << 16:
            return np.argsort(idx.astype(np.uint16), kind="stable")
    return np.argsort(idx, kind="stable")


def fill_escapes(vals: np.ndarray, is_esc: np.ndarray, esc: np.ndarray, pos: int) -> int:
    """Put the next raw escape values ``esc[pos:]`` where ``is_esc``; returns the new position.
    CorruptedFileError when the stream has fewer escapes than its symbols say."""
    k = int(is_esc.sum())
    if k:
        if pos + k > esc.size:
            raise CorruptedFileError("stream is corrupted (escape values missing)")
        vals[is_esc] = esc[pos:pos + k]
    return pos + k


def decode_symbols(data: bytes, table_idx: np.ndarray, tables: TableSet) -> tuple[np.ndarray, int]:
    """Inverse of :func:`encode_symbols`. Returns (values in raster order, bytes consumed)."""
    import constriction

    table_idx = np.asarray(table_idx, dtype=np.int64).reshape(-1)
    mv = memoryview(data)
    try:
        n_words = int(np.frombuffer(mv[:4], "<u4")[0])
        words = np.frombuffer(mv[4:4 + 4 * n_words], "<u4").astype(np.uint32)
        pos = 4 + 4 * n_words
        n_esc = int(np.frombuffer(mv[pos:pos + 4], "<u4")[0])
        esc = np.frombuffer(mv[pos + 4:pos + 4 + 4 * n_esc], "<i4").astype(np.int64)
        if words.size != n_words or esc.size != n_esc:
            raise ValueError("short stream")
    except (ValueError, IndexError) as e:
        raise CorruptedFileError(f"latent stream is malformed ({e})") from e
    used = pos + 4 + 4 * n_esc
    dec = constriction.stream.queue.RangeDecoder(words)
    models = tables.models()
    sizes = tables.sizes
    out = np.empty(table_idx.size, dtype=np.int64)
    order = stable_order(table_idx, len(tables))
    bounds = np.flatnonzero(np.diff(table_idx[order])) + 1
    e = 0
    for grp in np.split(order, bounds):
        if grp.size == 0:
            continue
        t = int(table_idx[grp[0]])
        sym = np.asarray(dec.decode(models[t], grp.size), dtype=np.int64)
        is_esc = sym == sizes[t]
        vals = sym + tables.offsets[t]
        e = fill_escapes(vals, is_esc, esc, e)
        out[grp] = vals
    return out, used


# ----------------------------------------------------------------------------------------------
# Factorized prior (Ballé et al. 2018, appendix 6.1), as in CompressAI's EntropyBottleneck
# ----------------------------------------------------------------------------------------------
class EntropyBottleneck(nn.Module):
    """Per-channel learned, non-parametric density for ``z`` (or ``y`` in the factorized codec).

    ``forward`` returns (ẑ, likelihoods); coding uses integer tables built by ``update()``.
    Values are quantised by plain rounding, so ẑ is an integer tensor that the fixed-point
    hyper-synthesis consumes without any float offset.
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0,
                 tail_mass: float = 1e-9):
        super().__init__()
        self.channels = channels
        self.tail_mass = tail_mass
        f = (1,) + tuple(filters) + (1,)
        scale = init_scale ** (1.0 / (len(f) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(f) - 1):
            init = math.log(math.expm1(1.0 / scale / f[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, f[i + 1], f[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, f[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(f) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, f[i + 1], 1)))
        q = torch.tensor([-init_scale, 0.0, init_scale]).repeat(channels, 1, 1)
        self.quantiles = nn.Parameter(q)
        self.tables: TableSet | None = None

    def _logits_cumulative(self, x: torch.Tensor, channels: slice = slice(None), stop_gradient: bool = False) -> torch.Tensor:
        # x: (C, 1, N) for the selected channels; stop_gradient: the density's parameters get no
        # gradient (the auxiliary loss moves only the quantiles)
        sg = (lambda t: t.detach()) if stop_gradient else (lambda t: t)
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            x = torch.matmul(F.softplus(sg(m[channels])), x) + sg(b[channels])
            if i < len(self.factors):
                x = x + torch.tanh(sg(self.factors[i][channels])) * torch.tanh(x)
        return x

    def _likelihood(self, x: torch.Tensor) -> torch.Tensor:
        lower = self._logits_cumulative(x - 0.5)
        upper = self._logits_cumulative(x + 0.5)
        sign = -torch.sign(lower + upper).detach()
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """Likelihood of values ``x`` of shape (B, C, H, W)."""
        b, c, h, w = x.shape
        v = x.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lik = self._likelihood(v).reshape(c, b, h, w).permute(1, 0, 2, 3)
        return lik.clamp_min(LIKELIHOOD_BOUND)

    def forward(self, x: torch.Tensor, training: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        training = self.training if training is None else training
        # likelihood under noise (rate proxy); output rounded with straight-through gradients
        x_noisy = quantize(x, "noise") if training else torch.round(x)
        lik = self.likelihood(x_noisy)
        return (_ste_round(x) if training else torch.round(x)), lik

    def aux_loss(self) -> torch.Tensor:
        """Pulls ``quantiles`` to the tail_mass/2, 0.5, 1-tail_mass/2 points of the density. Only the
        quantiles get gradients (as in CompressAI): the density is the rate term's to shape, and
        under DDP the auxiliary backward must not touch the parameters DDP synchronises."""
        target = math.log(2.0 / self.tail_mass - 1.0)
        logits = self._logits_cumulative(self.quantiles, stop_gradient=True)  # (C, 1, 3)
        tgt = torch.tensor([-target, 0.0, target], device=logits.device, dtype=logits.dtype)
        return torch.abs(logits - tgt).sum()

    @torch.no_grad()
    def update(self) -> None:
        """Freeze integer tables (CPU, float64). Call after training, before coding."""
        q = self.quantiles.detach().double().cpu()
        lo = torch.floor(torch.minimum(q[:, 0, 0], q[:, 0, 1] - 1)).long()
        hi = torch.ceil(torch.maximum(q[:, 0, 2], q[:, 0, 1] + 1)).long()
        freqs, offsets = [], []
        module64 = _double_copy(self)
        for c in range(self.channels):
            a, b = int(lo[c]), int(hi[c])
            b = min(b, a + 4096)  # bound table size even for a badly trained density
            k = torch.arange(a, b + 1, dtype=torch.float64).view(1, 1, -1)
            lower = module64._logits_cumulative(k - 0.5, slice(c, c + 1))
            upper = module64._logits_cumulative(k + 0.5, slice(c, c + 1))
            sign = -torch.sign(lower + upper)
            pmf = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).view(-1).numpy()
            tail = max(1.0 - float(pmf.sum()), 0.0)
            freqs.append(_quantize_freqs(np.append(pmf, max(tail, 2.0 ** -PROB_BITS))))
            offsets.append(a)
        self.tables = TableSet(freqs, offsets)

    def compress(self, z_int: np.ndarray) -> bytes:
        return encode_per_channel(z_int, self._tables())

    def decompress(self, data: bytes, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
        return decode_per_channel(data, shape, self._tables())

    def _tables(self) -> TableSet:
        if self.tables is None:
            raise ModelError("entropy tables not built: call model.update() (or load a checkpoint) first")
        return self.tables


def _double_copy(m: nn.Module) -> nn.Module:
    import copy

    c = copy.copy(m)
    c._parameters = {}
    c._modules = {k: _double_copy(v) for k, v in m._modules.items()}
    for k, p in m._parameters.items():
        c._parameters[k] = None if p is None else nn.Parameter(p.detach().double().cpu(), requires_grad=False)
    return c


# ----------------------------------------------------------------------------------------------
# Gaussian conditional with a fixed log-spaced scale table
# ----------------------------------------------------------------------------------------------
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64


def scale_table() -> np.ndarray:
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


LOG_SCALE_MIN = math.log(SCALE_MIN)
LOG_SCALE_STEP = (math.log(SCALE_MAX) - math.log(SCALE_MIN)) / (SCALE_LEVELS - 1)


def gaussian_likelihood(y: torch.Tensor, means: torch.Tensor | None, log_scales: torch.Tensor) -> torch.Tensor:
    """P(y) of a unit-width bin under N(mean, exp(log_scale)^2), scale clamped to the table."""
    scales = torch.exp(log_scales.clamp(LOG_SCALE_MIN, math.log(SCALE_MAX)))
    v = torch.abs(y - means) if means is not None else torch.abs(y)
    upper = 0.5 * torch.erfc(-(0.5 - v) / (scales * math.sqrt(2.0)))
    lower = 0.5 * torch.erfc(-(-0.5 - v) / (scales * math.sqrt(2.0)))
    return (upper - lower).clamp_min(LIKELIHOOD_BOUND)


def gaussian_tables(tail: float = 6.5) -> TableSet:
    """Integer tables for zero-mean discretised Gaussians at each table scale."""
    from scipy.special import ndtr

    freqs, offsets = [], []
    for s in scale_table():
        r = max(2, int(math.ceil(tail * s)))
        k = np.arange(-r, r + 1, dtype=np.float64)
        pmf = ndtr((k + 0.5) / s) - ndtr((k - 0.5) / s)
        t = max(1.0 - float(pmf.sum()), 0.0)
        freqs.append(_quantize_freqs(np.append(pmf, max(t, 2.0 ** -PROB_BITS))))
        offsets.append(-r)
    return TableSet(freqs, offsets)


# ----------------------------------------------------------------------------------------------
# Fixed-point (integer-exact) evaluation of a conv / transposed-conv / ReLU stack
# ----------------------------------------------------------------------------------------------
ACT_BITS = 10  # fractional bits of activations
ACT_LIMIT = float(2 ** 22)  # |activation| <= 4096 in real units
EXACT_LIMIT = float(2 ** 52)


class FixedPointNet:
    """Integer-exact twin of a float ``nn.Sequential`` of Conv2d / ConvTranspose2d / ReLU /
    LeakyReLU(slope 2^-k) layers.

    Activations are integers a (real value a / 2**ACT_BITS); weights integers w (real w / 2**wb,
    wb chosen per layer to keep |w| < 2**15). Each layer computes ``floor((w * a + b) / 2**wb)``
    with im2col + matmul in float64: all operands and partial sums are integers < 2**52, hence
    exact in any summation order, on any device and BLAS.
    """

    def __init__(self, seq: nn.Sequential):
        self.layers: list[tuple] = []
        for m in seq:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                w = m.weight.detach().double().cpu()
                if isinstance(m, nn.ConvTranspose2d):
                    # transposed conv == conv over a zero-stuffed input with the flipped kernel
                    w = w.transpose(0, 1).flip(2, 3)
                maxw = float(w.abs().max().clamp_min(1e-12))
                wb = int(min(20, max(0, 14 - math.ceil(math.log2(maxw)))))
                wq = torch.round(w * 2.0**wb)
                b = m.bias.detach().double().cpu() if m.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
                bq = torch.round(b * 2.0 ** (wb + ACT_BITS))
                k = w.shape[-1]
                bound = ACT_LIMIT * float(wq.abs().sum(dim=(1, 2, 3)).max()) + float(bq.abs().max())
                if bound >= EXACT_LIMIT:  # pragma: no cover - needs absurd weights
                    raise ModelError("hyper-synthesis weights too large for exact fixed-point evaluation")
                if isinstance(m, nn.ConvTranspose2d):
                    self.layers.append(("deconv", wq, bq, wb, m.stride[0], m.padding[0], m.output_padding[0], k))
                else:
                    self.layers.append(("conv", wq, bq, wb, m.stride[0], m.padding[0], 0, k))
            elif isinstance(m, nn.ReLU):
                self.layers.append(("relu",))
            elif isinstance(m, nn.LeakyReLU):
                slope = m.negative_slope
                shift = round(-math.log2(slope)) if slope > 0 else None
                if shift is None or abs(2.0**-shift - slope) > 1e-12:
                    raise ModelError("fixed-point path needs LeakyReLU slopes that are powers of two")
                self.layers.append(("lrelu", shift))
            elif isinstance(m, nn.Identity):
                continue
            else:
                raise ModelError(f"layer {type(m).__name__} has no fixed-point implementation")

    @staticmethod
    def _conv(a: torch.Tensor, wq: torch.Tensor, bq: torch.Tensor, stride: int, pad: int) -> torch.Tensor:
        bsz, cin, h, w = a.shape
        cout, _, kh, kw = wq.shape  # rectangular for the phases of a transposed conv
        cols = F.unfold(a, (kh, kw), padding=pad, stride=stride)  # (B, Cin*kh*kw, L)
        ho = (h + 2 * pad - kh) // stride + 1
        wo = (w + 2 * pad - kw) // stride + 1
        out = torch.matmul(wq.reshape(cout, -1), cols) + bq.view(1, cout, 1)
        return out.reshape(bsz, cout, ho, wo)

    @classmethod
    def _deconv(cls, a: torch.Tensor, wq: torch.Tensor, bq: torch.Tensor, s: int, pad: int, opad: int,
                k: int) -> torch.Tensor:
        """Transposed conv = conv of the flipped kernel ``wq`` over the input zero-stuffed by ``s``
        and padded by k - 1 - pad, computed per output phase (polyphase): phase r of an axis only
        meets the taps u = (p - r) mod s, s + ..., so each phase is a small dense conv of ``a`` and
        the s^2 - 1 zeros of every stuffed block are never multiplied. Every output is the same
        sum of the same integer products as the zero-stuffed conv, so the result is identical."""
        bsz, _, h, w = a.shape
        cout = wq.shape[0]
        p = k - 1 - pad
        ho, wo = (h - 1) * s + 1 + 2 * p + opad - k + 1, (w - 1) * s + 1 + 2 * p + opad - k + 1
        out = torch.empty(bsz, cout, ho, wo, dtype=torch.float64)

        def axis(r: int, n_in: int, n_out: int) -> tuple[int, int, int, int, int]:
            u0 = (p - r) % s
            taps = len(range(u0, k, s))
            d0 = (r + u0 - p) // s  # input offset of the first tap for output index r (phase index 0)
            n = len(range(r, n_out, s))  # outputs of this phase
            lo, hi = d0, (n - 1) + d0 + taps - 1  # input indices touched
            return u0, n, max(0, -lo), max(0, hi - (n_in - 1)), max(0, lo)

        for ry in range(s):
            uy, ny, ty, by, sy = axis(ry, h, ho)
            for rx in range(s):
                ux, nx, tx, bx, sx = axis(rx, w, wo)
                if ny == 0 or nx == 0:
                    continue
                sub = wq[:, :, uy::s, ux::s]
                if 0 in sub.shape[-2:]:  # k < s: this phase meets no tap, only the bias
                    out[:, :, ry::s, rx::s] = bq.view(1, cout, 1, 1)
                    continue
                src = F.pad(a[:, :, sy:, sx:], (tx, bx, ty, by))
                out[:, :, ry::s, rx::s] = cls._conv(src, sub, bq, 1, 0)[:, :, :ny, :nx]
        return out

    def __call__(self, x_int: torch.Tensor) -> torch.Tensor:
        """x_int: integer-valued tensor of *real* values (e.g. ẑ). Returns integer activations in
        units of 2**-ACT_BITS as float64 (exact integers)."""
        a = x_int.detach().double().cpu() * 2.0**ACT_BITS
        for layer in self.layers:
            kind = layer[0]
            if kind == "relu":
                a = torch.clamp_min(a, 0.0)
                continue
            if kind == "lrelu":
                a = torch.where(a >= 0, a, torch.floor(a / 2.0 ** layer[1]))
                continue
            _, wq, bq, wb, stride, pad, opad, k = layer
            if kind == "deconv":
                acc = self._deconv(a, wq, bq, stride, pad, opad, k)
            else:
                acc = self._conv(a, wq, bq, stride, pad)
            a = torch.floor(acc / 2.0**wb).clamp(-ACT_LIMIT, ACT_LIMIT)
        return a


# Latent quantisation step Δ = step / STEP_ONE (a dyadic rational): symbols q = round((y - μ) / Δ),
# ŷ = μ + q·Δ, coded with the table of scale σ/Δ. Exact: q·step and μ·2^ACT_BITS are integers, so ŷ
# is the same float on every machine. Δ < 1 spends more bits on a model (higher quality), Δ > 1
# fewer: a continuous quality knob between and beyond the trained rate points.
STEP_ONE = 64
STEP_MIN, STEP_MAX = 16, 512  # Δ in [0.25, 8]


def check_step(step: int) -> int:
    """A latent step numerator (Δ = step / STEP_ONE) within [STEP_MIN, STEP_MAX], else InputError."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not STEP_MIN <= step <= STEP_MAX:
        raise InputError(f"latent step must be an integer in [{STEP_MIN}, {STEP_MAX}] (Δ = step/{STEP_ONE}), "
                         f"got {step!r}")
    return int(step)


def step_from_delta(delta: float) -> int:
    """The nearest step numerator of a quantisation step Δ (a float), within the allowed range."""
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not math.isfinite(delta) or delta <= 0:
        raise InputError(f"quantisation step must be a positive number, got {delta!r}")
    return int(min(STEP_MAX, max(STEP_MIN, round(delta * STEP_ONE))))


def log_step_fixed(step: int) -> int:
    """ln(step / STEP_ONE) in units of 2**-ACT_BITS, rounded: the shift of the log-scale that
    selects the tables of σ/Δ. Integers from a table computed once; no value lies within 1e-4 of a
    rounding boundary (tested), so every machine's libm gives the same table."""
    return _LOG_STEP_FX[step - STEP_MIN]


_LOG_STEP_FX = tuple(round(math.log(s / STEP_ONE) * 2**ACT_BITS) for s in range(STEP_MIN, STEP_MAX + 1))


def scale_index_from_fixed(log_scale_fx: torch.Tensor) -> np.ndarray:
    """Fixed-point log-scale (units 2**-ACT_BITS) -> nearest table index, in integer arithmetic."""
    s = log_scale_fx.to(torch.int64)
    s0 = round(LOG_SCALE_MIN * 2**ACT_BITS)
    d = round(LOG_SCALE_STEP * 2**ACT_BITS)
    idx = torch.div(2 * (s - s0) + d, 2 * d, rounding_mode="floor")
    return idx.clamp(0, SCALE_LEVELS - 1).numpy()
