"""The codec model: transforms (g_a, g_s) + a latent codec, with training and coding interfaces."""
from __future__ import annotations

import hashlib
import warnings
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._reproducible import synthesis_threads
from ..entropy import STEP_ONE
from ..errors import ModelError
from .latent_codecs import decode_tile
from .transforms import STRIDE, dense_synthesis


class SarCodec(nn.Module):
    """A learned codec for one-channel images in [0, 1].

    * ``forward(x)`` -> ``{"x_hat", "likelihoods"}`` for rate-distortion training;
    * ``compress(x)`` -> one bytes string per batch element; ``decompress(strings, shape)`` -> x̂.

    Any input size works: the image is padded (edge replication) to a multiple of the total
    stride and the output cropped back. ``update()`` freezes the integer entropy tables; it is
    called automatically by ``compress`` if the tables are missing or stale.
    """

    def __init__(self, arch: str, g_a: nn.Module, g_s: nn.Module, latent_codec: nn.Module, config: dict[str, Any]):
        super().__init__()
        self.arch = arch
        self.g_a = g_a
        self.g_s = g_s
        self.latent_codec = latent_codec
        self.config = dict(config)  # everything create_model needs to rebuild this model
        self.pad_multiple = STRIDE * latent_codec.stride
        self.halo_latents = 4  # set by the registry per architecture (see registry.HALO_LATENTS)
        self._tables_fresh = False
        self._hash: str | None = None
        self._dense: tuple[tuple, nn.Module | None] | None = None  # (weights' key, dense_synthesis)

    # -- shapes -----------------------------------------------------------------------------
    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        m = self.pad_multiple
        return -(-h // m) * m, -(-w // m) * m

    def latent_shape(self, h: int, w: int) -> tuple[int, int, int, int]:
        ph, pw = self.padded_size(h, w)
        return (1, self.config["latent_channels"], ph // STRIDE, pw // STRIDE)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = self.padded_size(h, w)
        if (ph, pw) == (h, w):
            return x
        return F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")

    # -- training ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        h, w = x.shape[-2:]
        y = self.g_a(self._pad(x) - 0.5)
        # under mixed precision (autocast) the transforms run in bf16/fp16, but the latents, the
        # entropy model and its likelihoods stay float32: rates are sums of small log-probabilities
        with torch.autocast(x.device.type, enabled=False):
            y_hat, likelihoods = self.latent_codec(y.float())
        x_hat = self.g_s(y_hat)[..., :h, :w].float()
        if self.training:  # weights are about to change
            self.weights_changed()
        return {"x_hat": x_hat, "likelihoods": likelihoods}

    def aux_loss(self) -> torch.Tensor:
        return sum(m.aux_loss() for m in self.modules() if hasattr(m, "aux_loss") and m is not self)

    def weights_changed(self) -> None:
        """Call after changing weights outside training (in-place edits): the entropy tables are
        rebuilt before the next compress and the weights hash is recomputed."""
        self._tables_fresh = False
        self._hash = None

    def load_state_dict(self, *args: Any, **kwargs: Any):
        result = super().load_state_dict(*args, **kwargs)
        self.weights_changed()  # checkpoints restore their stored tables afterwards
        return result

    # -- coding -----------------------------------------------------------------------------
    @torch.no_grad()
    def update(self) -> None:
        self.latent_codec.update()
        self._tables_fresh = True
        self._hash = None

    def _ensure_tables(self) -> None:
        if not self._tables_fresh:
            self.update()

    @torch.no_grad()
    def compress(self, x: torch.Tensor, step: int = STEP_ONE) -> list[bytes]:
        """x: (B, 1, H, W) in [0, 1] on the model's device. Returns one stream per element.
        ``step``: latent quantisation step numerator (Δ = step / 64; see :mod:`sarcodec.entropy`)."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ModelError(f"compress expects (B, 1, H, W), got {tuple(x.shape)}")
        self._ensure_tables()
        was = self.training
        self.eval()
        try:
            y = self.g_a(self._pad(x) - 0.5)
            coder = self.coder(step)
            return [coder.encode(*self.latent_codec.prepare(y[i:i + 1])) for i in range(y.shape[0])]
        finally:
            self.train(was)

    def coder(self, step: int = STEP_ONE):
        """The exact, picklable entropy coder of this model (see ``latent_codecs``) at latent
        quantisation step ``step`` / 64."""
        self._ensure_tables()
        return self.latent_codec.coder(step)

    @torch.no_grad()
    def decode_latent(self, data: bytes, h: int, w: int, step: int = STEP_ONE) -> torch.Tensor:
        """Entropy-decode one stream -> ŷ (CPU, exact: identical on every machine)."""
        return torch.from_numpy(decode_tile(self.coder(step), data, self.latent_shape(h, w)))

    def _dense_synthesis(self) -> nn.Module | None:
        """:func:`transforms.dense_synthesis` of ``g_s``, rebuilt when its weights change (their
        storage or in-place version: training steps, loads)."""
        key = tuple((p.data_ptr(), p._version) for p in self.g_s.parameters())
        if self._dense is None or self._dense[0] != key:
            self._dense = (key, dense_synthesis(self.g_s))
        return self._dense[1]

    def partial_synthesis_exact(self) -> bool:
        """Whether synthesising part of a tile's canvas (a window and the synthesis' reach) gives
        the whole canvas' pixels bit for bit: so with the native kernels, whose reduction per
        output does not depend on the canvas; not with the dense form on oneDNN, whose kernels
        block the rows by their width (a 16-latent-wide canvas rounded ~1e-6 otherwise)."""
        return next(self.parameters()).device.type != "cpu" or self._dense_synthesis() is None

    @torch.no_grad()
    def synthesize(self, y_hat: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """ŷ -> pixels, the same bits whatever the thread count. On the CPU a synthesis of convs,
        transposed convs, GDN and pixel shuffles (default and fast families) runs in its dense
        form (:func:`transforms.dense_synthesis`) on oneDNN's channels-last kernels, on one
        thread, which reduce in one order on AVX2 and AVX-512. Any other bypasses oneDNN for
        the native kernels, whose GEMMs give the same bits with 1 or 16 threads under MKL's strict
        reproducible mode (see ``sarcodec._reproducible``). Where that mode is not in force, both
        run on one thread: MKL's vector maths (GDN's sqrt) then rounds by how the threads split
        an array. Same-bits-everywhere for the latents is guaranteed separately."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        dense = self._dense_synthesis() if dev.type == "cpu" else None
        threads = torch.get_num_threads()
        # the dense form runs on one thread: with two, about 1 decode in 20 of a 16-channel
        # hyperprior rounded its first GDN differently (fresh processes, not understood yet); one
        # thread of it still beats two of the native kernels (1024^2 tile: default 0.72 s against
        # 0.90 s, fast 0.07 s against 0.13 s). Native kernels outside MKL's strict mode: one
        # thread too (its vector maths, GDN's sqrt, then rounds by how threads split an array)
        single = dev.type == "cpu" and threads > 1 and (dense is not None or synthesis_threads() == 1)
        try:
            if single:
                torch.set_num_threads(1)
            with warnings.catch_warnings():  # the flag context warns about Intel-GPU TF32 each time
                warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
                with torch.backends.mkldnn.flags(enabled=dev.type != "cpu" or dense is not None):
                    if dense is not None:
                        x = dense(y_hat.to(dev).contiguous(memory_format=torch.channels_last))
                    else:
                        x = self.g_s(y_hat.to(dev))
                    return x.clamp(0.0, 1.0)[..., :h, :w].contiguous()
        finally:
            if single:
                torch.set_num_threads(threads)
            self.train(was)

    @torch.no_grad()
    def decompress(self, strings: list[bytes], h: int, w: int, step: int = STEP_ONE) -> torch.Tensor:
        # One tile at a time: conv kernels pick algorithms by batch shape, so batching would make
        # a tile's pixels depend on its neighbours in the batch.
        return torch.cat([self.synthesize(self.decode_latent(s, h, w, step), h, w) for s in strings])

    # -- identity ---------------------------------------------------------------------------
    def tables_state(self) -> dict:
        self._ensure_tables()
        return self.latent_codec.tables_state()

    def load_tables_state(self, state: dict) -> None:
        self.latent_codec.load_tables_state(state)
        self._tables_fresh = True
        self._hash = None

    def weights_hash(self) -> str:
        """SHA-256 (first 16 hex) of weights + entropy tables: names the exact decoder."""
        if self._hash is None:
            self._ensure_tables()
            h = hashlib.sha256()
            for k, v in sorted(self.state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
            for k, v in sorted(_flatten(self.tables_state()).items()):
                h.update(k.encode())
                h.update(v.numpy().tobytes())
            self._hash = h.hexdigest()[:16]
        return self._hash

    def num_parameters(self, part: str | None = None) -> int:
        mod = self if part is None else getattr(self, part)
        return sum(p.numel() for p in mod.parameters())

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, params={self.num_parameters() / 1e6:.2f}M"


def _flatten(d: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


MSE_SCALE = 255.0**2  # loss = lambda * MSE_SCALE * MSE + bpp: lambda values comparable to CompressAI's


def bits_from_likelihoods(likelihoods: dict[str, torch.Tensor]) -> torch.Tensor:
    """Estimated total bits (differentiable)."""
    return sum(-torch.log2(l).sum() for l in likelihoods.values())
