"""Parameter counts (and MACs per pixel) of the registered architectures.

    python benchmarks/param_counts.py

The prototype's table: ResNet-Lite ~5.6M parameters at base 32 / C=16; Attention (variant C)
~13M at base 48. Counts are of the transforms g_a + g_s (what the prototype had); "total" adds
the latent codec (hyper transforms + entropy models).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sarcodec.models import create_model, list_models, model_defaults  # noqa: E402

PROTOTYPE_TABLE = {
    "resnet-lite": (5.6e6, dict(base_channels=32, latent_channels=16)),
    "attention": (13.0e6, dict(base_channels=48, latent_channels=16)),
}


def count(arch: str, **kw) -> dict[str, float]:
    m = create_model(arch, **kw)
    return {"transforms": m.num_parameters("g_a") + m.num_parameters("g_s"), "total": m.num_parameters()}


def macs_per_pixel(arch: str, size: int = 256, **kw) -> float:
    """Multiply-accumulates per input pixel of g_a + g_s (conv layers)."""
    from sarcodec.evaluation.metrics import macs_per_pixel as model_macs

    return model_macs(create_model(arch, **kw).eval(), size)


def main() -> None:
    print(f"{'architecture':12s} {'base':>5s} {'C':>4s} {'g_a+g_s':>10s} {'total':>10s} {'kMAC/px':>9s}  prototype")
    for arch in list_models():
        d = model_defaults(arch)
        c = count(arch)
        ref = PROTOTYPE_TABLE.get(arch)
        refs = f"{ref[0] / 1e6:.1f}M ({100 * (c['transforms'] / ref[0] - 1):+.0f}%)" if ref else "-"
        print(f"{arch:12s} {d['base_channels']:5d} {d['latent_channels']:4d} {c['transforms'] / 1e6:9.2f}M "
              f"{c['total'] / 1e6:9.2f}M {macs_per_pixel(arch) / 1e3:9.1f}  {refs}")


if __name__ == "__main__":
    main()
