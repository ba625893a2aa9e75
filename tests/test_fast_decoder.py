"""The fast synthesis (``lite``), derived checkpoints, distillation and the bundled fast family."""
import numpy as np
import pytest
import torch

import sarcodec
from sarcodec.container import ContainerReader
from sarcodec.errors import InputError, ModelError
from sarcodec.evaluation.metrics import macs_per_pixel
from sarcodec.training.distill import DistillConfig, Distiller, student_of


def test_lite_synthesis_plugs_in_through_the_registry():
    m = sarcodec.create_model("hyperprior", latent_channels=32, base_channels=16, synthesis="lite")
    assert m.config["synthesis"] == "lite" and m.config["synthesis_channels"] == [48, 64, 40, 16]
    x = torch.rand(1, 1, 80, 112)
    assert m(x)["x_hat"].shape == x.shape
    # the default widths on the shipped latent size: ~3.7 kMAC per pixel, an eighth of the hyperprior's g_s
    fast = sarcodec.create_model("hyperprior", latent_channels=144, base_channels=112, synthesis="lite")
    slow = sarcodec.create_model("hyperprior", latent_channels=144, base_channels=112)
    assert macs_per_pixel(fast, 128, ("g_s",)) < 4000 < 25000 < macs_per_pixel(slow, 128, ("g_s",))
    # configs of models without the option are unchanged
    assert "synthesis" not in slow.config
    with pytest.raises(InputError, match="unknown synthesis"):
        sarcodec.create_model("hyperprior", synthesis="tiny")
    with pytest.raises(InputError, match="needs a synthesis"):
        sarcodec.create_model("hyperprior", synthesis_channels=[8, 8, 8, 8])
    with pytest.raises(InputError, match="4 positive widths"):
        sarcodec.create_model("hyperprior", synthesis="lite", synthesis_channels=[8, 8])


def test_derived_int8_checkpoint_round_trip(tmp_path, sar_300x437):
    base = sarcodec.load_model("default-q2")
    st = student_of(base)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in st.g_s.parameters():
            p.add_(0.01 * torch.randn_like(p))
    st.weights_changed()
    f = tmp_path / "d.pt"
    sarcodec.save_checkpoint(st, f, base="default-q2", int8=True)  # rounds st in place
    obj = torch.load(f, weights_only=True)
    assert set(obj["state_dict"]) == {k for k in st.state_dict() if k.startswith("g_s.")}
    assert obj["base"]["tables"] and not obj["entropy_tables"]
    assert obj["state_dict"]["g_s.1.0.weight"].dtype == torch.int8
    assert f.stat().st_size < 400_000  # a full fp16 checkpoint of the shipped size is ~6 MB
    back = sarcodec.load_model(f)
    assert back.weights_hash() == st.weights_hash() != base.weights_hash()
    data = sarcodec.encode(sar_300x437, back, tile_size=256)
    assert np.array_equal(sarcodec.decode(data, back), sarcodec.decode(data, st))
    # the base must be the very model it was fitted to
    obj["base"]["hash"] = "0" * 16
    torch.save(obj, tmp_path / "forged.pt")
    with pytest.raises(ModelError, match="derived from 'default-q2' with hash"):
        sarcodec.load_model(tmp_path / "forged.pt")
    obj["base"]["name"] = "nope-q9"
    torch.save(obj, tmp_path / "orphan.pt")
    with pytest.raises(ModelError, match="does not bundle"):
        sarcodec.load_model(tmp_path / "orphan.pt")
    with pytest.raises(ModelError, match="derived checkpoints"):
        sarcodec.save_checkpoint(st, tmp_path / "x.pt", int8=True)


def test_fast_family_shares_the_default_latents(sar_300x437):
    """fast-qK = default-qK's analysis and latent codec: the same latent bytes per tile, so the
    two differ only in how a decoder synthesises pixels from them."""
    a = sarcodec.encode(sar_300x437, "default-q2", tile_size=256)
    b = sarcodec.encode(sar_300x437, "fast-q2", tile_size=256)
    ra, rb = ContainerReader(a), ContainerReader(b)
    assert rb.header.model["id"] == "fast-q2"
    assert [ra.tile_bytes(t) for t in ra.header.tiles] == [rb.tile_bytes(t) for t in rb.header.tiles]
    assert sarcodec.list_models()  # registry untouched
    assert [m.name for m in sarcodec.api.family_members("fast")] == ["fast-q1", "fast-q2", "fast-q3", "fast-q4"]


def test_distiller_learns_and_resumes(tmp_path):
    from conftest import small_model
    from sarcodec.training import SyntheticSampler

    teacher = small_model("hyperprior")
    cfg = DistillConfig(steps=30, batch_size=2, patch_size=64, lr=3e-3, warmup_steps=5, val_every=15,
                        channels=(8, 8, 8, 4), checkpoint_every_s=0.0)
    val = SyntheticSampler(64, seed=99).batch(4)
    d = Distiller(teacher, cfg, SyntheticSampler(64, seed=1), val, tmp_path, log=lambda s: None)
    first = d.validate()["psnr"]
    d.cfg.steps = 15
    d.fit()
    d2 = Distiller(teacher, DistillConfig(**{**cfg.__dict__, "steps": 30}), SyntheticSampler(64, seed=1), val,
                   tmp_path, log=lambda s: None)
    assert d2.resume_if_saved() and d2.step == 15
    summary = d2.fit()
    assert summary["steps"] == 30 and summary["best_psnr"] > first + 3
    m = sarcodec.load_model(tmp_path / "best.pt")  # a whole checkpoint: the teacher is not bundled
    assert m.config["synthesis"] == "lite"
    assert torch.equal(m.state_dict()["g_a.0.weight"], teacher.state_dict()["g_a.0.weight"])
