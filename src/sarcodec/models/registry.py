"""Architecture registry (timm/CompressAI style): name -> builder with documented defaults."""
from __future__ import annotations

from typing import Any, Callable

from ..errors import UnknownModelError, InputError
from . import transforms
from .codec import SarCodec
from .latent_codecs import LATENT_CODECS

# name: (transform builder, defaults). Defaults follow the prototype (base 32 for resnet-lite,
# 48 for attention) and Ballé 2018 (N=128, M=192) for the hyperprior reference.
_ARCHS: dict[str, tuple[Callable, dict[str, Any]]] = {
    "baseline": (transforms.baseline, dict(latent_channels=16, base_channels=32, latent_codec="factorized")),
    "resnet-lite": (transforms.resnet_lite, dict(latent_channels=16, base_channels=32, latent_codec="hyperprior")),
    "residual": (transforms.residual, dict(latent_channels=16, base_channels=32, latent_codec="hyperprior")),
    "attention": (transforms.attention, dict(latent_channels=16, base_channels=48, latent_codec="hyperprior")),
    "hyperprior": (transforms.hyperprior, dict(latent_channels=192, base_channels=128, latent_codec="scale-hyperprior")),
}
DEFAULT_HYPER_CHANNELS = 64
# Context ring (in latents, a multiple of 4) that whole-scene tiling gives each tile so that tile
# borders see what interiors see: at least the reach of g_s / g_a. 5x5 stride-2 stacks reach
# 2 + 1 + 0.5 + 0.25 < 4 latents; the residual family's 3x3 convs at every scale reach ~7.
HALO_LATENTS = {"baseline": 4, "hyperprior": 4, "resnet-lite": 8, "residual": 8, "attention": 8}


def list_models() -> list[str]:
    """Names of the registered architectures."""
    return sorted(_ARCHS)


def model_defaults(name: str) -> dict[str, Any]:
    if name not in _ARCHS:
        raise UnknownModelError(f"unknown architecture {name!r}; registered: {', '.join(list_models())}")
    return dict(_ARCHS[name][1], hyper_channels=DEFAULT_HYPER_CHANNELS)


def create_model(name: str, **kwargs: Any) -> SarCodec:
    """Build an (untrained) codec. kwargs: latent_channels, base_channels, latent_codec
    ('hyperprior' | 'scale-hyperprior' | 'factorized'), hyper_channels; ``synthesis`` (a name
    of ``transforms.SYNTHESES``, e.g. 'lite') replaces the architecture's g_s, with
    ``synthesis_channels`` its widths (default: the synthesis's own)."""
    cfg = model_defaults(name)
    synth, synth_ch = kwargs.pop("synthesis", None), kwargs.pop("synthesis_channels", None)
    unknown = set(kwargs) - set(cfg)
    if unknown:
        raise InputError(f"unknown option(s) for {name!r}: {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(cfg))}")
    cfg.update({k: v for k, v in kwargs.items() if v is not None})
    for key in ("latent_channels", "base_channels", "hyper_channels"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise InputError(f"{key} must be a positive integer, got {cfg[key]!r}")
    if cfg["latent_codec"] not in LATENT_CODECS:
        raise InputError(f"unknown latent codec {cfg['latent_codec']!r}; choose from {', '.join(LATENT_CODECS)}")
    build = _ARCHS[name][0]
    g_a, g_s = build(cfg["latent_channels"], cfg["base_channels"])
    if synth is not None:  # recorded only when set: configs of models without it stay as they were
        if synth not in transforms.SYNTHESES:
            raise InputError(f"unknown synthesis {synth!r}; registered: {', '.join(sorted(transforms.SYNTHESES))}")
        builder, default_ch = transforms.SYNTHESES[synth]
        ch = tuple(default_ch if synth_ch is None else synth_ch)
        if not all(isinstance(c, int) and c >= 1 for c in ch):
            raise InputError(f"synthesis_channels must be positive integers, got {synth_ch!r}")
        try:
            g_s = builder(cfg["latent_channels"], ch)
        except ValueError as e:
            raise InputError(str(e)) from e
        cfg.update(synthesis=synth, synthesis_channels=list(ch))
    elif synth_ch is not None:
        raise InputError("synthesis_channels needs a synthesis")
    lc = LATENT_CODECS[cfg["latent_codec"]](cfg["latent_channels"], cfg["hyper_channels"])
    model = SarCodec(name, g_a, g_s, lc, cfg)
    model.halo_latents = HALO_LATENTS[name]
    return model
