import numpy as np
import pytest

from sarcodec.data import synthetic_sar
from sarcodec.evaluation.metrics import (
    BenchmarkDomain, bd_psnr, bd_rate, bd_rate_pchip, enl, enl_ratio, epi, ms_ssim, psnr, rmse_db, ssim,
)


@pytest.mark.parametrize("looks", [1, 4, 10])
def test_enl_of_pure_gamma_speckle_is_the_number_of_looks(looks):
    x = np.random.default_rng(looks).gamma(looks, 1.0 / looks, size=200_000) * 0.07
    assert enl(x) == pytest.approx(looks, rel=0.03)


def test_enl_ratio_identity_and_smoothing():
    img = synthetic_sar((256, 256), seed=3, looks=4)
    assert enl_ratio(img, img) == pytest.approx(1.0)
    from scipy.ndimage import uniform_filter

    assert enl_ratio(img, uniform_filter(img, 3)) > 3  # a 3x3 mean filter multiplies ENL


def test_epi():
    img = synthetic_sar((128, 128), seed=1)
    v = BenchmarkDomain(img)(img)
    assert epi(v, v) == pytest.approx(1.0)
    from scipy.ndimage import gaussian_filter

    assert epi(v, gaussian_filter(v, 2)) < 0.6


def test_psnr_rmse_ssim_hand_values():
    a = np.zeros((64, 64))
    b = np.full((64, 64), 0.1)
    assert psnr(a, b) == pytest.approx(20.0)
    assert psnr(a, a) == float("inf")
    i = np.full((10, 10), 1.0)
    assert rmse_db(i, i * 10) == pytest.approx(10.0)
    img = BenchmarkDomain(synthetic_sar((64, 64)))(synthetic_sar((64, 64)))
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-6)
    assert ms_ssim(img, img) == pytest.approx(1.0, abs=1e-5)  # 64 px: window shrinks to fit
    assert ms_ssim(img, np.clip(img + 0.05, 0, 1)) < 1


def test_bd_rate_against_itself_and_double_rate():
    r = np.array([0.25, 0.5, 1.0, 2.0])
    p = np.array([28.0, 31.0, 34.0, 37.0])
    assert bd_rate(r, p, r, p) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate(r, p, 2 * r, p) == pytest.approx(100.0, rel=1e-6)
    assert bd_rate(r, p, 0.5 * r, p) == pytest.approx(-50.0, rel=1e-6)
    assert bd_psnr(r, p, r, p + 0.5) == pytest.approx(0.5, abs=1e-9)


def test_pchip_bd_rate_is_exact_on_shifted_curves_and_local():
    """The piecewise (PCHIP) BD-rate gives exact answers on rate-scaled curves like the cubic one,
    and a curve densely sampled in one region does not move it: on a many-point, wavy curve the
    one least-squares cubic bends towards the dense region, PCHIP follows each curve."""
    r = np.array([0.25, 0.5, 1.0, 2.0])
    p = np.array([28.0, 31.0, 34.0, 37.0])
    assert bd_rate_pchip(r, p, r, p) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate_pchip(r, p, 2 * r, p) == pytest.approx(100.0, rel=1e-6)
    assert bd_rate_pchip(r, p, 0.5 * r, p) == pytest.approx(-50.0, rel=1e-6)
    # the same true curve, sampled sparsely and with many extra points at its low end
    curve = lambda q: np.exp((q - 30.0) / 4.5 + 0.08 * np.sin(q))  # noqa: E731
    q_sparse = np.linspace(25, 45, 9)
    q_dense = np.sort(np.concatenate([q_sparse, np.linspace(25, 30, 40)]))
    ref_q = np.linspace(25, 45, 12)
    ref_r = 1.1 * curve(ref_q)
    a = bd_rate_pchip(ref_r, ref_q, curve(q_sparse), q_sparse)
    b = bd_rate_pchip(ref_r, ref_q, curve(q_dense), q_dense)
    assert a == pytest.approx(100 / 1.1 - 100, abs=0.3) and b == pytest.approx(a, abs=0.3)
    # the single cubic moves by more than a point with where the samples are
    assert abs(bd_rate(ref_r, ref_q, curve(q_dense), q_dense) - bd_rate(ref_r, ref_q, curve(q_sparse), q_sparse)) > 1.0
    with pytest.raises(ValueError):
        bd_rate_pchip(r, p, r, p + 20)  # no overlap
