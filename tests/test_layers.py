"""The pixel layer (layers.py): exact context coding, bright targets, unbiased mean intensity,
error bounds by construction, targets, and what a damaged layer gives."""
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

import sarcodec
from sarcodec.layer import coder as L
from sarcodec.cli import main
from sarcodec.container import ContainerReader, with_header
from sarcodec.data import synthetic_sar
from sarcodec.errors import CorruptedFileError, FormatError, InputError
from sarcodec.layer import LayerSpec, decode_layer, encode_layer


@pytest.fixture(scope="module")
def model(trained_tiny):
    return sarcodec.load_model(trained_tiny)


def _db(x):
    return 10 * np.log10(x)


@pytest.mark.parametrize("case", ["laplace", "sparse", "escape", "tiny", "bias-only", "zero"])
def test_layer_codec_round_trip(case):
    rng = np.random.default_rng(1)
    q = {"laplace": lambda: np.rint(rng.laplace(0, 4, (131, 77))).astype(np.int64),
         "sparse": lambda: np.where(rng.random((200, 190)) < 0.002, rng.integers(-80, 80, (200, 190)), 0),
         "escape": lambda: np.where(rng.random((40, 40)) < 0.05, rng.integers(-2**31 + 1, 2**31 - 1, (40, 40)), 0),
         "tiny": lambda: np.array([[5]]),
         "bias-only": lambda: np.zeros((30, 30), np.int64),
         "zero": lambda: np.zeros((30, 30), np.int64)}[case]()
    bias = 0.0 if case == "zero" else 0.123
    blob = encode_layer(q, 0.01, bias)
    if case == "zero":
        assert blob == b""
        return
    d = decode_layer(blob, q.shape)
    assert d.step == pytest.approx(0.01) and d.bias_db == pytest.approx(0.123)
    if case == "bias-only":
        assert d.q is None
    else:
        assert np.array_equal(d.q, q)


def test_layer_codec_rate_is_near_the_entropy():
    rng = np.random.default_rng(2)
    q = np.rint(rng.laplace(0, 3, (256, 256))).astype(np.int64)
    _, c = np.unique(q, return_counts=True)
    h = float(-(c * np.log2(c / c.sum())).sum()) / q.size
    assert 8 * len(encode_layer(q, 0.01)) / q.size < h + 0.05
    sparse = np.where(rng.random((256, 256)) < 0.001, 7, 0)
    assert 8 * len(encode_layer(sparse, 0.01)) / sparse.size < 0.03  # zeros cost almost nothing


def test_damaged_layer_blobs_are_format_errors():
    rng = np.random.default_rng(3)
    q = np.rint(rng.laplace(0, 2, (64, 64))).astype(np.int64)
    blob = encode_layer(q, 0.02, 0.1)
    bad = [blob[:5], blob[:-3], blob + b"\0", b"XX" + blob[2:], blob[:13] + b"\xff" * 6 + blob[19:]]
    for i in range(30):  # random edits (as a forger would, past the CRC)
        b = bytearray(blob)
        b[int(rng.integers(0, len(b)))] ^= int(rng.integers(1, 256))
        bad.append(bytes(b))
    for b in bad:
        try:
            d = decode_layer(b, q.shape, "tile (0, 0, 0)")
        except CorruptedFileError as e:
            assert "pixel layer of tile (0, 0, 0)" in str(e)
        else:  # an edit the format cannot see must still decode to the right shape
            assert d.q is None or d.q.shape == q.shape


def test_layer_checksum_in_container(model):
    img = synthetic_sar((128, 128), seed=4).astype(np.float32)
    img[60, 60] *= 1e4
    data = sarcodec.encode(img, model, tile_size=64)
    e = next(t for t in ContainerReader(data).header.tiles if t.layer_length > 15)
    bad = bytearray(data)
    bad[e.layer_offset + e.layer_length - 2] ^= 0x40
    with pytest.raises(CorruptedFileError, match="pixel layer of tile"):
        sarcodec.decode(bytes(bad), model)
    # the same edit with the CRC recomputed is caught by the layer's own structure or decodes to the
    # shape the index says: never an uncaught exception
    hdr = ContainerReader(data).header
    for t in hdr.tiles:
        if t.layer_offset == e.layer_offset:
            t.layer_crc = zlib.crc32(bytes(bad[e.layer_offset:e.layer_offset + e.layer_length]))
    forged = with_header(bytes(bad[:]), hdr)
    try:
        out = sarcodec.decode(forged, model)
        assert out.shape == img.shape
    except FormatError:
        pass


def _point_targets(size=256, seed=5):
    img = synthetic_sar((size, size), seed=seed).astype(np.float64)
    rng = np.random.default_rng(seed)
    pos = [(int(r), int(c)) for r, c in rng.integers(8, size - 8, (12, 2))]
    clutter = np.median(img)
    for i, (r, c) in enumerate(pos):  # +20 ... +40 dB over the clutter
        img[r, c] = clutter * 10 ** ((20 + 20 * i / (len(pos) - 1)) / 10)
    return img.astype(np.float32), pos


def test_bright_targets_are_kept(model):
    img, pos = _point_targets()
    plain = sarcodec.encode(img, model, tile_size=128, outliers="none", bias=False)
    kept = sarcodec.encode(img, model, tile_size=128)
    a, b = sarcodec.decode(plain, model), sarcodec.decode(kept, model)
    peaks = np.array([img[p] for p in pos])
    assert np.max(np.abs(_db(np.array([b[p] for p in pos])) - _db(peaks))) <= 0.5
    assert np.max(np.abs(_db(np.array([a[p] for p in pos])) - _db(peaks))) > 10  # clipped without it
    assert _db(b.max()) == pytest.approx(_db(img.max()), abs=0.5)


def test_window_decode_through_outliers_equals_full(model):
    img, pos = _point_targets(200, seed=6)
    img[:20, :30] = np.nan
    data = sarcodec.encode(img, model, tile_size=64)
    full = sarcodec.decode(data, model)
    r, c = pos[0]
    win = (max(c - 40, 0), max(r - 30, 0), 70, 60)
    got = sarcodec.decode(data, model, window=win)
    np.testing.assert_array_equal(got, full[win[1]:win[1] + 60, win[0]:win[0] + 70])
    assert np.isnan(full[:20, :30]).all()


def test_tiles_without_and_with_many_outliers(model):
    img = synthetic_sar((128, 192), seed=8).astype(np.float32)
    # clip 20 / 80 percentiles, both sides restored: ~40% of pixels are outliers
    data = sarcodec.encode(img, model, tile_size=64, clip=(20, 80), outliers="both")
    hdr = ContainerReader(data).header
    assert hdr.metadata["clip_percentiles"] == [20, 80]
    out = sarcodec.decode(data, model)
    err = np.abs(_db(out) - _db(img))
    assert np.quantile(err, 0.2) < 0.36  # the outliers (and only they) are within the tolerance
    lo, hi = np.percentile(_db(img), [20, 80])
    out_mask = (_db(img) < lo) | (_db(img) > hi)
    assert out_mask.mean() > 0.35 and err[out_mask].max() <= 0.35 + 0.06  # + the tile's bias shift
    # nothing beyond the range (0 / 100 percentiles): tiles without a bright peak carry only the
    # bias shift (a 15-byte layer header), and they decode
    flat = synthetic_sar((128, 192), seed=8, looks=16, reflectivity=np.ones((128, 192))).astype(np.float32)
    data = sarcodec.encode(flat, model, tile_size=64, clip=(0, 100))
    assert sum(t.layer_length == 15 for t in ContainerReader(data).header.tiles) >= 3
    assert np.isfinite(sarcodec.decode(data, model)).all()


def _run(args):
    try:
        main(args)
    except SystemExit as e:
        return e.code or 0
    return 0


@pytest.mark.parametrize("bound", [0.5, 0.1])
def test_max_error_holds_for_every_valid_pixel(model, bound):
    img, _ = _point_targets(160, seed=9)
    img[5:9, 100:140] = np.nan
    img[50, 50] = img.min() / 1000  # far below the clip range
    data = sarcodec.encode(img, model, tile_size=64, max_error=bound)
    out = sarcodec.decode(data, model)
    ok = np.isfinite(img)
    assert np.isnan(out[~ok]).all()
    assert np.max(np.abs(_db(out[ok]) - _db(img[ok]))) <= bound + 1e-4
    assert ContainerReader(data).header.metadata["layer"]["max_error_db"] == bound


def test_max_error_for_dn_and_db_inputs(model):
    img, _ = _point_targets(128, seed=10)
    dn = np.clip(np.sqrt(img) * 30, 1, 65535).astype(np.uint16)
    out = sarcodec.decode(sarcodec.encode(dn, model, kind="dn", max_error=0.3, tile_size=64), model, dtype="float64")
    # uint16 storage rounds DN; judge in float output
    assert np.max(np.abs(20 * np.log10(out) - 20 * np.log10(dn))) <= 0.3 + 1e-3
    db = _db(img).astype(np.float32)
    out = sarcodec.decode(sarcodec.encode(db, model, kind="db", max_error=0.2, tile_size=64), model)
    assert np.max(np.abs(out - db)) <= 0.2 + 1e-3


def test_mean_intensity_is_unbiased_per_tile(model):
    img = synthetic_sar((256, 256), seed=11).astype(np.float64)
    for bias in (False, True):
        out = sarcodec.decode(sarcodec.encode(img, model, tile_size=128, bias=bias), model)
        worst = max(abs(_db(out[r:r + 128, c:c + 128].mean() / img[r:r + 128, c:c + 128].mean()))
                    for r in (0, 128) for c in (0, 128))
        if bias:
            assert worst <= 0.05
        else:
            assert worst > 0.05  # a barely trained model is far off without the correction


def test_psnr_and_bpp_targets(model):
    img = synthetic_sar((128, 128), seed=12).astype(np.float32)
    data = sarcodec.encode(img, [model], psnr=30.0, tile_size=64)
    tg = ContainerReader(data).header.metadata["target"]
    assert tg["met"] and tg["psnr_reached"] >= 30.0
    ref = sarcodec.Radiometry.fit(img)
    got = np.clip(sarcodec.decode(data, model, normalized=True), 0, 1)
    mse = np.mean((got - ref.forward(img)[0]) ** 2)
    assert 10 * np.log10(1 / mse) == pytest.approx(tg["psnr_reached"], abs=0.05)
    data = sarcodec.encode(img, [model], bpp=1.5, tile_size=64)
    assert 8 * len(data) / img.size <= 1.5 and ContainerReader(data).header.metadata["target"]["met"]
    with pytest.raises(InputError):
        sarcodec.encode(img, model, psnr=30.0, bpp=1.0)
    with pytest.raises(InputError):
        sarcodec.encode(img, model, max_error=-1)
    with pytest.raises(InputError):
        sarcodec.encode(img, model, clip=(50, 10))
    with pytest.raises(InputError):
        LayerSpec(outliers="sometimes")


def test_cli_fidelity_options(trained_tiny, tmp_path, capsys):
    import rasterio

    img, _ = _point_targets(96, seed=13)
    src = tmp_path / "a.tif"
    with rasterio.open(src, "w", driver="GTiff", width=96, height=96, count=1, dtype="float32") as ds:
        ds.write(img[None])
    ck = str(trained_tiny)
    for args in (["--max-error", "0.4"], ["--psnr", "28"], ["--clip", "1,99", "--outliers", "both", "--no-bias"]):
        code = _run(["compress", str(src), "-o", str(tmp_path / "a.sarc"), "-m", ck, "--tile", "64", "--force", *args])
        assert code == 0, capsys.readouterr().err
        assert _run(["info", str(tmp_path / "a.sarc")]) == 0
        assert "pixel layer" in capsys.readouterr().out
    assert _run(["decompress", str(tmp_path / "a.sarc"), "-o", str(tmp_path / "b.tif"), "-m", ck]) == 0
    with rasterio.open(tmp_path / "b.tif") as ds:
        out = ds.read(1)
    assert abs(_db(out.max()) - _db(img.max())) < 0.3
    for bad in (["--max-error", "0.4", "--psnr", "30"], ["--clip", "5"], ["--outliers", "x"], ["--max-error", "-2"]):
        assert _run(["compress", str(src), "-o", str(tmp_path / "c.sarc"), "-m", ck, *bad]) in (2, 3)
        assert not (tmp_path / "c.sarc").exists()


@pytest.mark.parametrize("bound", [True, False])
def test_layer_decode_is_identical_across_processes(model, trained_tiny, tmp_path, bound, capsys):
    """Bound layers and MSE layers (pixel or wavelet form) decode to the same pixels in another
    process with one thread."""
    from scipy.ndimage import gaussian_filter

    img, _ = _point_targets(128, seed=14)
    if not bound:  # texture without speckle: correlated residuals, some tiles take the wavelet form, a filter
        img = np.power(10, gaussian_filter(np.random.default_rng(2).normal(0, 20, (256, 192)), 1.5) / 10 - 1)
        img = img.astype(np.float32)
    data = sarcodec.encode(img, model, tile_size=128 if not bound else 64, max_error=0.5 if not bound else 0.3,
                           bound=bound)
    r = ContainerReader(data)
    forms_n = [lay.residual is not None for lay in (r.tile_layer(e) for e in r.header.tiles) if lay is not None]
    forms = set(forms_n)
    assert forms == {False} if bound else True in forms
    (tmp_path / "x.sarc").write_bytes(data)
    here = sarcodec.decode(data, model)
    code = ("import sys, numpy as np, torch, sarcodec; torch.set_num_threads(1); "
            f"np.save(sys.argv[1], sarcodec.decode(open(sys.argv[2], 'rb').read(), sarcodec.load_model({str(trained_tiny)!r})))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "y.npy"), str(tmp_path / "x.sarc")], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), here)
    win = sarcodec.decode(data, model, window=(20, 30, 90, 70))
    np.testing.assert_array_equal(win, here[30:100, 20:110])
    if not bound:  # across tile borders (and filtered tiles' reach)
        win = sarcodec.decode(data, model, window=(100, 90, 80, 100))
        np.testing.assert_array_equal(win, here[90:190, 100:180])  # info says how many tiles took the wavelet form
        assert _run(["info", str(tmp_path / "x.sarc")]) == 0
        nf = sum(lay.filter is not None for lay in (r.tile_layer(e) for e in r.header.tiles) if lay is not None)
        assert nf > 0  # the window above crossed filtered tiles (their reach)
        assert f"wavelet form on {sum(forms_n)}, restoration filter on {nf} of {len(r.header.tiles)} tiles" \
            in capsys.readouterr().out


def test_lossless_dn_round_trip(tmp_path):
    import rasterio

    from sarcodec.files import compress_file, decompress_file

    x = np.clip(np.sqrt(synthetic_sar((150, 260), seed=15)) * 300, 0, 65535).astype(np.uint16)
    x[:10, :20] = 0
    data = sarcodec.encode(x, "default", kind="dn", nodata=0, lossless=True, tile_size=64)
    assert ContainerReader(data).header.metadata["lossless"]
    assert np.array_equal(sarcodec.decode(data), x)  # no model needed, exact
    assert np.array_equal(sarcodec.decode(data, window=(30, 40, 100, 70)), x[40:110, 30:130])
    assert 8 * len(data) / x.size < 12  # well under the 16 bits stored
    with pytest.raises(InputError, match="integer"):
        sarcodec.encode(x.astype(np.float32), "default", lossless=True)
    with pytest.raises(InputError):
        sarcodec.encode(x, "default", lossless=True, max_error=0.5)
    with rasterio.open(tmp_path / "a.tif", "w", driver="GTiff", width=260, height=150, count=1, dtype="uint16",
                       nodata=0) as ds:
        ds.write(x, 1)
    compress_file(tmp_path / "a.tif", tmp_path / "a.sarc", lossless=True, tile_size=128)
    decompress_file(tmp_path / "a.sarc", tmp_path / "b.tif")
    with rasterio.open(tmp_path / "b.tif") as ds:
        assert np.array_equal(ds.read(1), x) and ds.nodata == 0


def test_retired_layer_forms_are_refused():
    """Format 1.0 keeps one form per job: the scalar MSE layer (flag 3), the dyadic wavelet layer
    (4) and the 4-state and raw-sign trellis layers (6, 7) are refused with a clear error."""
    q = np.zeros((16, 16), np.int64)
    q[3, 4] = 5
    blob = encode_layer(q, 0.01, 0.0)
    for flag in (3, 4, 6, 7, 10, 255):
        with pytest.raises(CorruptedFileError, match="pixel layer of t"):
            decode_layer(blob[:2] + bytes([flag]) + blob[3:], q.shape, where="t")


def test_mse_layer_beats_the_bound_layer(model):
    """bound=False: an MSE layer (dependent quantisation, centroid reconstruction, the wavelet
    form where it costs less) gives a higher PSNR than bound layers of the same size (their curve
    between neighbouring steps); the file says so."""

    img = synthetic_sar((192, 192), seed=13).astype(np.float32)
    ref = sarcodec.Radiometry.fit(img).forward(img)[0]

    def point(e, bound):
        d = sarcodec.encode(img, model, tile_size=64, max_error=e, bound=bound)
        got = np.clip(sarcodec.decode(d, model, normalized=True), 0, 1)
        return 8 * len(d) / img.size, 10 * np.log10(1 / np.mean((got - ref) ** 2)), ContainerReader(d).header, d

    bounds = sorted(point(e, True)[:2] for e in (4.0, 2.8, 2.0, 1.4, 1.0))
    mse = point(2.0, False)
    assert bounds[0][0] < mse[0] < bounds[-1][0], (bounds, mse[:2])
    assert mse[1] > np.interp(mse[0], *zip(*bounds)) + 0.3, (bounds, mse[:2])
    assert mse[2].metadata["layer"]["bound"] is False
    hb, d = point(2.0, True)[2:]
    assert "bound" not in hb.metadata["layer"]


def test_search_layers_minimise_mse(model):
    img = synthetic_sar((128, 128), seed=15).astype(np.float32)
    data = sarcodec.encode(img, [model], psnr=40.0, tile_size=64)
    md = ContainerReader(data).header.metadata
    assert md["target"]["met"] and "max_error" in md["target"] and md["layer"]["bound"] is False


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (2, 3), (37, 53), (64, 64)])
def test_wavelet_transform_is_invertible_on_any_shape(shape):
    from sarcodec.layer.wavelet import band_shapes, dwt2, idwt2

    x = np.random.default_rng(3).normal(size=shape)
    bands = dwt2(x, 2)
    assert [b.shape for b in bands] == band_shapes(shape, 2)
    np.testing.assert_allclose(idwt2(bands, 2), x, atol=1e-12)


def _correlated_residual(shape, seed, smooth):
    from scipy.ndimage import gaussian_filter

    r = np.random.default_rng(seed).normal(0, 0.05, shape)
    return gaussian_filter(r, smooth) * (1 + 2 * smooth) if smooth else r


def test_mse_layer_takes_the_wavelet_form_where_it_costs_less():
    """Spatially correlated residuals (what the base leaves on multi-looked GRD) get the wavelet
    form, white ones (single-look speckle) the pixel form; either decodes to exactly what the
    encoder reconstructed, and the wavelet layer is the better trade of size for error there."""
    from sarcodec.layer import make_layer

    shape, lo, hi = (96, 80), -25.0, 5.0
    base = np.full(shape, 0.5)
    mask = np.zeros(shape, bool)
    mask[:7, :11] = True
    for smooth, wavelet in ((2.0, True), (0.0, False)):
        t = base + _correlated_residual(shape, 4, smooth)
        blob, lay = make_layer(t, base, mask, LayerSpec(0.3, bound=False), lo, hi)
        assert (lay.residual is not None) == wavelet and (lay.q is None) == wavelet
        got = decode_layer(blob, shape)
        np.testing.assert_array_equal(got.apply(base, lo, hi), lay.apply(base, lo, hi))
        if wavelet:
            pix = encode_layer(np.rint((t - base) / lay.step).astype(np.int64), lay.step)
            err = np.mean((got.apply(base, lo, hi) - t)[~mask] ** 2)
            assert len(blob) < len(pix) and err < (lay.step ** 2) / 12 * 1.2
            win = decode_layer(blob, shape)
            win.crop((10, 50), (5, 70))
            np.testing.assert_array_equal(win.apply(base[10:50, 5:70], lo, hi), lay.apply(base, lo, hi)[10:50, 5:70])
    # the bound (max_error) layer never takes the wavelet form: its per-pixel bound would not hold
    t = base + _correlated_residual(shape, 4, 2.0)
    blob, lay = make_layer(t, base, mask, LayerSpec(0.3), lo, hi)
    assert lay.residual is None and lay.q is not None


def _flips_never_crash(blob, shape, rng, use=lambda lay: None, n=60):
    """``n`` decodes of ``blob`` with one random bit flipped (as a forger would, past the CRC):
    each a clear CorruptedFileError or some layer that ``use`` can use, never a crash."""
    for _ in range(n):
        b = bytearray(blob)
        b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        try:
            use(decode_layer(bytes(b), shape))
        except CorruptedFileError:
            pass


TREES = [None, (None,) * 4, ((None,) * 4, None, None, None), ((None,) * 4, (None,) * 4, None, (None,) * 4),
         (((None,) * 4, None, (None,) * 4, None), (None,) * 4, None, None)]


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (9, 4), (37, 53), (64, 64)])
def test_wavelet_packets_are_invertible_on_any_shape(shape):
    """Any tree (the dyadic ones included, which equal dwt2) analyses into bands of the shapes it
    says and synthesises back; its bits parse back to it."""
    from sarcodec.layer.wavelet import dwt2, dyadic_tree, packet_analyse, packet_shapes, packet_synth, parse_tree, tree_bits

    x = np.random.default_rng(4).normal(size=shape)
    for tree in TREES:
        if tree is not None and min(shape) < 2:
            continue
        bands = packet_analyse(x, tree)
        assert [b.shape for b in bands] == packet_shapes(shape, tree)
        np.testing.assert_allclose(packet_synth(bands, tree), x, atol=1e-12)
        if all(min(sh) >= 2 for sh in packet_shapes(shape, tree)) or tree is None or min(shape) >= 8:
            assert parse_tree(tree_bits(tree), shape) == tree
    for levels in (1, 2):
        assert all(np.array_equal(a, b) for a, b in zip(dwt2(x, levels), packet_analyse(x, dyadic_tree(levels))))


def test_packet_tree_bits_are_checked():
    from sarcodec.layer.wavelet import PACKET_MAX_DEPTH, parse_tree

    assert parse_tree([1, 0, 1, 0, 0, 0, 0, 0, 0], (32, 32)) == (None, (None,) * 4, None, None)
    deep = [1] * (PACKET_MAX_DEPTH + 1) + [0] * 400
    for bits, why in (([], "truncated"), ([1, 0, 0], "truncated"), ([0, 0], "trailing"), ([1, 0, 0, 0, 0, 1], "trailing"),
                      (deep, "too deep")):
        with pytest.raises(ValueError, match=why):
            parse_tree(bits, (512, 512))
    with pytest.raises(ValueError, match="too deep"):  # a 1 x n band cannot be split
        parse_tree([1, 1, 0, 0, 0, 0, 0, 0, 0], (2, 64))


def _striped_residual(shape, seed):
    """Speckle-like texture whose energy sits in one part of the fine vertical frequencies (what
    multi-looked GRD leaves): smooth noise modulated at 7/16 of the sampling rate down the rows."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    smooth = gaussian_filter(rng.normal(0, 0.3, shape), 3.0)
    rows = np.arange(shape[0])[:, None]
    return smooth * np.cos(2 * np.pi * 0.4375 * rows) + rng.normal(0, 0.002, shape)


def test_best_basis_splits_where_the_spectrum_is_uneven():
    """On a residual whose energy sits inside the fine vertical band, the best basis splits that
    band, and the packet layer costs less (squared error + make_layer's lambda * bits) than the
    dyadic transform; the blob decodes to exactly the encoder's residual, in a window too."""
    from sarcodec.layer.wavelet import best_basis, dyadic_tree, encode_packet_layer

    shape, step = (192, 192), 0.01
    r = _striped_residual(shape, 8)
    tree = best_basis(r, step)[0]
    assert tree is not None and tree[1] is not None, tree  # LH: the fine vertical frequencies, split
    lam = 2.0 * np.log(2.0) * step * step / 12.0
    costs = {}
    for name, t in (("best", "best"), ("dyadic", dyadic_tree(2))):
        blob, res = encode_packet_layer(r, step, t)
        assert blob[2] == 8
        got = decode_layer(blob, shape)
        np.testing.assert_array_equal(got.residual, res)
        costs[name] = float(np.sum((r - res) ** 2)) + lam * 8 * len(blob)
    assert costs["best"] < 0.95 * costs["dyadic"], costs
    win = decode_layer(encode_packet_layer(r, step)[0], shape)
    full = win.residual.copy()
    win.crop((10, 50), (5, 70))
    np.testing.assert_array_equal(win.residual, full[10:50, 5:70])
    # a white residual is not split
    assert best_basis(np.random.default_rng(9).normal(0, 0.05, shape), step)[0] is None


def test_mse_layers_of_files_use_packets_where_they_pay():
    """make_layer writes the packet form (flag 8, inside a filter's flag 5 or not) for the striped
    residual."""
    from sarcodec.layer import RestorationFilter, make_layer
    from sarcodec.layer.coder import _HEAD

    shape, lo, hi = (96, 128), -25.0, 5.0
    base = np.full(shape, 0.5)
    t = base + _striped_residual(shape, 10)
    blob, lay = make_layer(t, base, None, LayerSpec(0.3, bound=False), lo, hi)
    inner = blob if blob[2] != 5 else blob[RestorationFilter.unpack(blob, _HEAD.size)[1]:]
    assert lay.residual is not None and inner[2] == 8
    np.testing.assert_array_equal(decode_layer(blob, shape).apply(base, lo, hi), lay.apply(base, lo, hi))


def test_damaged_packet_layer_is_refused():
    from sarcodec.layer.coder import _HEAD
    from sarcodec.layer.wavelet import encode_packet_layer

    shape = (64, 48)
    blob, res = encode_packet_layer(_striped_residual(shape, 11), 0.01, ((None,) * 4, (None,) * 4, None, None))
    np.testing.assert_array_equal(decode_layer(blob, shape).residual, res)
    for cut in (len(blob) - 1, len(blob) // 2, _HEAD.size + 2, _HEAD.size + 1, _HEAD.size):
        with pytest.raises(CorruptedFileError):
            decode_layer(blob[:cut], shape)
    with pytest.raises(CorruptedFileError):
        decode_layer(blob + b"\0", shape)
    n = blob[_HEAD.size]
    for bits in (0, n + 8):  # no tree; a longer one than the bits sent
        b = bytearray(blob)
        b[_HEAD.size] = bits
        with pytest.raises(CorruptedFileError):
            decode_layer(bytes(b), shape)
    assert n == 13
    b = bytearray(blob)
    b[_HEAD.size + 2] |= 1 << 2  # a padding bit after the 13 tree bits
    with pytest.raises(CorruptedFileError, match="padding"):
        decode_layer(bytes(b), shape)
    rng = np.random.default_rng(12)
    _flips_never_crash(blob, shape, rng)
    # a band that claims to be a packet layer itself (recursion) is refused
    one_leaf = blob[:_HEAD.size] + b"\x01\x00"
    with pytest.raises(CorruptedFileError, match="subband"):
        decode_layer(one_leaf + struct.pack("<I", len(blob)) + blob, shape)


def test_restoration_filter_where_it_pays():
    """On a correlated image coded coarsely the MSE layer carries a restoration filter: lower
    error than without it, the same pixels from the blob as the encoder computed, the same pixels
    from any window widened by the filter's reach; on white residuals the encoder leaves it out."""
    from scipy.ndimage import gaussian_filter

    from sarcodec.layer import make_layer

    shape, lo, hi = (96, 112), -25.0, 5.0
    rng = np.random.default_rng(21)
    t = 0.5 + gaussian_filter(rng.normal(0, 0.6, shape), 1.5)  # multi-looked-like texture
    base = 0.5 + gaussian_filter(t - 0.5, 3.0)  # a blurred base: correlated residual
    mask = np.zeros(shape, bool)
    mask[40:44, 60:90] = True
    blob, lay = make_layer(t, base, mask, LayerSpec(0.5, bound=False), lo, hi)
    assert lay.filter is not None and blob[2] == 5 and lay.reach == 3
    ok = ~mask
    err = lambda v: float(np.mean((v - t)[ok] ** 2))  # noqa: E731
    assert err(lay.apply(base, lo, hi)) < 0.97 * err(lay.unfiltered(base, lo, hi))
    got = decode_layer(blob, shape)
    full = got.apply(base, lo, hi)
    np.testing.assert_array_equal(full, lay.apply(base, lo, hi))
    for rows, cols in (((0, 96), (0, 112)), ((10, 50), (5, 70)), ((0, 7), (100, 112)), ((93, 96), (0, 1))):
        w = decode_layer(blob, shape)
        g = w.reach
        rr = (max(0, rows[0] - g), min(shape[0], rows[1] + g))
        cc = (max(0, cols[0] - g), min(shape[1], cols[1] + g))
        w.crop(rr, cc)
        part = w.apply(base[rr[0]:rr[1], cc[0]:cc[1]], lo, hi)
        np.testing.assert_array_equal(part[rows[0] - rr[0]:rows[1] - rr[0], cols[0] - cc[0]:cols[1] - cc[0]],
                                      full[rows[0]:rows[1], cols[0]:cols[1]])
    white = 0.5 + rng.normal(0, 0.05, shape)  # single-look-like: nothing to filter
    _, lay_w = make_layer(white, np.full(shape, 0.5), None, LayerSpec(1.0, bound=False), lo, hi)
    assert lay_w.filter is None
    # a bound layer never carries one (the filter would break the per-pixel bound)
    _, lay_b = make_layer(t, base, mask, LayerSpec(0.5), lo, hi)
    assert lay_b.filter is None and lay_b.reach == 0


def test_damaged_filtered_layer_is_refused():
    from scipy.ndimage import gaussian_filter

    from sarcodec.layer import RestorationFilter, make_layer
    from sarcodec.layer.coder import _HEAD

    shape, lo, hi = (96, 112), -25.0, 5.0  # as in test_restoration_filter_where_it_pays
    rng = np.random.default_rng(21)
    t = 0.5 + gaussian_filter(rng.normal(0, 0.6, shape), 1.5)
    base = 0.5 + gaussian_filter(t - 0.5, 3.0)
    blob, lay = make_layer(t, base, None, LayerSpec(0.5, bound=False), lo, hi)
    assert lay.filter is not None
    for cut in (len(blob) - 1, _HEAD.size + 40, _HEAD.size + 1, _HEAD.size):
        with pytest.raises(CorruptedFileError):
            decode_layer(blob[:cut], shape)
    filt, pos = RestorationFilter.unpack(blob, _HEAD.size)
    inner = blob[pos:]
    with pytest.raises(CorruptedFileError, match="MSE layer"):  # a filter around a filter
        decode_layer(blob[:pos] + blob, shape)
    bound = encode_layer(np.ones(shape, np.int64), 0.01)  # or around a bound layer
    with pytest.raises(CorruptedFileError, match="MSE layer"):
        decode_layer(blob[:pos] + bound, shape)
    bad = bytearray(blob)
    bad[_HEAD.size] = 0  # zero classes
    with pytest.raises(CorruptedFileError, match="filter"):
        decode_layer(bytes(bad), shape)
    _flips_never_crash(blob, shape, rng, use=lambda lay: lay.apply(base, lo, hi))
    assert decode_layer(_HEAD.pack(b"L1", 5, lay.step, 0.0, 0) + filt.pack() + inner, shape).filter is not None


def _context_reference(q, p, raw=False):
    """layers._context written out neighbour by neighbour with bounds checks (its first form)."""
    r0, c0, s, nb = L.PASSES[p]
    h, w = q.shape
    rr, cc = np.meshgrid(np.arange(r0, h, s), np.arange(c0, w, s), indexing="ij")
    if not nb or rr.size == 0:
        z = np.zeros(rr.shape, np.int64)
        return rr, cc, z, z, z
    a, ssum, n = (np.zeros(rr.shape, np.int64) for _ in range(3))
    hi, lo = np.full(rr.shape, np.iinfo(np.int64).min), np.full(rr.shape, np.iinfo(np.int64).max)
    for dr, dc in nb:
        r2, c2 = rr + dr, cc + dc
        ok = (r2 >= 0) & (r2 < h) & (c2 >= 0) & (c2 < w)
        v = np.where(ok, q[np.clip(r2, 0, h - 1), np.clip(c2, 0, w - 1)], 0)
        a, ssum, n = a + np.abs(v), ssum + v, n + ok
        hi, lo = np.where(ok, np.maximum(hi, v), hi), np.where(ok, np.minimum(lo, v), lo)
    n = np.maximum(n, 1)
    if raw:
        a = np.where(hi >= lo, hi - lo, 0) * n // 2
    act = np.searchsorted(L._ACT_EDGES, (16 * a) // n, side="right")
    return rr, cc, 1 + (L._GROUP[p] - 1) * L.N_ACT + act, ssum, n


def test_context_strided_views_match_bounds_checked_neighbours():
    """_context reads neighbours as strided views of a zero-padded copy: same values, classes and
    counts as bounds-checked indexing on every shape, down to 1 x 1 and lattices with no points."""
    rng = np.random.default_rng(3)
    for h in (1, 2, 3, 4, 5, 7, 9, 33):
        for w in (1, 2, 3, 5, 6, 8, 31):
            q = rng.integers(-40, 40, (h, w)) * (rng.random((h, w)) < 0.6)
            for p in range(len(L.PASSES)):
                for raw in (False, True):
                    for x, y in zip(L._context(q, p, raw), _context_reference(q, p, raw)):
                        assert x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y)


def test_context_sparse_residual_path_matches_reference():
    """A residual with few non-zero values (bright targets only) takes _context's scatter path:
    same classes, sums and counts as bounds-checked indexing, borders and lattice edges included."""
    rng = np.random.default_rng(5)
    for h, w in ((1, 1), (3, 8), (33, 31), (64, 70), (130, 129)):
        for k in (0, 1, 3, max(1, h * w // 100)):
            q = np.zeros((h, w), np.int64)
            q.flat[rng.choice(h * w, min(k, h * w), replace=False)] = rng.integers(-3000, 3000, min(k, h * w)) | 1
            assert np.count_nonzero(q) * 64 < q.size or h * w < 64
            for p in range(len(L.PASSES)):
                for x, y in zip(L._context(q, p), _context_reference(q, p, False)):
                    assert x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y)


@pytest.mark.parametrize("kind", ["dn", "intensity", "db"])
@pytest.mark.parametrize("bound", [0.25, 0.5, 1.0, 3.0])
def test_integer_output_step_keeps_the_bound_after_rounding(kind, bound):
    """Every stored integer v, reconstructed anywhere within half the step of
    :func:`integer_output_step` (in dB) and rounded to an integer as the decoder does, stays
    within the bound; the step is the full 2 x bound where rounding cannot matter."""
    from sarcodec.layer import integer_output_step
    from sarcodec.radiometry import from_intensity, to_intensity

    vals = np.arange(-40, 25) if kind == "db" else np.concatenate([np.arange(1, 400), [1000, 20000, 65535]])
    db = (lambda x: x) if kind == "db" else (lambda x: 10 * np.log10(to_intensity(np.asarray(x, float), kind)))
    for v in vals:
        step = integer_output_step(np.array([v]), kind, bound)
        assert 0 < step <= 2 * bound
        d = db(v) + np.linspace(-step / 2, step / 2, 41)
        x = d if kind == "db" else from_intensity(10 ** (d / 10), kind)
        err = np.abs(db(np.maximum(np.rint(x), 1e-9 if kind != "db" else -1e9)) - db(v))
        assert err.max() <= bound + 1e-9, (v, step, err.max())
    if kind == "dn":
        assert integer_output_step(np.array([65535]), kind, bound) == pytest.approx(2 * bound, abs=1e-3)


def test_max_error_holds_on_integer_output():
    """uint16 DN compressed with --max-error decode (as uint16, the default) within the bound on
    every valid pixel: the decoder's rounding to integers is part of what the bound covers."""
    rng = np.random.default_rng(21)
    x = synthetic_sar((128, 128), seed=21)
    dn = np.clip(np.rint(np.sqrt(x / np.median(x)) * rng.choice([12, 40, 200], x.shape)), 0, 65535).astype(np.uint16)
    for e in (0.5, 1.0):
        data = sarcodec.encode(dn, "default", kind="dn", nodata=0, max_error=e, tile_size=64)
        out = sarcodec.decode(data)
        assert out.dtype == np.uint16
        ok = dn > 0
        err = np.abs(20 * np.log10(out[ok].astype(float) / dn[ok]))
        assert err.max() <= e + 1e-6, err.max()
        f = sarcodec.decode(data, dtype="float32")
        assert np.abs(20 * np.log10(f[ok] / dn[ok])).max() <= e + 1e-4


def test_layer_estimate_follows_the_coded_layer():
    """The layer's estimate (no coding) spends more bits and leaves less error as max_error
    shrinks, stays within a factor of ~2 of the coded MSE layer's bits and error, scales with the
    pixels of like content, and is (0, the base's error) where nothing would be coded."""
    from sarcodec.layer import LayerSpec, estimate_layer, make_layer

    rng = np.random.default_rng(3)
    t = np.clip(0.5 + rng.laplace(0, 0.04, (128, 128)), 0, 1)
    base = np.clip(t + rng.normal(0, 0.02, t.shape), 0, 1)
    es = (0.5, 0.25, 0.12, 0.06)
    est = [estimate_layer(t, base, None, e, -25.0, 5.0) for e in es]
    assert all(a[0] < b[0] and a[1] > b[1] for a, b in zip(est, est[1:])), est
    for e, (bits, sse) in zip(es, est):
        blob, lay = make_layer(t, base, None, LayerSpec(e, bound=False), -25.0, 5.0)
        got = float(np.sum((np.clip(lay.apply(base, -25.0, 5.0), 0, 1) - t) ** 2))
        assert 0.3 < 8 * len(blob) / bits < 1.5 and 0.3 < got / sse < 1.5, (e, len(blob), bits, got, sse)
    two = estimate_layer(np.vstack([t, t]), np.vstack([base, base]), None, es[2], -25.0, 5.0)
    assert two[0] == pytest.approx(2 * est[2][0], rel=0.05) and two[1] == pytest.approx(2 * est[2][1])
    assert estimate_layer(t, t, None, 1.0, -25.0, 5.0) == (0.0, 0.0)
    assert estimate_layer(t, base, np.ones(t.shape, bool), 1.0, -25.0, 5.0) == (0.0, 0.0)
    coarse = estimate_layer(t, base, None, 20.0, -25.0, 5.0)
    assert coarse == (0.0, pytest.approx(float(np.sum((base - t) ** 2))))
