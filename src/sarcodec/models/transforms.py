"""Analysis (g_a) / synthesis (g_s) transforms of the registered architectures.

Every transform maps a 1-channel image in [0, 1] to a latent with stride 16 and back, so any
architecture plugs into any latent codec (``latent_codecs.py``).

=============  =================================================================================
architecture   transform
=============  =================================================================================
baseline       variant A of the prototype: 4 strided 5x5 convs, BN + LeakyReLU(0.2), no
               activation on the last encoder layer; mirrored transposed convs; sigmoid output
resnet-lite    post-activation ResNet blocks, one down/up block + one block per stage
residual       variant B: pre-activation blocks (BN-ReLU-conv), down/up block + block per stage
attention      variant C: variant B with CBAM (channel + spatial attention) after every block
hyperprior     Ballé et al. 2018: 5x5 strided convs with GDN / IGDN (the learned reference)
=============  =================================================================================

Synthesis transforms that replace an architecture's own g_s (model option ``synthesis``), fitted
to that architecture's frozen latents (:mod:`sarcodec.training.distill`):

=============  =================================================================================
lite           a fast decoder: 1x1 bottleneck, then four x2 sub-pixel 3x3 convs with IGDN, widths
               (48, 64, 40, 16) by default: 3.7 kMAC per output pixel against the hyperprior
               g_s's 30.9 (GDN counted); whole files decode ~3x faster on a CPU
               (``benchmarks/scene_speed.py --model default fast``)
=============  =================================================================================
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import CBAM, GDN, PostActBlock, PreActBlock, SubPixelConv, conv, deconv

STRIDE = 16


def baseline(latent_channels: int, base_channels: int) -> tuple[nn.Module, nn.Module]:
    b, c = base_channels, latent_channels
    chans = [1, b, 2 * b, 4 * b]
    enc: list[nn.Module] = []
    for cin, cout in zip(chans[:-1], chans[1:]):
        enc += [conv(cin, cout, 5, 2), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
    enc.append(conv(chans[-1], c, 5, 2))  # no activation: the latent is unconstrained
    dec: list[nn.Module] = []
    rchans = [c] + chans[:0:-1]  # c, 4b, 2b, b
    for cin, cout in zip(rchans[:-1], rchans[1:]):
        dec += [deconv(cin, cout, 5, 2), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
    dec += [deconv(b, 1, 5, 2), nn.Sigmoid()]
    return nn.Sequential(*enc), nn.Sequential(*dec)


def _residual_family(latent_channels: int, base_channels: int, block: type, attention: bool,
                     blocks_per_stage: int = 2) -> tuple[nn.Module, nn.Module]:
    b, c = base_channels, latent_channels
    widths = [b, 2 * b, 4 * b, 8 * b]
    pre = block is PreActBlock

    def maybe_att(ch: int) -> list[nn.Module]:
        return [CBAM(ch)] if attention else []

    enc: list[nn.Module] = []
    cin = 1
    for w in widths:
        enc += [block(cin, w, "down")] + maybe_att(w)
        for _ in range(blocks_per_stage - 1):
            enc += [block(w, w)] + maybe_att(w)
        cin = w
    if pre:  # a pre-activation stack ends with the activation it has not applied yet
        enc += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True)]
    enc.append(conv(cin, c, 3))

    dec: list[nn.Module] = [conv(c, widths[-1], 3)]
    outs = widths[::-1][1:] + [b]  # 4b, 2b, b, b
    for w, wout in zip(widths[::-1], outs):
        for _ in range(blocks_per_stage - 1):
            dec += [block(w, w)] + maybe_att(w)
        dec += [block(w, wout, "up")] + maybe_att(wout)
    if pre:
        dec += [nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
    dec += [conv(b, 1, 3), nn.Sigmoid()]
    return nn.Sequential(*enc), nn.Sequential(*dec)


def resnet_lite(latent_channels: int, base_channels: int) -> tuple[nn.Module, nn.Module]:
    return _residual_family(latent_channels, base_channels, PostActBlock, attention=False)


def residual(latent_channels: int, base_channels: int) -> tuple[nn.Module, nn.Module]:
    return _residual_family(latent_channels, base_channels, PreActBlock, attention=False)


def attention(latent_channels: int, base_channels: int) -> tuple[nn.Module, nn.Module]:
    return _residual_family(latent_channels, base_channels, PreActBlock, attention=True)


def hyperprior(latent_channels: int, base_channels: int) -> tuple[nn.Module, nn.Module]:
    n, m = base_channels, latent_channels
    g_a = nn.Sequential(
        conv(1, n, 5, 2), GDN(n), conv(n, n, 5, 2), GDN(n), conv(n, n, 5, 2), GDN(n), conv(n, m, 5, 2),
    )
    g_s = nn.Sequential(
        deconv(m, n), GDN(n, inverse=True), deconv(n, n), GDN(n, inverse=True),
        deconv(n, n), GDN(n, inverse=True), deconv(n, 1),
    )
    return g_a, g_s


LITE_CHANNELS = (48, 64, 40, 16)


def lite_synthesis(latent_channels: int, channels: tuple[int, ...] = LITE_CHANNELS) -> nn.Module:
    """ŷ (stride 16) -> pixels with ~3.7 kMAC/pixel (default widths): a 1x1 bottleneck at the
    latent resolution, where every MAC is cheap, then one sub-pixel conv per x2 step with the
    channels shrinking as the resolution grows (the full-resolution layer has 16 inputs). Reach:
    1 + 1/2 + 1/4 + 1/8 latents, inside the hyperprior's tile halo of 4."""
    b, *widths = channels
    if len(widths) != 3 or min(channels) < 1:
        raise ValueError(f"lite synthesis needs 4 positive widths (bottleneck, 1/8, 1/4, 1/2), got {channels!r}")
    layers: list[nn.Module] = [nn.Conv2d(latent_channels, b, 1)]
    cin = b
    for w in widths:
        layers += [SubPixelConv(cin, w), GDN(w, inverse=True)]
        cin = w
    last = SubPixelConv(cin, 1)
    nn.init.constant_(last[0].bias, 0.5)  # start at mid-grey: the output is in [0, 1]
    layers.append(last)
    return nn.Sequential(*layers)


# name -> builder(latent_channels, channels) of synthesis transforms that can replace g_s
SYNTHESES = {"lite": (lite_synthesis, LITE_CHANNELS)}


def _subpixel(m: nn.ConvTranspose2d) -> nn.Sequential:
    """A stride-2 transposed conv as a dense conv to 4 x its outputs and a pixel shuffle (the
    same map): phase (ry, rx) of the output meets input (i + dy, j + dx) through tap
    (ry + p - 2 dy, rx + p - 2 dx) of the kernel, so each phase is a small dense conv and the four
    of them are one conv whose taps outside a phase's reach are zero. Each output is the same sum
    of the same products (plus exact zeros), in another order."""
    cin, cout, k, _ = m.weight.shape
    p = m.padding[0]
    taps = [d for r in (0, 1) for d in range(-k, k + 1) if 0 <= r + p - 2 * d < k]
    reach = max(abs(d) for d in taps)
    kk = 2 * reach + 1
    w = torch.zeros(cout, 2, 2, cin, kk, kk, dtype=m.weight.dtype, device=m.weight.device)
    src = m.weight.detach()
    for ry in (0, 1):
        for rx in (0, 1):
            for jy in range(kk):
                for jx in range(kk):
                    uy, ux = ry + p - 2 * (jy - reach), rx + p - 2 * (jx - reach)
                    if 0 <= uy < k and 0 <= ux < k:
                        w[:, ry, rx, :, jy, jx] = src[:, :, uy, ux].T
    conv_ = nn.Conv2d(cin, 4 * cout, kk, padding=reach).to(m.weight.device, m.weight.dtype)
    conv_.weight.data = w.reshape(4 * cout, cin, kk, kk)
    conv_.bias.data = (m.bias.detach() if m.bias is not None else torch.zeros_like(conv_.bias[:cout])
                       ).repeat_interleave(4)
    return nn.Sequential(conv_, nn.PixelShuffle(2))


def _dense_layers(mod: nn.Module) -> list[nn.Module] | None:
    """The layers of ``mod`` with every stride-2 transposed conv made dense, or None when it has a
    layer outside what :func:`dense_synthesis` is measured on."""
    out: list[nn.Module] = []
    for m in (mod if isinstance(mod, nn.Sequential) else [mod]):
        if isinstance(m, nn.Sequential):
            inner = _dense_layers(m)
            if inner is None:
                return None
            out += inner
        elif isinstance(m, nn.ConvTranspose2d):
            if (m.stride != (2, 2) or m.output_padding != (1, 1) or m.padding[0] != m.padding[1]
                    or m.kernel_size[0] != m.kernel_size[1] or m.kernel_size[0] % 2 == 0
                    or m.groups != 1 or m.dilation != (1, 1)):
                return None
            out += list(_subpixel(m))
        elif isinstance(m, nn.Conv2d) and m.groups == 1 and m.dilation == (1, 1) and m.padding_mode == "zeros":
            out.append(m)
        elif isinstance(m, (GDN, nn.PixelShuffle, nn.ReLU, nn.LeakyReLU, nn.Identity)):
            out.append(m)
        else:
            return None
    return out


def dense_synthesis(g_s: nn.Module) -> nn.Sequential | None:
    """The CPU inference form of a synthesis made of convs, stride-2 transposed convs, GDN and
    pixel shuffles (the hyperprior's and the lite one): transposed convs become dense sub-pixel
    convs (:func:`_subpixel`), every other layer is the original module (shared weights). Run by
    oneDNN on channels-last tensors, these layers reduce in one fixed order on AVX2 and AVX-512
    (measured: ``ONEDNN_MAX_CPU_ISA=AVX2`` and native AVX-512, latents from 1 x 1 to 136 x 136,
    default and fast families: one digest each; oneDNN's own transposed-conv kernels differ).
    On one thread (see ``SarCodec.synthesize``; ``SceneDecoder.synthesis_threads`` runs tiles side
    by side) they are 1.2x (default) and 1.8x (fast) faster than the native kernels on two;
    outputs within ~4e-6 of them. None for a synthesis with other
    layers (batch norm, attention, upsampling), which keeps the native ones."""
    layers = _dense_layers(g_s)
    return None if layers is None else nn.Sequential(*layers).eval()
