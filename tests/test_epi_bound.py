"""The Gaussian EPI model of benchmarks/epi_bound.py on cases with closed forms."""
import numpy as np

from benchmarks.epi_bound import laplacian_gain, model, rate_for, spectrum, water_fill


def test_water_fill_spends_the_rate():
    s = np.linspace(0.01, 4.0, 256).reshape(16, 16)
    for rate in (0.25, 1.0, 3.0):
        d = water_fill(s, rate)
        assert np.all(d <= s + 1e-12)
        assert abs(np.mean(0.5 * np.log2(s / d)) - rate) < 1e-6


def test_white_field_has_the_textbook_epi():
    """White Gaussian at R bits: D = 2^-2R everywhere, so EPI = sqrt(1 - 2^-2R) under MSE."""
    s = np.ones((64, 64))
    for rate in (0.5, 1.0, 2.0):
        epi, psnr = model(s, rate, 0.0)
        assert abs(epi - np.sqrt(1 - 2.0 ** (-2 * rate))) < 1e-6
        assert abs(psnr - 10 * np.log10(2.0 ** (2 * rate))) < 1e-4
    # spending the bits on the Laplacian error buys EPI and costs PSNR
    e_lap, p_lap = model(s, 1.0, 1.0)
    assert e_lap > model(s, 1.0, 0.0)[0] and p_lap < model(s, 1.0, 0.0)[1]
    assert abs(rate_for(s) - 0.5 * np.log2(1 / (1 - 0.81))) < 1e-3


def test_spectrum_is_a_variance_split():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, (256, 256))
    s = spectrum(x)
    assert abs(s.mean() - 0.09) < 0.01  # mean over frequencies = variance (white: flat)
    assert s.std() / s.mean() < 0.2
    assert laplacian_gain()[0, 0] == 0
