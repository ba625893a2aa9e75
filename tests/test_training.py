import math

import numpy as np
import pytest
import torch

from sarcodec.data.patchstore import PatchStore, StoreSampler, extract_patches
from sarcodec.data.synthetic import synthetic_sar
from sarcodec.errors import InputError, SarcodecError
from sarcodec.radiometry import Radiometry
from sarcodec.training import SyntheticSampler, TrainConfig, load_config
from sarcodec.training.trainer import Trainer, lr_at

CFG = dict(arch="residual", model=dict(latent_channels=8, base_channels=8, hyper_channels=8), lmbda=0.01, steps=6,
           batch_size=2, patch_size=64, lr=1e-3, warmup_steps=3, val_every=3, seed=3, threads=1)


def test_warmup_and_cosine_schedule_values():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, steps=110)
    assert lr_at(0, cfg) == pytest.approx(1e-4)  # starts at lr/10
    assert lr_at(5, cfg) == pytest.approx(1e-4 + 0.5 * 9e-4)  # linear
    assert lr_at(10, cfg) == pytest.approx(1e-3)  # reaches lr
    assert lr_at(60, cfg) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))  # cosine midpoint
    assert lr_at(110, cfg) == pytest.approx(1e-5)  # ends at lr/100


def _trainer(tmp_path, **kw):
    cfg = TrainConfig(**{**CFG, **kw})
    sampler = SyntheticSampler(cfg.patch_size, seed=cfg.seed)
    val = SyntheticSampler(cfg.patch_size, seed=99).batch(2)
    return Trainer(cfg, sampler, val, tmp_path, log=lambda s: None)


def test_weight_decay_and_clipping_are_applied(tmp_path):
    t = _trainer(tmp_path, grad_clip=1e-3, weight_decay=0.5)
    assert t.opt.param_groups[0]["weight_decay"] == 0.5
    seen = []
    orig = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        params = list(params)
        total = orig(params, max_norm, *a, **k)
        seen.append(math.sqrt(sum(float(p.grad.norm()) ** 2 for p in params if p.grad is not None)))
        return total

    torch.nn.utils.clip_grad_norm_ = spy
    try:
        t.train_step(torch.from_numpy(t.sampler.batch(2)))
    finally:
        torch.nn.utils.clip_grad_norm_ = orig
    assert seen and seen[0] <= 1e-3 * 1.01


def test_resume_is_exact(tmp_path):
    """N steps in one go == k steps, save, new process-like trainer, resume, N-k steps."""
    a = _trainer(tmp_path / "a")
    a.fit()
    b = _trainer(tmp_path / "b")
    b.fit(until=3)  # same config, stopped early; state saved
    c = _trainer(tmp_path / "b")
    c.resume()
    assert c.step == 3
    # the restored state is bit-identical to the state at the stop (weights, BN stats, optimiser
    # moments, sampler and torch RNG)
    for (k, vb), vc in zip(b.model.state_dict().items(), c.model.state_dict().values()):
        assert torch.equal(vb, vc), k
    assert torch.equal(b.state()["torch_rng"], c.state()["torch_rng"]) and b.sampler.state() == c.sampler.state()
    c.fit()
    # Continuing reproduces the uninterrupted run's trajectory. Not bit for bit: CPU kernels round
    # differently with call history (~1e-7 relative in gradients), and Adam turns that into
    # lr-sized steps on parameters whose true gradient is zero. So compare the *movement* after
    # the stop: a lost optimiser state or RNG would change it by tens of percent.
    assert [h["loss"] for h in c.history] == pytest.approx([h["loss"] for h in a.history], rel=1e-4)
    flat = lambda m: torch.cat([v.double().flatten() for k, v in m.state_dict().items() if v.is_floating_point()])
    moved = (flat(a.model) - flat(b.model)).norm()
    off = (flat(c.model) - flat(a.model)).norm()
    assert moved > 0 and off / moved < 0.05, float(off / moved)


def test_nonfinite_guard_skips_counts_and_aborts(tmp_path):
    t = _trainer(tmp_path, max_nonfinite=2)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    bad = torch.full((2, 1, 64, 64), float("nan"))
    assert t.train_step(bad) is None and t.nonfinite == 1
    assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())  # nothing applied
    t.train_step(bad)
    with pytest.raises(SarcodecError, match="non-finite"):
        t.train_step(bad)


def test_patch_store_build_and_read(tmp_path):
    imgs = []
    for i in range(3):
        x = synthetic_sar((150, 200), seed=i)
        v, inv = Radiometry.fit(x).forward(x)
        imgs.append((f"scene{i}", v, inv))
    v0 = imgs[0][1]
    bad = np.zeros_like(imgs[1][2])
    bad[:64, :64] = True  # this corner patch must be filtered out
    imgs[1] = (imgs[1][0], imgs[1][1], bad)
    store = PatchStore.build(tmp_path / "store", imgs, patch=64, overlap=16)
    expected = [len(list(extract_patches(v, 64, 16, inv))) for _, v, inv in imgs]
    unfiltered = len(list(extract_patches(imgs[1][1], 64, 16)))
    # patches (step 48) overlapping the invalid 64x64 corner by more than 5% are dropped: 4 of them
    assert expected[1] == unfiltered - 4
    assert len(store) == sum(expected)
    reopened = PatchStore(tmp_path / "store")
    first = next(extract_patches(v0, 64, 16))
    np.testing.assert_allclose(reopened[0], first[2], atol=1e-3)  # float16 storage
    assert [s["count"] for s in reopened.meta["sources"]] == expected
    b = StoreSampler(reopened, seed=0).batch(5)
    assert b.shape == (5, 1, 64, 64) and b.dtype == np.float32
    with pytest.raises(InputError):
        PatchStore(tmp_path / "nope")


def test_config_loading_validation_and_overrides(tmp_path):
    cfg, data = load_config("configs/residual.yaml", ["lmbda=0.02", "model.base_channels=16", "data.source=synthetic"])
    assert cfg.lmbda == 0.02 and cfg.model["base_channels"] == 16 and data["source"] == "synthetic"
    q, _ = load_config("configs/attention.yaml", quick=True)
    assert q.steps < 100 and q.patch_size == 64
    for bad in (["lr=abc"], ["steps=-1"], ["arch=vit"], ["nonsense=1"], ["patch_size=100"], ["justakey"]):
        with pytest.raises(SarcodecError):
            load_config("configs/residual.yaml", bad)
    (tmp_path / "x.yaml").write_text("- a\n- b\n")
    with pytest.raises(InputError):
        load_config(tmp_path / "x.yaml")


@pytest.mark.parametrize("arch", ["baseline", "resnet-lite", "residual", "attention", "hyperprior"])
def test_quick_training_every_architecture_on_synthetic(arch, tmp_path):
    """The shipped configs run end to end (quick mode, trimmed further for test time)."""
    from sarcodec.training import run_config

    cfg, data = load_config(f"configs/{arch}.yaml", ["steps=2", "val_every=2", "batch_size=2",
                                                    "model.base_channels=8", "data.source=synthetic",
                                                    "data.val_patches=2"], quick=True)
    cfg.steps, cfg.val_every = 2, 2
    s = run_config(cfg, data, tmp_path)
    assert s["steps"] == 2 and (tmp_path / "best.pt").is_file() and math.isfinite(s["history"][-1]["psnr"])


def test_resume_if_saved(tmp_path):
    t = _trainer(tmp_path)
    assert t.resume_if_saved() is False and t.step == 0  # nothing saved yet: a fresh start
    t.fit(until=3)
    u = _trainer(tmp_path)
    assert u.resume_if_saved() is True and u.step == 3


def test_schedule_follows_a_time_budget():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, steps=10**9, time_budget_s=100.0)
    assert lr_at(5, cfg, progress=0.0) == pytest.approx(1e-4 + 0.5 * 9e-4)  # warmup still counts steps
    assert lr_at(50, cfg, progress=0.5) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert lr_at(50, cfg, progress=1.5) == pytest.approx(1e-5)  # clamped at the end


def test_time_budget_stops_training_and_resumes_its_clock(tmp_path):
    t = _trainer(tmp_path, steps=10**6, val_every=10**6, time_budget_s=1.0)
    s = t.fit()
    assert 0 < s["steps"] < 10**6 and t.elapsed >= 1.0
    assert t.history and (tmp_path / "best.pt").is_file()  # validated and exported at the stop
    u = _trainer(tmp_path, steps=10**6, val_every=10**6, time_budget_s=1.0)
    assert u.resume_if_saved() and u.elapsed == pytest.approx(t.elapsed)
    assert u.fit()["steps"] == t.step  # the budget is spent: nothing more to do


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_keeps_rate_and_loss_in_float32(amp, tmp_path):
    """autocast covers the transforms; likelihoods, bpp and the loss stay float32 (CPU autocast
    here; the same code path runs on CUDA)."""
    from sarcodec.models import bits_from_likelihoods
    from sarcodec.training.trainer import rd_loss

    t = _trainer(tmp_path, amp=amp)
    x = torch.from_numpy(t.sampler.batch(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = t.model(x)
    assert all(v.dtype == torch.float32 for v in out["likelihoods"].values())
    assert out["x_hat"].dtype == torch.float32 and torch.isfinite(bits_from_likelihoods(out["likelihoods"]))
    loss, _ = rd_loss(t.model, x, t.cfg, amp)
    assert loss.dtype == torch.float32
    st = t.train_step(x)
    assert (st is not None and math.isfinite(st["loss"])) or t.overflow_skips == 1  # fp16 may skip its first step
    with pytest.raises(SarcodecError, match="amp"):
        _trainer(tmp_path / "x", amp="int8")


def test_prepared_dataset_trains_like_the_geotiffs(tmp_path):
    """prepare_dataset: float16 normalised copies of train/ + ships/ (never test/), read back by the
    same training entry point."""
    rasterio = pytest.importorskip("rasterio")
    import json

    from sarcodec.data.scenes import load_scenes, prepare_dataset
    from sarcodec.training import train_on_directory

    root = tmp_path / "sar"
    index = []
    for split, loc in [("train", "alpha"), ("train", "beta"), ("test", "gamma")]:
        (root / split).mkdir(parents=True, exist_ok=True)
        x = synthetic_sar((128, 128), seed=len(index))
        name = f"{split}/s1_{loc}_vv.tif"
        with rasterio.open(root / name, "w", driver="GTiff", width=128, height=128, count=1, dtype="float32") as ds:
            ds.write(x, 1)
        index.append({"file": name, "split": split, "location": loc, "pol": "vv"})
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match="test"):
        prepare_dataset(root, tmp_path / "bad", folders=("train", "test"))
    assert prepare_dataset(root, tmp_path / "prep") == 2
    assert not (tmp_path / "prep" / "test").exists()
    orig, prep = load_scenes(root), load_scenes(tmp_path / "prep")
    assert [s.location for s, _ in orig] == [s.location for s, _ in prep] == ["alpha", "beta"]
    for (_, a), (_, b) in zip(orig, prep):
        assert b.dtype == np.float32 and np.abs(a - b).max() < 2.5e-4
    cfg = TrainConfig(**{**CFG, "steps": 2, "val_every": 2})
    s = train_on_directory(cfg, tmp_path / "prep", tmp_path / "run", val_locations=("beta",))
    assert s["steps"] == 2 and s["history"]


def test_plateau_schedule_and_early_stopping(tmp_path):
    from sarcodec.training.trainer import Plateau

    p = Plateau(patience=1, factor=0.5)
    assert [p.update(v) for v in (1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.8)] == [False, False, False, True, False, True, False]
    assert p.scale == 0.25 and p.best == 0.8
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, scheduler="plateau")
    assert lr_at(5, cfg, plateau_scale=0.25) == pytest.approx(1e-4 + 0.5 * 9e-4)  # warmup first
    assert lr_at(50, cfg, plateau_scale=0.25) == pytest.approx(2.5e-4)
    assert lr_at(50, cfg, plateau_scale=1e-6) == pytest.approx(1e-5)  # floor lr/100

    # validation losses 1, 2, 3, ...: never a new best after the first -> plateau drops, then a stop
    t = _trainer(tmp_path, steps=100, val_every=2, warmup_steps=0, scheduler="plateau", plateau_patience=0,
                 early_stop_patience=3)
    losses = iter(range(1, 100))
    t.validate = lambda: {"loss": float(next(losses)), "bpp": 0.1, "mse": 0.01, "psnr": 20.0}
    s = t.fit()
    assert s["stopped_early"] and s["steps"] == 8 and t.since_best == 3
    assert s["lr_scale"] == 0.125 and t.opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.25)
    u = _trainer(tmp_path, steps=100, val_every=2, warmup_steps=0, scheduler="plateau", plateau_patience=0,
                 early_stop_patience=3)
    assert u.resume_if_saved() and u.plateau.scale == 0.125 and u.since_best == 3  # schedule state resumes
    with pytest.raises(SarcodecError, match="validation"):
        Trainer(TrainConfig(**{**CFG, "early_stop_patience": 2}), SyntheticSampler(64), None, tmp_path / "x")


def test_tensorboard_scalars_images_histograms(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    t = _trainer(tmp_path, log_every=2)
    t.fit()
    ea = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "histograms": 0}).Reload()
    tags = ea.Tags()
    assert {"train/loss", "train/bpp", "train/lr", "val/psnr", "val/bpp", "val/bpp_real", "val/ssim"} <= set(tags["scalars"])
    v = t.history[-1]
    assert 0 < v["ssim"] <= 1 and v["bpp_real"] > 0  # SSIM, and bpp from real entropy-coded bytes
    assert [e.step for e in ea.Scalars("val/loss")] == [3, 6]
    assert tags["images"] == ["val/original_vs_reconstruction"]
    assert "latent/y" in tags["histograms"] and any(k.startswith("weights/g_a") for k in tags["histograms"])


def test_ddp_under_torchrun_two_cpu_processes(tmp_path):
    """`torchrun -m sarcodec train` with two gloo processes: they draw different patches, end with
    the same weights, and the run resumes with each rank's own sampler state."""
    import json
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "sarcodec",
           "train", "--config", "configs/residual.yaml", "--quick", "--out", str(tmp_path / "run"),
           "data.source=synthetic", "data.val_patches=2", "batch_size=2", "model.base_channels=8",
           "model.latent_channels=8", "val_every=2", "threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd + ["steps=2"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["processes"] == 2 and s["ranks_in_sync"] and s["steps"] == 2 and s["patches"] == 8
    st = torch.load(tmp_path / "run" / "trainer_state.pt", weights_only=False)
    assert len(st["ranks"]) == 2 and st["ranks"][0]["sampler"] != st["ranks"][1]["sampler"]
    r = subprocess.run(cmd + ["steps=4", "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["steps"] == 4 and s["ranks_in_sync"] and "resumed at step 2" in r.stdout
    r = subprocess.run([sys.executable, "-m", "sarcodec", "train", "--config", "configs/residual.yaml", "--quick",
                        "--out", str(tmp_path / "run"), "data.source=synthetic", "model.base_channels=8",
                        "model.latent_channels=8", "steps=6", "--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 3 and "2 process(es)" in r.stdout + r.stderr  # 2-process state, 1 process: refused
