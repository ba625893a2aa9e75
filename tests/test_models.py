import numpy as np
import pytest
import torch

import sarcodec
from sarcodec.models import bits_from_likelihoods, create_model, list_models
from sarcodec.radiometry import Radiometry

from conftest import SMALL, small_model

ARCHS = ["baseline", "resnet-lite", "residual", "attention", "hyperprior"]


def test_registry_lists_all_architectures():
    assert sorted(ARCHS) == list_models() == sarcodec.list_models()


def test_unknown_architecture_and_options():
    with pytest.raises(sarcodec.ModelError, match="unknown architecture"):
        create_model("vit")
    with pytest.raises(sarcodec.InputError, match="unknown option"):
        create_model("residual", depth=3)
    with pytest.raises(sarcodec.InputError, match="latent codec"):
        create_model("residual", latent_codec="checkerboard")


@pytest.mark.parametrize("arch", ARCHS)
def test_train_step_and_bytes_round_trip(arch, sar_300x437):
    m = small_model(arch)
    m.train()
    v, _ = Radiometry.fit(sar_300x437).forward(sar_300x437)
    x = torch.from_numpy(v)[None, None]
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    before = [p.detach().clone() for p in m.parameters()]
    out = m(x)
    assert out["x_hat"].shape == x.shape
    bpp = bits_from_likelihoods(out["likelihoods"]) / x.numel()
    loss = 100 * torch.mean((out["x_hat"] - x) ** 2) + bpp
    assert torch.isfinite(loss)
    opt.zero_grad()
    (loss + m.aux_loss()).backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters()))
    m.eval()

    data = sarcodec.encode(sar_300x437, m)
    from sarcodec.container import ContainerReader

    # bpp is counted from bytes on disk over the raster's pixels, as the container records them
    assert ContainerReader(data).header.pixels == 300 * 437 == sar_300x437.size
    out_img = sarcodec.decode(data, m)
    assert out_img.shape == (300, 437) and out_img.dtype == np.float32
    assert np.isfinite(out_img).all()
    # the decoder reproduces exactly what the encoder's model produces from the same latents
    rec = sarcodec.decode(data, m, normalized=True)
    assert rec.shape == (300, 437) and 0 <= rec.min() and rec.max() <= 1
    # rate is real: the file is (nearly) the entropy-model estimate plus container overhead
    with torch.no_grad():
        est_bits = bits_from_likelihoods(m(x)["likelihoods"]).item()
    assert 8 * len(data) > 0.9 * est_bits
    assert 8 * len(data) < 1.15 * est_bits + 8 * 2048


@pytest.mark.parametrize("arch", ARCHS)
def test_sizes_not_multiple_of_stride(arch):
    m = small_model(arch)
    for h, w in [(17, 33), (64, 65), (129, 100)]:
        x = torch.rand(1, 1, h, w)
        s = m.compress(x)
        y = m.decompress(s, h, w)
        assert y.shape == (1, 1, h, w)


def test_batch_compress_gives_independent_streams():
    m = small_model("residual")
    x = torch.rand(3, 1, 64, 64)
    streams = m.compress(x)
    single = m.compress(x[1:2])
    assert streams[1] == single[0]
    rec = m.decompress(streams, 64, 64)
    assert torch.equal(rec[1:2], m.decompress(single, 64, 64))


def test_latent_decode_is_exactly_the_encoder_latent():
    """ŷ recovered from bytes equals round(y - μ) + μ computed at the encoder."""
    m = small_model("residual")
    x = torch.rand(1, 1, 128, 96)
    data = m.compress(x)[0]
    y_hat = m.decode_latent(data, 128, 96)
    lc = m.latent_codec
    with torch.no_grad():
        y = m.g_a(m._pad(x) - 0.5)
        z_int = torch.round(lc.h_a(y).double()).long().numpy()
    mu, _ = lc.coder()._params(z_int)
    expect = (torch.round(y.double() - mu) + mu).float()
    assert torch.equal(y_hat, expect)


@pytest.mark.parametrize("codec", ["hyperprior", "scale-hyperprior", "factorized"])
def test_every_latent_codec_plugs_into_every_transform(codec):
    for arch in ("baseline", "hyperprior"):
        m = create_model(arch, **{**SMALL[arch], "latent_codec": codec})
        m.eval()
        x = torch.rand(1, 1, 70, 90)
        assert m.decompress(m.compress(x), 70, 90).shape == (1, 1, 70, 90)


def test_parameter_counts_match_prototype_table():
    from benchmarks.param_counts import PROTOTYPE_TABLE, count

    for arch, (expected, kwargs) in PROTOTYPE_TABLE.items():
        n = count(arch, **kwargs)["transforms"]
        assert abs(n - expected) / expected <= 0.15, (arch, n, expected)


@pytest.mark.parametrize("name", ["hyperprior", "default-q2", "fast-q1"])
def test_dense_synthesis_is_the_same_map(name):
    """The CPU inference form of a synthesis (transposed convs as dense sub-pixel convs, run by
    oneDNN channels-last) computes what g_s computes, to float rounding; it follows weight changes."""
    from sarcodec.models.transforms import dense_synthesis

    m = small_model("hyperprior") if name == "hyperprior" else sarcodec.load_model(name)
    c = m.latent_shape(64, 64)[1]
    y = torch.round(torch.randn(1, c, 7, 9, generator=torch.Generator().manual_seed(0)) * 3)
    with torch.no_grad():
        ref = m.g_s(y).clamp(0, 1)
        assert dense_synthesis(m.g_s) is not None
        assert (m.synthesize(y, 7 * 16, 9 * 16) - ref).abs().max() < 1e-4
        before = m.synthesize(y, 7 * 16, 9 * 16)
        next(m.g_s.parameters()).mul_(0.5)  # an in-place edit: the dense form is rebuilt
        assert (m.synthesize(y, 7 * 16, 9 * 16) - m.g_s(y).clamp(0, 1)).abs().max() < 1e-4
        assert not torch.equal(m.synthesize(y, 7 * 16, 9 * 16), before)


def test_syntheses_without_a_dense_form_keep_their_own():
    from sarcodec.models.transforms import dense_synthesis

    assert dense_synthesis(small_model("residual").g_s) is None  # batch norm, sigmoid
