"""Rate-distortion trainer: loss = lambda * D + R (bits per pixel), one code path for all models,
for a CPU, one GPU, or several processes under ``torchrun`` (DDP, see :mod:`.distributed`).

Schedule: linear warmup from lr/10 to lr over ``warmup_steps``, then either cosine decay to lr/100
over ``steps`` (or, with ``time_budget_s``, over that many seconds of training: for one-shot runs on
a lent machine; the schedule then depends on the machine's speed, so such runs are not
bit-reproducible), or ``scheduler: plateau``: lr times ``plateau_factor`` whenever the validation
loss has not improved for ``plateau_patience`` validations (floor lr/100). ``early_stop_patience``
ends a run after that many validations without a new best.
Optional mixed precision (``amp: bf16 | fp16``): transforms under autocast, entropy model and loss in
float32, fp16 with a gradient scaler. AdamW (weight decay as given), gradient clipping, non-finite
guard (skip, count, abort past a threshold), auxiliary Adam for the entropy-bottleneck quantiles,
``latest``/``best`` checkpoints, exact resume (model, optimisers, step, schedule, every rank's
sampler RNG), TensorBoard logs in ``<run>/tb`` (scalars, image grids, histograms) and a rich
progress bar.
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
from ..errors import InputError, SarcodecError
from ..models import MSE_SCALE, SarCodec, bits_from_likelihoods, create_model
from .distributed import DistEnv, from_env


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
    scheduler: str = "cosine"  # cosine | plateau (ReduceLROnPlateau on the validation loss)
    plateau_patience: int = 3  # validations without improvement before the lr drops
    plateau_factor: float = 0.5
    early_stop_patience: int | None = None  # stop after this many validations without a new best
    log_every: int = 50
    tensorboard: bool = True  # <run>/tb: scalars, validation image grid, latent/weight histograms

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SarcodecError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return cls(**d)


def lr_at(step: int, cfg: TrainConfig, progress: float | None = None, plateau_scale: float = 1.0) -> float:
    """Linear warmup lr/10 -> lr, then cosine to lr/100. ``progress`` (0..1, e.g. the fraction of a
    time budget spent) replaces the step-based position on the cosine. With ``scheduler: plateau``
    the lr after warmup is lr x ``plateau_scale`` (the reductions so far)."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (0.1 + 0.9 * step / cfg.warmup_steps)
    if cfg.scheduler == "plateau":
        return cfg.lr * max(plateau_scale, 0.01)
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
    return rd_terms(out, x, cfg)


def rd_terms(out: dict[str, Any], x: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss and its parts from a forward pass's output, in float32."""
    with torch.autocast(x.device.type, enabled=False):
        bpp = bits_from_likelihoods(out["likelihoods"]) / (x.shape[0] * x.shape[-2] * x.shape[-1])
        d = distortion(out["x_hat"], x, cfg.distortion)
    mse = torch.mean((out["x_hat"].detach() - x) ** 2).item()
    return cfg.lmbda * d + bpp, {"bpp": bpp.item(), "mse": mse, "psnr": 10 * math.log10(1 / max(mse, 1e-12))}


class Plateau:
    """ReduceLROnPlateau on the validation loss, as plain state (saved with the trainer)."""

    def __init__(self, patience: int, factor: float):
        self.patience, self.factor = patience, factor
        self.scale, self.best, self.bad = 1.0, math.inf, 0

    def update(self, loss: float) -> bool:
        """Record a validation loss; True when the lr was just reduced."""
        if loss < self.best * (1 - 1e-4):
            self.best, self.bad = loss, 0
            return False
        self.bad += 1
        if self.bad > self.patience and self.scale > 0.01:
            self.scale, self.bad = max(self.scale * self.factor, 0.01), 0
            return True
        return False

    def state(self) -> dict[str, float]:
        return {"scale": self.scale, "best": self.best, "bad": self.bad}

    def set_state(self, st: dict[str, float]) -> None:
        self.scale, self.best, self.bad = st["scale"], st["best"], int(st["bad"])


class Trainer:
    def __init__(self, cfg: TrainConfig, sampler, val_patches: np.ndarray | None, out_dir: str | Path,
                 device: str = "cpu", log: Callable[[str], None] = print, progress: bool = False,
                 dist: DistEnv | None = None):
        self.cfg, self.sampler, self.out = cfg, sampler, Path(out_dir)
        self.dist = dist or from_env(device)
        self.device = self.dist.device(device)
        self.main = self.dist.is_main
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.log = log if self.main else (lambda s: None)
        self.progress = progress and self.main
        if cfg.amp not in (None, *AMP_DTYPES):
            raise SarcodecError(f"amp must be bf16, fp16 or empty, got {cfg.amp!r}")
        if cfg.scheduler not in ("cosine", "plateau"):
            raise SarcodecError(f"scheduler must be cosine or plateau, got {cfg.scheduler!r}")
        if val_patches is None and (cfg.scheduler == "plateau" or cfg.early_stop_patience):
            raise SarcodecError("scheduler=plateau and early stopping need validation data")
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
        self.aux_params = aux
        self.aux_opt = torch.optim.Adam(aux, lr=cfg.aux_lr)
        self.net: torch.nn.Module = self.model
        if self.dist.enabled:
            # the quantiles are the auxiliary loss's alone (no part of the forward pass): DDP leaves
            # them out and their gradients are averaged by hand (DistEnv.mean_)
            self.model._ddp_params_and_buffers_to_ignore = [n for n, _ in self.model.named_parameters()
                                                            if n.endswith("quantiles")]
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.val = None if val_patches is None else torch.from_numpy(val_patches)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.step = 0
        self.elapsed = 0.0  # seconds of training so far (drives the schedule under a time budget)
        self.overflow_skips = 0  # fp16 steps the gradient scaler skipped (not failures)
        self.nonfinite = 0
        self.best = math.inf
        self.since_best = 0  # validations without a new best (early stopping)
        self.plateau = Plateau(cfg.plateau_patience, cfg.plateau_factor)
        self.history: list[dict[str, float]] = []
        self._tb = None

    # -- state --------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything a resume needs. Collective under DDP (every rank's sampler and RNG state)."""
        ranks = self.dist.gather({"sampler": self.sampler.state(), "torch_rng": torch.get_rng_state()})
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "aux_opt": self.aux_opt.state_dict(),
                "scaler": self.scaler.state_dict(), "elapsed": self.elapsed, "overflow_skips": self.overflow_skips,
                "step": self.step, "nonfinite": self.nonfinite, "best": self.best, "history": self.history,
                "since_best": self.since_best, "plateau": self.plateau.state(),
                "sampler": ranks[0]["sampler"], "torch_rng": ranks[0]["torch_rng"], "ranks": ranks,
                "config": dataclasses.asdict(self.cfg)}

    def save_state(self) -> None:
        st = self.state()
        if not self.main:
            return
        tmp = self.out / "trainer_state.pt.part"
        torch.save(st, tmp)
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
        self.since_best = st.get("since_best", 0)
        if st.get("plateau"):
            self.plateau.set_state(st["plateau"])
        if st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.history = st["history"]
        ranks = st.get("ranks") or [{"sampler": st["sampler"], "torch_rng": st["torch_rng"]}]
        if len(ranks) != self.dist.world:
            raise InputError(f"the saved run had {len(ranks)} process(es), this one has {self.dist.world}: "
                                "resume with the same torchrun --nproc_per_node")
        self.sampler.set_state(ranks[self.dist.rank]["sampler"])
        torch.set_rng_state(ranks[self.dist.rank]["torch_rng"])

    # -- loop ---------------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor) -> dict[str, float] | None:
        self.model.train()
        budget = self.cfg.time_budget_s
        lr = lr_at(self.step, self.cfg, self.elapsed / budget if budget else None, self.plateau.scale)
        for g in self.opt.param_groups:
            g["lr"] = lr
        # the forward pass updates BatchNorm statistics: keep a copy to undo a skipped batch
        buffers = {k: b.detach().clone() for k, b in self.model.named_buffers()}
        loss, stats = rd_loss(self.net, x, self.cfg, self.cfg.amp)
        self.opt.zero_grad(set_to_none=True)
        # all ranks skip together (a rank that skipped alone would leave the others in backward)
        if self.dist.max([float(not torch.isfinite(loss))], self.device)[0]:
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
        self.dist.mean_([p.grad for p in self.aux_params if p.grad is not None])
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
        from pytorch_msssim import ssim

        self.model.eval()
        tot = {"bpp": 0.0, "mse": 0.0, "loss": 0.0, "ssim": 0.0}
        n, nbytes = 0, 0
        for i in range(0, len(self.val), 16):
            x = self.val[i:i + 16].to(self.device)
            out = self.model(x)
            loss, st = rd_terms(out, x, self.cfg)
            x_hat = out["x_hat"].clamp(0, 1)
            k = x.shape[0]
            tot["bpp"] += st["bpp"] * k
            tot["mse"] += st["mse"] * k
            tot["loss"] += loss.item() * k
            tot["ssim"] += ssim(x_hat, x, data_range=1.0, size_average=True).item() * k
            nbytes += sum(len(b) for b in self.model.compress(x))  # the real bitstream, entropy-coded
            n += k
        res = {k: v / n for k, v in tot.items()}
        res["psnr"] = 10 * math.log10(1 / max(res["mse"], 1e-12))
        res["bpp_real"] = 8 * nbytes / (n * self.val.shape[-2] * self.val.shape[-1])
        return self.dist.from_main(res)  # every rank acts on the same numbers

    def fit(self, until: int | None = None) -> dict[str, Any]:
        """Train to ``cfg.steps`` (or stop early at step ``until``, state saved, e.g. to resume later;
        or at the time budget; or by early stopping)."""
        cfg = self.cfg
        t0 = time.time()
        seen = 0
        stop = min(cfg.steps, until) if until is not None else cfg.steps
        budget = cfg.time_budget_s
        base = self.elapsed
        stopped_early = False
        bar = self._progress_bar(stop)
        try:
            while self.step < stop and not (budget and self.elapsed >= budget) and not stopped_early:
                x = torch.from_numpy(self.sampler.batch(cfg.batch_size)).to(self.device, non_blocking=True)
                st = self.train_step(x)
                seen += cfg.batch_size
                # one clock for all ranks (the slowest), so that they stop at the same step
                self.elapsed = self.dist.max([base + time.time() - t0], self.device)[0]
                last = self.step >= stop or bool(budget and self.elapsed >= budget)
                rate = seen * self.dist.world / max(time.time() - t0, 1e-9)
                if st and bar is not None:
                    bar[0].update(bar[1], completed=self.step, info=f"loss {st['loss']:.4f} bpp {st['bpp']:.3f} "
                                  f"psnr {st['psnr']:.2f} | {rate:.1f} patches/s")
                if st and (self.step % cfg.log_every == 0 or self.step == 1):
                    if bar is None:
                        self.log(f"step {self.step}/{cfg.steps} loss {st['loss']:.4f} bpp {st['bpp']:.3f} "
                                 f"psnr {st['psnr']:.2f} lr {st['lr']:.2e} aux {st['aux']:.1f} | {rate:.1f} patches/s")
                    self._scalars("train", {**st, "patches_per_s": rate})
                if self.step % cfg.val_every == 0 or last:
                    stopped_early = self._validate_and_save()
        finally:
            if bar is not None:
                bar[0].stop()
        if stopped_early:
            self.log(f"early stop at step {self.step}: no better validation loss in {self.since_best} validations")
        summary = {"steps": self.step, "seconds": round(time.time() - t0, 1), "patches": seen * self.dist.world,
                   "patches_per_s": round(seen * self.dist.world / max(time.time() - t0, 1e-9), 2),
                   "nonfinite": self.nonfinite, "overflow_skips": self.overflow_skips, "device": str(self.device),
                   "processes": self.dist.world, "amp": cfg.amp, "stopped_early": stopped_early,
                   "lr_scale": self.plateau.scale, "best_val_loss": self.best, "history": self.history}
        if self.dist.enabled:  # a cheap guard: every rank must hold the same weights
            sums = self.dist.gather(sum(float(p.detach().double().abs().sum()) for p in self.model.parameters()))
            summary["ranks_in_sync"] = max(sums) - min(sums) <= 1e-9 * max(abs(sums[0]), 1.0)
            if not summary["ranks_in_sync"]:
                self.log(f"warning: the {self.dist.world} processes ended with different weights ({sums})")
        if self.main:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        if self._tb is not None:
            self._tb.flush()
        self.dist.barrier()
        return summary

    def _validate_and_save(self) -> bool:
        """Validate, keep ``best``/``latest`` and the state; True when early stopping says stop."""
        cfg = self.cfg
        v = self.validate()
        stop = False
        if v:
            v["step"] = self.step
            self.history.append(v)
            self.log(f"  val step {self.step}: loss {v['loss']:.4f} bpp {v['bpp']:.3f} "
                     f"(real bytes {v.get('bpp_real', math.nan):.3f}) psnr {v['psnr']:.2f} ssim {v.get('ssim', math.nan):.4f}")
            if cfg.scheduler == "plateau" and self.step >= cfg.warmup_steps and self.plateau.update(v["loss"]):
                self.log(f"  validation loss on a plateau: lr x{self.plateau.scale:g}")
            if v["loss"] < self.best:
                self.best, self.since_best = v["loss"], 0
                if self.main:
                    self.export(self.out / "best.pt")
            else:
                self.since_best += 1
            stop = bool(cfg.early_stop_patience and self.since_best >= cfg.early_stop_patience)
            self._scalars("val", {**v, "lr_scale": self.plateau.scale})
            self._images_and_histograms()
        if self.main:
            self.export(self.out / "latest.pt")
        self.save_state()
        return stop

    # -- reporting ------------------------------------------------------------------------------
    def _progress_bar(self, total: int):
        if not self.progress:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        p = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        task = p.add_task("train", total=total, completed=self.step, info="")
        p.start()
        self.log = p.console.print  # messages print above the bar
        return p, task

    def _writer(self):
        """TensorBoard writer on rank 0 (None without ``tensorboard`` installed or when turned off)."""
        if self._tb is None and self.cfg.tensorboard and self.main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # pragma: no cover - tensorboard is in the [train] extra
                self.log("tensorboard is not installed (pip install tensorboard): no TensorBoard logs")
                self.cfg.tensorboard = False
                return None
            self._tb = SummaryWriter(str(self.out / "tb"), purge_step=self.step or None)
        return self._tb

    def _scalars(self, group: str, values: dict[str, float]) -> None:
        w = self._writer()
        if w is not None:
            for k, v in values.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    w.add_scalar(f"{group}/{k}", v, self.step)

    @torch.no_grad()
    def _images_and_histograms(self) -> None:
        """Validation grid (top: originals, bottom: reconstructions), histograms of the latents and
        of each transform's weights."""
        w = self._writer()
        if w is None or self.val is None:
            return
        self.model.eval()
        x = self.val[:4].to(self.device)
        out = self.model(x)
        grid = torch.cat([torch.cat(list(x[:, 0]), dim=1), torch.cat(list(out["x_hat"][:, 0].clamp(0, 1)), dim=1)], dim=0)
        w.add_image("val/original_vs_reconstruction", grid.float().cpu(), self.step, dataformats="HW")
        y = self.model.g_a(self.model._pad(x) - 0.5)
        w.add_histogram("latent/y", y.float().cpu(), self.step)
        for name, lik in out["likelihoods"].items():
            w.add_histogram(f"latent/bits_{name}", (-torch.log2(lik)).float().cpu(), self.step)
        for name, p in self.model.named_parameters():
            if p.dim() == 4 and name.startswith(("g_a", "g_s")):
                w.add_histogram(f"weights/{name}", p.detach().float().cpu(), self.step)

    def export(self, path: Path) -> None:
        self.model.eval()
        save_checkpoint(self.model, path, name=path.stem,
                        training={"config": dataclasses.asdict(self.cfg), "step": self.step,
                                  "device": str(self.device), "torch_threads": torch.get_num_threads()})
