"""Traditional-codec baselines: same bytes as direct imagecodecs calls, sane rate control."""
import imagecodecs
import numpy as np
import pytest

from sarcodec.data import synthetic_sar
from sarcodec.evaluation.codecs import avif, htj2k, jpeg2000, jpeg8, jpegxl, match_bytes, pareto
from sarcodec.evaluation.metrics import BenchmarkDomain, psnr


@pytest.fixture(scope="module")
def domain_image():
    img = synthetic_sar((192, 160), seed=9)
    dom = BenchmarkDomain(img)
    return dom(img), dom.to_uint16(img)


def test_jpeg2000_matches_a_direct_imagecodecs_call(domain_image):
    ref, u16 = domain_image
    data, dec = jpeg2000(u16, 35.0)
    direct = imagecodecs.jpeg2k_encode(u16, level=35.0, codecformat="j2k", numthreads=1)
    assert data == direct
    p_ours = psnr(ref, dec / 65535.0)
    p_direct = psnr(ref, imagecodecs.jpeg2k_decode(direct) / 65535.0)
    assert abs(p_ours - p_direct) < 0.3


@pytest.mark.parametrize("codec,knobs", [
    (jpeg2000, [25.0, 35.0, 45.0]),
    (htj2k, [0.3, 0.08, 0.02]),
    (jpegxl, [6.0, 2.0, 0.5]),
    (jpeg8, [20, 60, 95]),
    (avif, [30, 55, 80]),
])
def test_quality_knob_trades_bits_for_psnr(codec, knobs, domain_image):
    ref, u16 = domain_image
    pts = []
    for k in knobs:
        data, dec = codec(u16, k)
        assert dec.shape == u16.shape
        pts.append((8 * len(data) / u16.size, psnr(ref, np.asarray(dec, np.float64) / 65535.0)))
    rates, quality = zip(*pts)
    assert list(rates) == sorted(rates) and list(quality) == sorted(quality), pts


def test_match_bytes_stays_within_budget(domain_image):
    _, u16 = domain_image
    data, _, _ = match_bytes(jpeg2000, u16, 4000, 10.0, 90.0)
    assert 3000 < len(data) <= 4000


def test_pareto_keeps_improving_points():
    pts = [{"bpp": 1.0, "psnr": 30}, {"bpp": 0.5, "psnr": 28}, {"bpp": 2.0, "psnr": 29}, {"bpp": 3.0, "psnr": 35}]
    assert [p["bpp"] for p in pareto(pts)] == [0.5, 1.0, 3.0]


def test_avif_is_lossy_12_bit_monochrome(domain_image):
    """A 2-D array would go in losslessly whatever the quality (imagecodecs' grey path): ours is lossy,
    one plane, and at quality 100 exact to 12 bits."""
    ref, u16 = domain_image
    data, dec = avif(u16, 40)
    assert 8 * len(data) / u16.size < 2 and dec.shape == u16.shape
    _, lossless = avif(u16, 100)
    assert np.abs(lossless - u16).max() <= 65535 / 4095 / 2 + 1e-6
