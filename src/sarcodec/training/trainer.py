"""Rate-distortion trainer: loss = lambda * D + R (bits per pixel), one code path for all models.

Schedule: linear warmup from lr/10 to lr over ``warmup_steps``, then cosine decay to lr/100 over
``steps`` (or, with ``time_budget_s``, over that many seconds of training: for one-shot runs on a
lent machine; the schedule then depends on the machine's speed, so such runs are not bit-reproducible).
Optional mixed precision (``amp: bf16 | fp16``): transforms under autocast, entropy model and loss in
float32, fp16 with a gradient scaler. AdamW (weight decay as given), gradient clipping, non-finite guard (skip, count, abort past a
threshold), auxiliary Adam for the entropy-bottleneck quantiles, ``latest``/``best`` checkpoints
and exact resume (model, optimisers, step, sampler RNG).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..checkpoint import save_checkpoint
from ..errors import SarcodecError
from ..models import SarCodec, bits_from_likelihoods, create_model

MSE_SCALE = 255.0**2  # lambda values comparable to CompressAI's (MSE of 8-bit-range images)


@dataclass
class TrainConfig:
    arch: str = "residual"
    model: dict[str, Any] = field(default_factory=dict)
    lmbda: float = 0.01
    distortion: str = "mse"  # mse | ssim | ms-ssim | mse+ssim (prototype's 0.5/0.5 mix)
    steps: int = 1000
    batch_size: int = 8
    patch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_steps: int = 100
    grad_clip: float = 1.0
    aux_lr: float = 1e-3
    max_nonfinite: int = 20
    val_every: int = 250
    seed: int = 0
    threads: int | None = None
    init_from: str | None = None  # checkpoint to start from (e.g. a rate point fine-tuned from another)
    amp: str | None = None  # None | bf16 | fp16: mixed precision for the transforms (loss stays fp32)
    time_budget_s: float | None = None  # stop after this much training time; cosine over that time

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SarcodecError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return cls(**d)


def lr_at(step: int, cfg: TrainConfig, progress: float | None = None) -> float:
    """Linear warmup lr/10 -> lr, then cosine to lr/100. ``progress`` (0..1, e.g. the fraction of a
    time budget spent) replaces the step-based position on the cosine."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (0.1 + 0.9 * step / cfg.warmup_steps)
    if progress is not None:
        t = min(1.0, max(0.0, progress))
    else:
        t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def distortion(x_hat: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "mse":
        return MSE_SCALE * torch.mean((x_hat - x) ** 2)
    from pytorch_msssim import ms_ssim, ssim

    if kind == "ssim":
        return 1 - ssim(x_hat, x, data_range=1.0)
    if kind == "ms-ssim":
        return 1 - ms_ssim(x_hat, x, data_range=1.0, win_size=7)
    if kind == "mse+ssim":
        return 0.5 * MSE_SCALE * torch.mean((x_hat - x) ** 2) + 0.5 * (1 - ssim(x_hat, x, data_range=1.0))
    raise SarcodecError(f"unknown distortion {kind!r}")


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def rd_loss(model: SarCodec, x: torch.Tensor, cfg: TrainConfig, amp: str | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """lambda * D + bpp. ``amp`` runs the model's transforms under autocast; the rate and the
    distortion are always computed in float32."""
    with torch.autocast(x.device.type, dtype=AMP_DTYPES.get(amp or "bf16"), enabled=amp is not None):
        out = model(x)  # x_hat and the likelihoods come back float32 (SarCodec.forward)
    with torch.autocast(x.device.type, enabled=False):
        bpp = bits_from_likelihoods(out["likelihoods"]) / (x.shape[0] * x.shape[-2] * x.shape[-1])
        d = distortion(out["x_hat"], x, cfg.distortion)
    mse = torch.mean((out["x_hat"].detach() - x) ** 2).item()
    return cfg.lmbda * d + bpp, {"bpp": bpp.item(), "mse": mse, "psnr": 10 * math.log10(1 / max(mse, 1e-12))}


class Trainer:
    def __init__(self, cfg: TrainConfig, sampler, val_patches: np.ndarray | None, out_dir: str | Path,
                 device: str = "cpu", log: Callable[[str], None] = print):
        self.cfg, self.sampler, self.out = cfg, sampler, Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(device)
        self.log = log
        if cfg.amp not in (None, *AMP_DTYPES):
            raise SarcodecError(f"amp must be bf16, fp16 or empty, got {cfg.amp!r}")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch shapes: pick the fastest kernels once
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.model = create_model(cfg.arch, **cfg.model).to(self.device)
        if cfg.init_from:
            from ..checkpoint import load_checkpoint

            src = load_checkpoint(cfg.init_from)
            if src.arch != cfg.arch or {k: src.config[k] for k in cfg.model} != cfg.model:
                raise SarcodecError(f"init_from {cfg.init_from}: architecture/config differ from this run")
            self.model.load_state_dict(src.state_dict())
        aux = [p for n, p in self.model.named_parameters() if n.endswith("quantiles")]
        main = [p for n, p in self.model.named_parameters() if not n.endswith("quantiles")]
        self.opt = torch.optim.AdamW(main, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.aux_opt = torch.optim.Adam(aux, lr=cfg.aux_lr)
        self.val = None if val_patches is None else torch.from_numpy(val_patches)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.step = 0
        self.elapsed = 0.0  # seconds of training so far (drives the schedule under a time budget)
        self.overflow_skips = 0  # fp16 steps the gradient scaler skipped (not failures)
        self.nonfinite = 0
        self.best = math.inf
        self.history: list[dict[str, float]] = []

    # -- state --------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "aux_opt": self.aux_opt.state_dict(),
                "scaler": self.scaler.state_dict(), "elapsed": self.elapsed, "overflow_skips": self.overflow_skips,
                "step": self.step, "nonfinite": self.nonfinite, "best": self.best, "history": self.history,
                "sampler": self.sampler.state(), "torch_rng": torch.get_rng_state(),
                "config": dataclasses.asdict(self.cfg)}

    def save_state(self) -> None:
        tmp = self.out / "trainer_state.pt.part"
        torch.save(self.state(), tmp)
        tmp.replace(self.out / "trainer_state.pt")

    def resume_if_saved(self) -> bool:
        """Resume from this run directory's saved state, if there is one."""
        if not (self.out / "trainer_state.pt").is_file():
            return False
        self.resume()
        self.log(f"resumed at step {self.step}")
        return True

    def resume(self, path: str | Path | None = None) -> None:
        st = torch.load(path or self.out / "trainer_state.pt", map_location=self.device, weights_only=False)
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.aux_opt.load_state_dict(st["aux_opt"])
        self.step, self.nonfinite, self.best = st["step"], st["nonfinite"], st["best"]
        self.elapsed, self.overflow_skips = st.get("elapsed", 0.0), st.get("overflow_skips", 0)
        if st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.history = st["history"]
        self.sampler.set_state(st["sampler"])
        torch.set_rng_state(st["torch_rng"])

    # -- loop ---------------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor) -> dict[str, float] | None:
        self.model.train()
        budget = self.cfg.time_budget_s
        lr = lr_at(self.step, self.cfg, self.elapsed / budget if budget else None)
        for g in self.opt.param_groups:
            g["lr"] = lr
        # the forward pass updates BatchNorm statistics: keep a copy to undo a skipped batch
        buffers = {k: b.detach().clone() for k, b in self.model.named_buffers()}
        loss, stats = rd_loss(self.model, x, self.cfg, self.cfg.amp)
        self.opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            return self._nonfinite("loss", buffers)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if not torch.isfinite(gnorm):
            if self.scaler.is_enabled():  # fp16 overflow: the scaler skips the step and lowers its scale
                self.scaler.step(self.opt)
                self.scaler.update()
                self.overflow_skips += 1
                self.opt.zero_grad(set_to_none=True)
                self._restore_buffers(buffers)
                self.step += 1
                return None
            self.opt.zero_grad(set_to_none=True)
            return self._nonfinite("gradient", buffers)
        self.scaler.step(self.opt)
        self.scaler.update()
        aux = self.model.aux_loss()
        self.aux_opt.zero_grad(set_to_none=True)
        aux.backward()
        self.aux_opt.step()
        self.step += 1
        return {**stats, "loss": loss.item(), "aux": aux.item(), "lr": self.opt.param_groups[0]["lr"]}

    def _restore_buffers(self, buffers: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, b in self.model.named_buffers():
                b.copy_(buffers[k])

    def _nonfinite(self, what: str, buffers: dict[str, torch.Tensor]) -> None:
        self._restore_buffers(buffers)
        self.step += 1
        self.nonfinite += 1
        self.log(f"step {self.step}: non-finite {what}, batch skipped ({self.nonfinite} so far)")
        if self.nonfinite > self.cfg.max_nonfinite:
            raise SarcodecError(f"training aborted: {self.nonfinite} non-finite batches (limit {self.cfg.max_nonfinite})")
        return None

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if self.val is None:
            return {}
        self.model.eval()
        tot = {"bpp": 0.0, "mse": 0.0, "loss": 0.0}
        n = 0
        for i in range(0, len(self.val), 16):
            x = self.val[i:i + 16].to(self.device)
            loss, st = rd_loss(self.model, x, self.cfg)
            k = x.shape[0]
            tot["bpp"] += st["bpp"] * k
            tot["mse"] += st["mse"] * k
            tot["loss"] += loss.item() * k
            n += k
        res = {k: v / n for k, v in tot.items()}
        res["psnr"] = 10 * math.log10(1 / max(res["mse"], 1e-12))
        return res

    def fit(self, until: int | None = None) -> dict[str, Any]:
        """Train to ``cfg.steps`` (or stop early at step ``until``, state saved, e.g. to resume later)."""
        cfg = self.cfg
        t0 = time.time()
        seen = 0
        stop = min(cfg.steps, until) if until is not None else cfg.steps
        budget = cfg.time_budget_s
        base = self.elapsed
        while self.step < stop and not (budget and self.elapsed >= budget):
            x = torch.from_numpy(self.sampler.batch(cfg.batch_size)).to(self.device, non_blocking=True)
            st = self.train_step(x)
            seen += cfg.batch_size
            self.elapsed = base + time.time() - t0
            last = self.step >= stop or bool(budget and self.elapsed >= budget)
            if st and (self.step % 50 == 0 or self.step == 1):
                el = time.time() - t0
                self.log(f"step {self.step}/{cfg.steps} loss {st['loss']:.4f} bpp {st['bpp']:.3f} "
                         f"psnr {st['psnr']:.2f} lr {st['lr']:.2e} aux {st['aux']:.1f} | {seen / el:.1f} patches/s")
            if self.step % cfg.val_every == 0 or last:
                v = self.validate()
                if v:
                    v["step"] = self.step
                    self.history.append(v)
                    self.log(f"  val step {self.step}: loss {v['loss']:.4f} bpp {v['bpp']:.3f} psnr {v['psnr']:.2f}")
                    if v["loss"] < self.best:
                        self.best = v["loss"]
                        self.export(self.out / "best.pt")
                self.export(self.out / "latest.pt")
                self.save_state()
        summary = {"steps": self.step, "seconds": round(time.time() - t0, 1), "patches": seen,
                   "patches_per_s": round(seen / max(time.time() - t0, 1e-9), 2), "nonfinite": self.nonfinite,
                   "overflow_skips": self.overflow_skips, "device": str(self.device), "amp": cfg.amp,
                   "best_val_loss": self.best, "history": self.history}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary

    def export(self, path: Path) -> None:
        self.model.eval()
        save_checkpoint(self.model, path, name=path.stem,
                        training={"config": dataclasses.asdict(self.cfg), "step": self.step,
                                  "device": str(self.device), "torch_threads": torch.get_num_threads()})
