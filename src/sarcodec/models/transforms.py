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
