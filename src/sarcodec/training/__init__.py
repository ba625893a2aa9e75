"""Training: rate-distortion trainer and data plumbing."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.sampling import RandomSampler
from .distributed import rank_seed
from .trainer import TrainConfig, Trainer, lr_at, rd_loss

__all__ = ["TrainConfig", "Trainer", "lr_at", "rd_loss", "train_on_directory", "load_config", "run_config",
           "validation_images"]


def train_on_directory(cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path,
                       val_locations: tuple[str, ...] = ("mexico-b",), device: str = "cpu",
                       resume: bool = False, progress: bool = False, balance: str | None = None,
                       patch_sizes: list[int] | None = None) -> dict[str, Any]:
    """Train on ``train/`` + ``ships/`` of a data root (never ``test/``), validating on held-out
    locations. Under torchrun each process draws its own patches (:func:`rank_seed`).
    ``balance="family"`` draws product families equally (:class:`FamilySampler`) in the patch
    sizes ``patch_sizes`` (default: ``cfg.patch_size`` and 64); otherwise patches of
    ``cfg.patch_size`` are area-weighted over all images."""
    from ..data.scenes import FamilySampler, PatchSampler, load_scenes, split_by_location, tile_eval_patches
    from ..errors import InputError

    loaded = load_scenes(data_dir, folders=("train", "ships"))  # GeoTIFFs or a prepared copy
    images = {s.path: im for s, im in loaded}
    train, val = split_by_location([s for s, _ in loaded], val_locations)
    if balance not in (None, "none", "family"):
        raise InputError(f"data.balance must be 'family' or 'none', got {balance!r}")
    if balance == "family":
        sizes = tuple(patch_sizes or sorted({cfg.patch_size, 64}, reverse=True))
        if any(s < 64 or s % 64 for s in sizes) or sizes[0] != cfg.patch_size:
            raise InputError("data.patch_sizes: multiples of 64, the first equal to patch_size")
        sampler = FamilySampler([images[s.path] for s in train], [s.family for s in train], sizes,
                                seed=rank_seed(cfg.seed))
    else:
        sampler = PatchSampler([images[s.path] for s in train], cfg.patch_size, seed=rank_seed(cfg.seed))
    val_patches = tile_eval_patches([images[s.path] for s in val], cfg.patch_size) if val else None
    t = Trainer(cfg, sampler, val_patches, out_dir, device=device, progress=progress)
    usable = f"{len(sampler.images)} usable at {cfg.patch_size}px" if balance != "family" else \
        f"{len(sampler.images)} usable at {'/'.join(map(str, sampler.sizes))}px, families {', '.join(sampler.families)}"
    t.log(f"train: {len(train)} scenes ({usable}), "
          f"val: {len(val)} scenes / {0 if val_patches is None else len(val_patches)} patches ({', '.join(val_locations)})")
    if resume:
        t.resume_if_saved()
    return t.fit()


class SyntheticSampler(RandomSampler):
    """Patches of synthetic SAR (gamma speckle over procedural reflectivity), generated on the fly,
    normalised like real scenes. Deterministic given the seed; resumable."""

    def __init__(self, patch: int, seed: int = 0, looks: tuple[float, float] = (1.0, 8.0)):
        super().__init__(seed, augment=False)  # every patch is new: nothing to augment
        self.patch, self.looks = patch, looks

    def batch(self, n: int):
        import numpy as np

        from ..data.synthetic import synthetic_sar
        from ..radiometry import Radiometry

        out = np.empty((n, 1, self.patch, self.patch), np.float32)
        for i in range(n):
            seed = int(self.rng.integers(0, 2**31))
            img = synthetic_sar((self.patch, self.patch), seed=seed, looks=float(self.rng.uniform(*self.looks)))
            out[i, 0] = Radiometry.fit(img).forward(img)[0]
        return out


QUICK = {"steps": 60, "patch_size": 64, "batch_size": 4, "val_every": 30, "warmup_steps": 10}


def packaged_configs() -> dict[str, Path]:
    """The configs shipped with the package (``sarcodec/configs/*.yaml``), by name."""
    d = Path(__file__).resolve().parents[1] / "configs"
    return {p.stem: p for p in sorted(d.glob("*.yaml"))}


def resolve_config(path: str | Path) -> Path:
    """A config file path, or the name of a packaged config (``default``, ``residual``, ...)."""
    from ..errors import InputError

    p = Path(path)
    if p.is_file():
        return p
    named = packaged_configs()
    if str(path) in named or p.stem in named and not p.parent.name:
        return named[str(path) if str(path) in named else p.stem]
    raise InputError(f"{p}: config file not found (packaged configs: {', '.join(named)})")


def load_config(path: str | Path, overrides: list[str] | None = None, quick: bool = False) -> tuple[TrainConfig, dict[str, Any]]:
    """YAML -> (TrainConfig, data section). ``overrides`` are ``key=value`` (YAML-typed; dotted keys
    reach into ``model.`` and ``data.``). ``quick`` applies the quick-search settings."""
    import yaml

    from ..errors import InputError

    p = resolve_config(path)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise InputError(f"{p}: invalid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise InputError(f"{p}: a config is a mapping of options")
    data = dict(raw.pop("data", {}) or {})
    quick_over = dict(raw.pop("quick", {}) or {})
    if quick:
        raw.update({**QUICK, **quick_over})
    for ov in overrides or []:
        if "=" not in ov:
            raise InputError(f"override {ov!r} must look like key=value")
        k, v = ov.split("=", 1)
        val = yaml.safe_load(v)
        if k.startswith("data."):
            data[k[5:]] = val
        elif k.startswith("model."):
            raw.setdefault("model", {})[k[6:]] = val
        else:
            raw[k] = val
    try:
        cfg = TrainConfig.from_dict(raw)
    except TypeError as e:
        raise InputError(f"{p}: {e}") from e
    _validate(cfg, p)
    return cfg, data


def _validate(cfg: TrainConfig, p: Path) -> None:
    from ..errors import InputError
    from ..models import create_model

    import dataclasses

    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        tname = str(f.type)
        if v is None and "None" in tname:
            continue
        want = {"int": int, "float": (int, float), "str": str, "bool": bool}.get(tname.split(" ")[0])
        if want and (isinstance(v, bool) != (want is bool) or not isinstance(v, want)):
            raise InputError(f"{p}: {f.name} must be {str(f.type)}, got {v!r} ({type(v).__name__})")
    checks = [(cfg.steps > 0, "steps must be > 0"), (cfg.batch_size > 0, "batch_size must be > 0"),
              (cfg.patch_size >= 64 and cfg.patch_size % 64 == 0, "patch_size must be a multiple of 64"),
              (cfg.lr > 0, "lr must be > 0"), (cfg.lmbda > 0, "lmbda must be > 0"),
              (cfg.grad_clip > 0, "grad_clip must be > 0"), (cfg.weight_decay >= 0, "weight_decay must be >= 0"),
              (cfg.scheduler in ("cosine", "plateau"), "scheduler: cosine | plateau"),
              (cfg.plateau_patience >= 0 and 0 < cfg.plateau_factor < 1, "plateau_patience >= 0, 0 < plateau_factor < 1"),
              (cfg.early_stop_patience is None or cfg.early_stop_patience > 0, "early_stop_patience must be > 0"),
              (cfg.log_every > 0 and cfg.val_every > 0, "log_every and val_every must be > 0"),
              (cfg.distortion in ("mse", "ssim", "ms-ssim", "mse+ssim"), "distortion: mse | ssim | ms-ssim | mse+ssim")]
    for ok, msg in checks:
        if not ok:
            raise InputError(f"{p}: {msg}")
    create_model(cfg.arch, **cfg.model)  # unknown architecture / options fail here, clearly


def run_config(cfg: TrainConfig, data: dict[str, Any], out_dir: str | Path, device: str = "cpu",
               resume: bool = False, progress: bool = False) -> dict[str, Any]:
    """Train from a config's data section: ``source: shared`` (train/ + ships/ of ``root``) or
    ``source: synthetic``."""
    from ..data.scenes import default_data_dir
    from ..errors import InputError

    source = data.get("source", "shared")
    if source == "synthetic":
        sampler = SyntheticSampler(cfg.patch_size, seed=rank_seed(cfg.seed))
        val = SyntheticSampler(cfg.patch_size, seed=cfg.seed + 10_000).batch(int(data.get("val_patches", 16)))
        t = Trainer(cfg, sampler, val, out_dir, device=device, progress=progress)
        if resume:
            t.resume_if_saved()
        return t.fit()
    if source != "shared":
        raise InputError(f"data.source must be 'shared' or 'synthetic', got {source!r}")
    root = data.get("root") or default_data_dir()
    if root is None:
        raise InputError("no training data: set data.root (or SARCODEC_DATA), or use data.source=synthetic")
    unknown = set(data) - {"source", "root", "val_locations", "balance", "patch_sizes", "val_patches"}
    if unknown:
        raise InputError(f"unknown data option(s): {', '.join(sorted(unknown))}")
    return train_on_directory(cfg, root, out_dir, tuple(data.get("val_locations", ["mexico-b"])), device, resume,
                              progress, balance=data.get("balance"), patch_sizes=data.get("patch_sizes"))


def validation_images(data: dict[str, Any], count: int = 2, size: int = 256) -> list[tuple[str, Any]]:
    """The held-out images of a config's data section as (name, linear intensity): the whole
    validation-location scenes of ``train/`` (``source: shared``), or ``count`` synthetic scenes
    of ``size``^2 with seeds no training run draws (``source: synthetic``). For evaluating with
    real bytes (:func:`sarcodec.evaluation.benchmark.evaluate_images`)."""
    from ..data.scenes import default_data_dir, read_intensity
    from ..data.synthetic import synthetic_sar
    from ..errors import InputError
    from ..evaluation.benchmark import benchmark_scenes

    if data.get("source", "shared") == "synthetic":
        return [(f"synthetic-{i}", synthetic_sar((size, size), seed=20_000 + i)) for i in range(count)]
    root = data.get("root") or default_data_dir()
    if root is None:
        raise InputError("no data: set data.root (or SARCODEC_DATA), or use data.source=synthetic")
    locs = tuple(data.get("val_locations", ["mexico-b"]))
    return [(s.path.stem, read_intensity(s.path)) for s in benchmark_scenes(root, "val", locs)]
