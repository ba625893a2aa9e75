"""Fit a fast synthesis transform to a trained model's frozen latents.

The analysis transform and the latent codec of a trained model (the *teacher*) are kept as they
are, so the bytes an encoder writes do not change; only g_s is replaced by a cheaper transform
(``transforms.SYNTHESES``, e.g. ``lite``) and fitted, by minimising the MSE between its output on
the exactly quantised latents and the original patch (plus, optionally, the teacher's output).
The latents are fixed targets, so this is plain supervised regression: no rate term, no noise
proxy, fast on a CPU and very fast on a GPU.

    ŷ = quantised(g_a(x), Δ)  (frozen, Δ drawn per patch over the rate point's quality range)
    loss = mean((g_s'(ŷ) - x)^2) + teacher_weight · mean((g_s'(ŷ) - g_s(ŷ))^2)

Runs are resumable (``state.pt`` every ``checkpoint_every_s``) and stop at ``steps`` or after
``time_budget_s`` seconds of training, with a cosine learning rate over whichever is set.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..models import SarCodec, create_model
from .trainer import lr_at


@dataclass
class DistillConfig:
    synthesis: str = "lite"
    channels: tuple[int, ...] | None = None  # the synthesis's widths (default: its own)
    steps: int = 20000
    time_budget_s: float | None = None
    batch_size: int = 16
    patch_size: int = 256
    lr: float = 2e-3
    warmup_steps: int = 200
    teacher_weight: float = 0.0
    log2_delta: tuple[float, float] = (-0.5, 0.5)  # Δ = 2^u, u uniform: the qualities k ± 1/2 use
    val_every: int = 500
    checkpoint_every_s: float = 120.0
    seed: int = 0
    threads: int | None = None
    scheduler: ClassVar[str] = "cosine"  # the trainer's schedule (trainer.lr_at): warmup, then cosine to lr/100


def student_of(teacher: SarCodec, synthesis: str = "lite", channels: tuple[int, ...] | None = None) -> SarCodec:
    """A model with ``teacher``'s analysis and latent codec (weights copied) and a new synthesis."""
    cfg = {k: v for k, v in teacher.config.items() if k not in ("synthesis", "synthesis_channels")}
    student = create_model(teacher.arch, **cfg, synthesis=synthesis,
                           synthesis_channels=list(channels) if channels else None)
    own = student.state_dict()
    shared = {k: v for k, v in teacher.state_dict().items() if not k.startswith("g_s.") and k in own}
    missing = [k for k in own if not k.startswith("g_s.") and k not in shared]
    if missing:
        raise InputError(f"teacher lacks {len(missing)} weights the student shares (e.g. {missing[0]})")
    student.load_state_dict({**own, **shared})
    student.load_tables_state(teacher.tables_state())
    student.radiometry_defaults = dict(getattr(teacher, "radiometry_defaults", {}) or {})
    return student


class Distiller:
    def __init__(self, teacher: SarCodec, cfg: DistillConfig, sampler, val_patches: np.ndarray | None,
                 out_dir: str | Path, device: str = "cpu", log: Callable[[str], None] = print):
        self.cfg, self.sampler, self.out, self.log = cfg, sampler, Path(out_dir), log
        self.device = torch.device(device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.teacher = teacher.to(self.device).eval()
        self.student = student_of(teacher, cfg.synthesis, cfg.channels).to(self.device)
        for n, p in self.student.named_parameters():
            p.requires_grad_(n.startswith("g_s."))
        self.opt = torch.optim.Adam(self.student.g_s.parameters(), lr=cfg.lr)
        self.val = None if val_patches is None else torch.from_numpy(np.ascontiguousarray(val_patches))
        self.step, self.elapsed, self.history = 0, 0.0, []
        self.best = math.inf
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.out.mkdir(parents=True, exist_ok=True)

    # -- one batch ----------------------------------------------------------------------------
    @torch.no_grad()
    def latents(self, x: torch.Tensor, delta: torch.Tensor | float) -> torch.Tensor:
        y = self.teacher.g_a(self.teacher._pad(x) - 0.5)
        return self.teacher.latent_codec.quantized(y, delta)

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        cfg = self.cfg
        progress = self.elapsed / cfg.time_budget_s if cfg.time_budget_s else self.step / max(1, cfg.steps)
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.step, cfg, progress)
        lo, hi = cfg.log2_delta
        u = torch.rand(x.shape[0], 1, 1, 1, generator=self.rng) * (hi - lo) + lo
        y_hat = self.latents(x, (2.0 ** u).to(self.device))
        h, w = x.shape[-2:]
        self.student.g_s.train()
        out = self.student.g_s(y_hat)[..., :h, :w]
        loss = F.mse_loss(out, x)
        mse = loss.item()
        if cfg.teacher_weight:
            with torch.no_grad():
                ref = self.teacher.g_s(y_hat)[..., :h, :w]
            loss = loss + cfg.teacher_weight * F.mse_loss(out, ref)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.g_s.parameters(), 1.0)
        self.opt.step()
        self.step += 1
        return {"mse": mse, "loss": loss.item(), "lr": self.opt.param_groups[0]["lr"]}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PSNR of the student and of the teacher on the held-out patches at unit step."""
        if self.val is None:
            return {}
        self.student.eval()
        se_s = se_t = n = 0.0
        for i in range(0, len(self.val), 16):
            x = self.val[i:i + 16].to(self.device)
            h, w = x.shape[-2:]
            y_hat = self.latents(x, 1.0)
            se_s += torch.sum((self.student.g_s(y_hat)[..., :h, :w].clamp(0, 1) - x) ** 2).item()
            se_t += torch.sum((self.teacher.g_s(y_hat)[..., :h, :w].clamp(0, 1) - x) ** 2).item()
            n += x.numel()
        psnr = lambda se: 10 * math.log10(1 / max(se / n, 1e-12))  # noqa: E731
        return {"psnr": psnr(se_s), "teacher_psnr": psnr(se_t)}

    # -- state --------------------------------------------------------------------------------
    def save_state(self) -> None:
        st = {"g_s": self.student.g_s.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
              "elapsed": self.elapsed, "history": self.history, "best": self.best, "sampler": self.sampler.state(),
              "rng": self.rng.get_state(), "config": dataclasses.asdict(self.cfg)}
        torch.save(st, self.out / "state.pt.part")
        (self.out / "state.pt.part").replace(self.out / "state.pt")

    def resume_if_saved(self) -> bool:
        p = self.out / "state.pt"
        if not p.is_file():
            return False
        st = torch.load(p, map_location=self.device, weights_only=False)
        self.student.g_s.load_state_dict(st["g_s"])
        self.opt.load_state_dict(st["opt"])
        self.step, self.elapsed, self.history, self.best = st["step"], st["elapsed"], st["history"], st["best"]
        self.sampler.set_state(st["sampler"])
        self.rng.set_state(st["rng"])
        self.log(f"resumed at step {self.step}")
        return True

    def save_student(self, name: str) -> Path:
        """A checkpoint of the student: derived from the teacher (its new weights only, float16)
        when the teacher is a bundled model, else whole."""
        import copy

        from ..checkpoint import list_pretrained, save_checkpoint

        m = copy.deepcopy(self.student).cpu()
        m.weights_changed()
        base = getattr(self.teacher, "name", None)
        return save_checkpoint(m, self.out / name, name=Path(name).stem, base=base if base in list_pretrained() else None,
                               training={"distill": dataclasses.asdict(self.cfg), "history": self.history[-20:]},
                               radiometry=getattr(self.student, "radiometry_defaults", None))

    # -- loop ---------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        last_ckpt = time.monotonic()
        first = self.validate()
        if first:
            self.log(f"step {self.step}: val PSNR student {first['psnr']:.2f} dB, teacher {first['teacher_psnr']:.2f} dB")
        run_mse, t_log = 0.0, time.monotonic()
        while self.step < cfg.steps and not (cfg.time_budget_s and self.elapsed >= cfg.time_budget_s):
            t0 = time.monotonic()
            x = torch.from_numpy(self.sampler.batch(cfg.batch_size)).to(self.device, non_blocking=True)
            st = self.train_step(x)
            self.elapsed += time.monotonic() - t0
            run_mse += st["mse"]
            if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                v = self.validate()
                rec = {"step": self.step, "seconds": round(self.elapsed, 1),
                       "train_psnr": 10 * math.log10(cfg.val_every / max(run_mse, 1e-12)), **v}
                self.history.append(rec)
                run_mse = 0.0
                self.log(json.dumps({k: round(val, 3) if isinstance(val, float) else val for k, val in rec.items()}))
                if v and -v["psnr"] < self.best:
                    self.best = -v["psnr"]
                    self.save_student("best.pt")
            if time.monotonic() - last_ckpt > cfg.checkpoint_every_s:
                self.save_state()
                last_ckpt = time.monotonic()
            if time.monotonic() - t_log > 60:
                self.log(f"step {self.step} ({self.elapsed:.0f} s, {self.step * cfg.batch_size / max(self.elapsed, 1e-9):.0f} patches/s)")
                t_log = time.monotonic()
        if self.val is not None and (not self.history or self.history[-1]["step"] != self.step):
            v = self.validate()
            self.history.append({"step": self.step, "seconds": round(self.elapsed, 1), **v})
            self.log(json.dumps({k: round(val, 3) if isinstance(val, float) else val for k, val in self.history[-1].items()}))
            if -v["psnr"] < self.best:
                self.best = -v["psnr"]
                self.save_student("best.pt")
        self.save_state()
        self.save_student("latest.pt")
        if not (self.out / "best.pt").exists():
            self.save_student("best.pt")
        summary = {"steps": self.step, "seconds": round(self.elapsed, 1),
                   "patches_per_s": round(self.step * cfg.batch_size / max(self.elapsed, 1e-9), 1),
                   "final": self.history[-1] if self.history else {}, "best_psnr": -self.best}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary


def distill_on_directory(teacher: SarCodec, cfg: DistillConfig, data_dir: str | Path, out_dir: str | Path,
                         val_locations: tuple[str, ...] = ("mexico-b", "sen1floods11-spain-6860600", "sar2sar-ramb"),
                         device: str = "cpu", resume: bool = True, val_patches: int = 96,
                         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit on ``train/`` + ``ships/`` of a data root (GeoTIFFs or a prepared copy), family-balanced
    patches, validating on held-out locations (never ``test/``)."""
    from ..data.scenes import FamilySampler, load_scenes, split_by_location, tile_eval_patches

    loaded = load_scenes(data_dir, folders=("train", "ships"))
    images = {s.path: im for s, im in loaded}
    train, val = split_by_location([s for s, _ in loaded], val_locations)
    sampler = FamilySampler([images[s.path] for s in train], [s.family for s in train], (cfg.patch_size,),
                            seed=cfg.seed)
    vp = None
    if val:
        vp = tile_eval_patches([images[s.path] for s in val], cfg.patch_size)
        vp = vp[np.random.default_rng(0).permutation(len(vp))[:val_patches]]
    d = Distiller(teacher, cfg, sampler, vp, out_dir, device=device, log=log)
    log(f"distil {getattr(teacher, 'name', '?')} -> {cfg.synthesis}: train {len(train)} scenes "
        f"(families {', '.join(sampler.families)}), val {0 if vp is None else len(vp)} patches")
    if resume:
        d.resume_if_saved()
    return d.fit()
