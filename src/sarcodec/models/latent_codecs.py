"""Latent codecs: quantisation + entropy model of the latent ``y``; plug into any transform.

``hyperprior`` (default; Minnen et al. 2018 mean-scale, without autoregressive context)::

    y ─h_a─▶ z ─round─▶ ẑ ══EntropyBottleneck══▶ bytes
                         └─h_s (fixed point)─▶ μ, log σ ─▶ table index
    y ─round(y-μ)─▶ q ══GaussianConditional══▶ bytes        ŷ = q + μ

``scale-hyperprior`` (Ballé et al. 2018): as above with μ = 0 and h_a fed |y|.

``factorized`` (Ballé et al. 2017): ŷ = round(y) coded with a per-channel EntropyBottleneck.

The hyperprior coders also take a quantisation step Δ = step / 64 (``coder(step)``, continuous
quality): q = round((y - μ) / Δ), ŷ = μ + qΔ, tables of σ/Δ; see :mod:`sarcodec.entropy`.

``forward`` returns ŷ (straight-through rounded, used by g_s) and likelihoods (from additive
noise, the rate proxy). ``compress``/``decompress`` work on one batch element at a time so that
every tile is independently decodable.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..entropy import (
    ACT_BITS,
    STEP_ONE,
    EntropyBottleneck,
    FixedPointNet,
    TableSet,
    decode_per_channel,
    decode_symbols,
    encode_per_channel,
    encode_symbols,
    gaussian_likelihood,
    gaussian_tables,
    check_step,
    log_step_fixed,
    quantize,
    scale_index_from_fixed,
)
from ..errors import CorruptedFileError, ModelError
from .blocks import conv, deconv


def margins(margin: int | tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) latents of context around a tile from an int or a 4-tuple."""
    return (margin,) * 4 if isinstance(margin, int) else tuple(margin)


def split_params(out: torch.Tensor, means: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """h_s output -> (μ or None, log σ): the float model and the fixed-point coder split alike."""
    if means:
        mu, ls = out.chunk(2, dim=1)
        return mu, ls
    return None, out


class FactorizedCoder:
    """The exact half of the factorized latent codec: integer tables + range coding. A plain,
    picklable object (no nn.Module), so worker processes can hold a copy (:mod:`sarcodec.parallel`)."""

    def __init__(self, tables: TableSet):
        self.tables = tables

    def encode(self, y: np.ndarray, z_int: np.ndarray | None = None) -> bytes:
        return encode_per_channel(np.round(np.asarray(y, dtype=np.float64)).astype(np.int64), self.tables)

    def decode(self, data: bytes, y_shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
        vals, used = decode_per_channel(data, y_shape, self.tables)
        return vals.astype(np.float32), used


class FactorizedLatentCodec(nn.Module):
    stride = 1

    def __init__(self, latent_channels: int, **_: object):
        super().__init__()
        self.entropy_bottleneck = EntropyBottleneck(latent_channels)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y_hat, lik = self.entropy_bottleneck(y)
        return y_hat, {"y": lik}

    @torch.no_grad()
    def quantized(self, y: torch.Tensor, delta: float | torch.Tensor = 1.0) -> torch.Tensor:
        """ŷ as the coder forms it (see :meth:`HyperpriorLatentCodec.quantized`)."""
        return torch.round(y / delta) * delta

    def update(self) -> None:
        self.entropy_bottleneck.update()

    def coder(self, step: int = STEP_ONE) -> FactorizedCoder:
        if step != STEP_ONE:  # its tables are histograms of y at unit step: nothing to rescale
            raise ModelError("a factorized latent codec has no quantisation step other than 1 "
                             "(continuous quality needs a hyperprior model)")
        return FactorizedCoder(self.entropy_bottleneck._tables())

    def prepare(self, y: torch.Tensor, y_ctx: torch.Tensor | None = None, margin: int = 0
                ) -> tuple[np.ndarray, None]:
        """What the coder needs for one element: y as float32 on the CPU."""
        return y.detach().float().cpu().numpy(), None

    def compress(self, y: torch.Tensor, y_ctx: torch.Tensor | None = None, margin: int = 0) -> bytes:
        return self.coder().encode(*self.prepare(y, y_ctx, margin))

    def decompress(self, data: bytes, y_shape: tuple[int, ...]) -> tuple[torch.Tensor, int]:
        y_hat, used = self.coder().decode(data, y_shape)
        return torch.from_numpy(y_hat), used

    def tables_state(self) -> dict:
        return {"eb": self.entropy_bottleneck.tables.to_tensors()} if self.entropy_bottleneck.tables else {}

    def load_tables_state(self, state: dict) -> None:
        self.entropy_bottleneck.tables = TableSet.from_tensors(state["eb"])


class HyperpriorLatentCodec(nn.Module):
    stride = 4  # of the hyper-latent relative to y

    def __init__(self, latent_channels: int, hyper_channels: int = 64, means: bool = True):
        super().__init__()
        c, n = latent_channels, hyper_channels
        self.means = means
        self.h_a = nn.Sequential(
            conv(c, n, 3, 1), nn.LeakyReLU(0.125), conv(n, n, 5, 2), nn.LeakyReLU(0.125), conv(n, n, 5, 2),
        )
        # only Conv/ConvTranspose/ReLU here: h_s has an exact fixed-point twin (FixedPointNet)
        self.h_s = nn.Sequential(
            deconv(n, n, 5, 2), nn.ReLU(), deconv(n, n * 3 // 2, 5, 2), nn.ReLU(),
            conv(n * 3 // 2, 2 * c if means else c, 3, 1),
        )
        self.entropy_bottleneck = EntropyBottleneck(n)
        self._fx: FixedPointNet | None = None
        self._gtables: TableSet | None = None

    def _params(self, out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        return split_params(out, self.means)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = self.h_a(y if self.means else torch.abs(y))
        z_hat, lik_z = self.entropy_bottleneck(z)
        mu, ls = self._params(self.h_s(z_hat))
        if self.training:
            lik_y = gaussian_likelihood(quantize(y, "noise"), mu, ls)
            y_hat = quantize(y, "ste", mu)
        else:
            y_hat = quantize(y, "round", mu)
            lik_y = gaussian_likelihood(y_hat, mu, ls)
        return y_hat, {"y": lik_y, "z": lik_z}

    @torch.no_grad()
    def quantized(self, y: torch.Tensor, delta: float | torch.Tensor = 1.0) -> torch.Tensor:
        """ŷ = μ + round((y - μ) / Δ)·Δ as the coder forms it, in float (μ from the float h_s, which
        the fixed-point coder matches to ~1e-4): what a synthesis sees, for fitting one to frozen
        latents. ``delta``: a number or one per batch element, shape (B, 1, 1, 1)."""
        z_hat = torch.round(self.h_a(y if self.means else torch.abs(y)))
        mu, _ = self._params(self.h_s(z_hat))
        r = y if mu is None else y - mu
        q = torch.round(r / delta) * delta
        return q if mu is None else q + mu

    def update(self) -> None:
        self.entropy_bottleneck.update()
        self._fx = FixedPointNet(self.h_s)
        self._gtables = gaussian_tables()

    def coder(self, step: int = STEP_ONE) -> "HyperpriorCoder":
        """The exact coder; ``step``: the latent quantisation step numerator (Δ = step / STEP_ONE)."""
        if self._fx is None or self._gtables is None:
            raise ModelError("entropy tables not built: call model.update() (or load a checkpoint) first")
        return HyperpriorCoder(self.entropy_bottleneck._tables(), self._fx, self._gtables, self.means, step)

    @torch.no_grad()
    def hyper_analysis(self, y: torch.Tensor, y_ctx: torch.Tensor | None = None,
                       margin: int | tuple[int, int, int, int] = 0) -> torch.Tensor:
        """z of one element. ``y_ctx`` (optional) is y with ``margin`` extra latents on every side,
        or (top, bottom, left, right) (multiples of 4): h_a then sees the neighbourhood, so z at
        tile borders is what a whole-image h_a gives."""
        src = y if y_ctx is None else y_ctx
        z = self.h_a(src if self.means else torch.abs(src))
        if y_ctx is not None and margin:
            t, b, l, r = (m // self.stride for m in margins(margin))
            z = z[..., t:z.shape[-2] - b, l:z.shape[-1] - r]
        return z

    def prepare(self, y: torch.Tensor, y_ctx: torch.Tensor | None = None,
                margin: int | tuple[int, int, int, int] = 0,
                z: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """What the coder needs for one element: (y as float32, ẑ as int64), both on the CPU.
        ``z``: the hyper-latent to send (default: h_a's, see :meth:`hyper_analysis`; latent
        refinement passes its own)."""
        if z is None:
            z = self.hyper_analysis(y, y_ctx, margin)
        z_int = torch.round(z.detach().double().cpu()).long().numpy()
        return y.detach().float().cpu().numpy(), z_int

    def compress(self, y: torch.Tensor, y_ctx: torch.Tensor | None = None,
                 margin: int | tuple[int, int, int, int] = 0, z: torch.Tensor | None = None) -> bytes:
        """One element: y of shape (1, C, h, w) -> bytes (z stream then y stream)."""
        return self.coder().encode(*self.prepare(y, y_ctx, margin, z))

    def decompress(self, data: bytes, y_shape: tuple[int, ...]) -> tuple[torch.Tensor, int]:
        y_hat, used = self.coder().decode(data, y_shape)
        return torch.from_numpy(y_hat), used

    def tables_state(self) -> dict:
        if self.entropy_bottleneck.tables is None:
            return {}
        return {"eb": self.entropy_bottleneck.tables.to_tensors(), "gaussian": self._gtables.to_tensors()}

    def load_tables_state(self, state: dict) -> None:
        self.entropy_bottleneck.tables = TableSet.from_tensors(state["eb"])
        self._gtables = TableSet.from_tensors(state["gaussian"])
        self._fx = FixedPointNet(self.h_s)


class HyperpriorCoder:
    """The exact half of a hyperprior latent codec: ẑ -> (μ, table index) through the fixed-point
    h_s, and range coding of ẑ and of q = round((y - μ) / Δ) (Δ = step / STEP_ONE, 1 by default)
    with the tables of σ/Δ. Integer arithmetic only, so any process on any machine produces the
    same bytes and latents (ŷ = μ + q·Δ, exact dyadic rationals). A plain, picklable object (no
    nn.Module), so worker processes can hold a copy (:mod:`sarcodec.parallel`)."""

    def __init__(self, z_tables: TableSet, fx: FixedPointNet, y_tables: TableSet, means: bool,
                 step: int = STEP_ONE):
        self.z_tables, self.fx, self.y_tables, self.means = z_tables, fx, y_tables, means
        self.step = check_step(step)

    @property
    def delta(self) -> float:
        return self.step / STEP_ONE  # exact in float64

    def _params(self, z_int: np.ndarray) -> tuple[torch.Tensor | None, np.ndarray]:
        mu_fx, ls_fx = split_params(self.fx(torch.from_numpy(z_int)), self.means)
        mu = mu_fx / 2.0**ACT_BITS if mu_fx is not None else None  # exact dyadic rationals
        return mu, scale_index_from_fixed(ls_fx - log_step_fixed(self.step))  # tables of σ/Δ

    def encode(self, y: np.ndarray, z_int: np.ndarray) -> bytes:
        z_bytes = encode_per_channel(z_int, self.z_tables)
        mu, idx = self._params(z_int)
        y64 = torch.from_numpy(np.asarray(y, dtype=np.float64))
        r = y64 - mu if mu is not None else y64
        q = torch.round(r / self.delta)  # Δ = 1: r / 1.0 is r exactly
        return z_bytes + encode_symbols(q.long().numpy(), idx, self.y_tables)

    def decode(self, data: bytes, y_shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
        b, c, h, w = y_shape
        z_shape = (b, len(self.z_tables), -(-h // HyperpriorLatentCodec.stride), -(-w // HyperpriorLatentCodec.stride))
        z_int, used_z = decode_per_channel(data, z_shape, self.z_tables)
        mu, idx = self._params(z_int)
        if idx.shape != tuple(y_shape):
            raise ModelError(f"hyper-synthesis produced {idx.shape}, expected {tuple(y_shape)}")
        q, used_y = decode_symbols(memoryview(data)[used_z:], idx, self.y_tables)
        y_hat = torch.from_numpy(q.reshape(y_shape)).double() * self.delta  # |q| < 2**31, step < 2**9: exact
        if mu is not None:
            y_hat = y_hat + mu
        return y_hat.float().numpy(), used_z + used_y


def decode_tile(coder: FactorizedCoder | HyperpriorCoder, data: bytes, y_shape: tuple[int, ...]) -> np.ndarray:
    """Entropy-decode one tile's whole stream -> ŷ (float32); trailing bytes mean corruption."""
    y_hat, used = coder.decode(data, y_shape)
    if used != len(data):
        raise CorruptedFileError(f"tile stream has {len(data) - used} unexpected trailing bytes")
    return y_hat


LATENT_CODECS = {
    "hyperprior": lambda c, n: HyperpriorLatentCodec(c, n, means=True),
    "scale-hyperprior": lambda c, n: HyperpriorLatentCodec(c, n, means=False),
    "factorized": lambda c, n: FactorizedLatentCodec(c),
}
