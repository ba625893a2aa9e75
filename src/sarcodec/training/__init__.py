"""Training: rate-distortion trainer and data plumbing."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .trainer import TrainConfig, Trainer, lr_at, rd_loss

__all__ = ["TrainConfig", "Trainer", "lr_at", "rd_loss", "train_on_directory"]


def train_on_directory(cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path,
                       val_locations: tuple[str, ...] = ("mexico-b",), device: str = "cpu",
                       resume: bool = False) -> dict[str, Any]:
    """Train on ``train/`` + ``ships/`` of a data root (never ``test/``), validating on held-out
    locations."""
    from ..data.scenes import PatchSampler, load_normalized, scan_scenes, split_by_location, tile_eval_patches

    scenes = scan_scenes(data_dir, folders=("train", "ships"))
    train, val = split_by_location(scenes, val_locations)
    sampler = PatchSampler(load_normalized(train), cfg.patch_size, seed=cfg.seed)
    val_patches = tile_eval_patches(load_normalized(val), cfg.patch_size) if val else None
    t = Trainer(cfg, sampler, val_patches, out_dir, device=device)
    t.log(f"train: {len(train)} scenes ({len(sampler.images)} usable at {cfg.patch_size}px), "
          f"val: {len(val)} scenes / {0 if val_patches is None else len(val_patches)} patches ({', '.join(val_locations)})")
    if resume and (Path(out_dir) / "trainer_state.pt").is_file():
        t.resume()
        t.log(f"resumed at step {t.step}")
    return t.fit()
