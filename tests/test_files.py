"""Whole-scene GeoTIFF codec: metadata, masks, windows, seams, bit overhead, CLI failure modes."""
import os

import numpy as np
import pytest
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.transform import from_origin

import sarcodec
from sarcodec.cli import main
from sarcodec.data import synthetic_sar
from sarcodec.files import compress_file, decompress_file, read_window


@pytest.fixture(scope="module")
def model(trained_tiny):
    return sarcodec.load_model(trained_tiny)


def _write(path, data, **kw):
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype.name)
    profile.update(kw.pop("profile", {}))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        if "gcps" in kw:
            ds.gcps = kw["gcps"]
        for i, d in enumerate(kw.get("descriptions", [])):
            ds.set_band_description(i + 1, d)
        if "tags" in kw:
            ds.update_tags(**kw["tags"])
        for i, t in enumerate(kw.get("band_tags", [])):
            ds.update_tags(i + 1, **t)
        if "units" in kw:
            for i, u in enumerate(kw["units"]):
                ds.set_band_unit(i + 1, u)


@pytest.fixture(scope="module")
def grd_tif(tmp_path_factory):
    """Two-band uint16 GRD-like raster with nodata, GCPs, tags, descriptions."""
    vv = synthetic_sar((200, 330), seed=11) * 4e5
    dn = np.stack([np.sqrt(vv), np.sqrt(vv * 0.15)]).round().clip(1, 65534).astype(np.uint16)
    dn[:, :25, :40] = 0  # border nodata
    dn[1, 100, 100] = 0
    gcps = [GroundControlPoint(row=r, col=c, x=10 + c * 1e-4, y=50 - r * 1e-4, z=12.5, id=f"g{r}-{c}", info="tie")
            for r in (0, 199) for c in (0, 329)]
    p = tmp_path_factory.mktemp("grd") / "grd.tif"
    _write(p, dn, profile=dict(nodata=0), gcps=(gcps, CRS.from_epsg(4326)), descriptions=["VV", "VH"],
           tags={"MISSION": "S1A", "PRODUCT": "GRDH"}, band_tags=[{"POL": "VV"}, {"POL": "VH"}])
    return p, dn


def test_geotiff_round_trip_keeps_everything(grd_tif, model, tmp_path):
    src, dn = grd_tif
    s = compress_file(src, tmp_path / "a.sarc", model, tile_size=128)
    assert s["ratio"] > 1 and s["bpp"] == pytest.approx(8 * os.path.getsize(tmp_path / "a.sarc") / dn.size)
    decompress_file(tmp_path / "a.sarc", tmp_path / "out.tif", model=model)
    with rasterio.open(src) as a, rasterio.open(tmp_path / "out.tif") as b:
        assert b.count == 2 and b.dtypes == a.dtypes and (b.width, b.height) == (a.width, a.height)
        assert b.nodata == a.nodata == 0
        assert b.descriptions == a.descriptions
        assert b.tags()["MISSION"] == "S1A" and b.tags()["PRODUCT"] == "GRDH"
        assert b.tags(1)["POL"] == "VV" and b.tags(2)["POL"] == "VH"
        ga, gb = a.gcps, b.gcps
        assert gb[1] == ga[1] and len(gb[0]) == 4
        for p, q in zip(ga[0], gb[0]):
            assert (p.row, p.col, p.x, p.y, p.z, p.id, p.info) == (q.row, q.col, q.x, q.y, q.z, q.id, q.info)
        out = b.read()
    assert np.array_equal(out == 0, dn == 0)  # the nodata mask, exactly
    assert (out[dn > 0] > 0).all()


def test_crs_transform_float_and_window(model, tmp_path):
    img = synthetic_sar((260, 300), seed=4)[None]
    img[0, 5, 5] = np.nan
    tr = from_origin(500000, 4200000, 10, 10)
    _write(tmp_path / "f.tif", img, profile=dict(crs=CRS.from_epsg(32633), transform=tr), units=["linear"])
    compress_file(tmp_path / "f.tif", tmp_path / "f.sarc", model, tile_size=128)
    decompress_file(tmp_path / "f.sarc", tmp_path / "full.tif", model=model)
    win = (37, 101, 150, 90)
    decompress_file(tmp_path / "f.sarc", tmp_path / "win.tif", model=model, window=win, cog=True)
    with rasterio.open(tmp_path / "full.tif") as f, rasterio.open(tmp_path / "win.tif") as w:
        assert f.crs == CRS.from_epsg(32633) and f.transform == tr and f.units == ("linear",)
        assert w.transform == rasterio.windows.transform(rasterio.windows.Window(*win), tr)
        assert w.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        full, part = f.read(), w.read()
    assert np.isnan(full[0, 5, 5]) and np.isfinite(np.delete(full.ravel(), 5 * 300 + 5)).all()
    # window decode == the same window of a full decode, bit for bit
    np.testing.assert_array_equal(part, full[:, 101:191, 37:187])
    np.testing.assert_array_equal(read_window(tmp_path / "f.sarc", win, model=model), part)
    db = read_window(tmp_path / "f.sarc", win, model=model, kind="db")
    np.testing.assert_allclose(db, 10 * np.log10(part), atol=1e-3)


def _seam_and_overhead(model, size=768, tile=256, seeds=(21, 22, 23, 24)):
    """Seam and bit-overhead figures of tiled coding on synthetic scenes, pooled over seeds so that
    scene content near the tile lines averages out. Returns a dict: ``ratio`` (near/interior error
    ratio of the tiled decode), ``single_ratio`` (the same for a single-tile encode of the same
    scenes), ``overhead`` (tiled/single bytes), and per extra tile the extra bytes of entropy-coded
    payload (``payload_per_tile``: stream flushes, hyper-latent edges) and of the container's tile
    index (``index_per_tile``)."""
    from sarcodec.container import ContainerReader

    yy, xx = np.mgrid[0:size, 0:size]
    d = np.minimum(np.minimum(yy % tile, tile - 1 - yy % tile), np.minimum(xx % tile, tile - 1 - xx % tile))
    near = (d < 8) & (yy >= 8) & (yy < size - 8) & (xx >= 8) & (xx < size - 8)  # tile, not raster, borders
    interior = d >= 8
    acc = {"tiled": [0.0, 0.0], "single": [0.0, 0.0]}
    nbytes = {"tiled": 0, "single": 0}
    payload = {"tiled": 0, "single": 0}
    ntiles = {"tiled": 0, "single": 0}
    for seed in seeds:
        img = synthetic_sar((size, size), seed=seed)
        ref, _ = sarcodec.Radiometry.fit(img).forward(img)
        for name, t in (("tiled", tile), ("single", 1024)):
            # the base layer's mechanism alone: the pixel layer is per tile by design (test_layers.py)
            data = sarcodec.encode(img, model, tile_size=t, outliers="none", bias=False)
            nbytes[name] += len(data)
            tiles = ContainerReader(data).header.tiles
            payload[name] += sum(e.length for e in tiles)
            ntiles[name] += len(tiles)
            err = (sarcodec.decode(data, model, normalized=True).astype(np.float64) - ref) ** 2
            acc[name][0] += err[near].mean()
            acc[name][1] += err[interior].mean()
    extra_tiles = ntiles["tiled"] - ntiles["single"]
    extra_payload = payload["tiled"] - payload["single"]
    return dict(
        ratio=acc["tiled"][0] / acc["tiled"][1], single_ratio=acc["single"][0] / acc["single"][1],
        overhead=nbytes["tiled"] / nbytes["single"], payload_per_tile=extra_payload / extra_tiles,
        index_per_tile=(nbytes["tiled"] - nbytes["single"] - extra_payload) / extra_tiles)


def test_no_seams_no_wasted_bits_mechanism(model):
    """With a barely trained model, error near 64-px lines is high whatever the tiling (its hyper-
    latent grid shows); what tiling must not do is add to it. Such a model codes a 256-px tile in
    about 900 bytes (0.11 bpp), so its overhead is judged in bytes per extra tile (about 21 of
    payload and 8 of index here), not as a share: the 3% bound is the bundled model's test."""
    f = _seam_and_overhead(model)
    assert f["ratio"] < f["single_ratio"] + 0.01
    assert f["payload_per_tile"] < 32 and f["index_per_tile"] < 16


def test_no_seams_no_wasted_bits_bundled_default():
    if "default" not in sarcodec.list_pretrained():
        pytest.skip("no bundled default model")
    f = _seam_and_overhead(sarcodec.load_model("default"))
    assert f["ratio"] < 1.05 and f["overhead"] < 1.03
    assert f["ratio"] < f["single_ratio"] + 0.02


@pytest.fixture()
def sarc_file(model, tmp_path, trained_tiny):
    img = synthetic_sar((100, 120), seed=2)[None]
    _write(tmp_path / "s.tif", img)
    compress_file(tmp_path / "s.tif", tmp_path / "s.sarc", model, tile_size=64)
    return tmp_path / "s.sarc"


def _cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr().err


def test_cli_failures_have_codes_and_leave_no_output(sarc_file, trained_tiny, tmp_path, capsys):
    ck = str(trained_tiny)
    data = sarc_file.read_bytes()
    (tmp_path / "trunc.sarc").write_bytes(data[: len(data) // 2])
    bad = bytearray(data)
    bad[len(data) // 3] ^= 0xFF
    (tmp_path / "flip.sarc").write_bytes(bytes(bad))
    (tmp_path / "text.tif").write_text("this is not a raster")
    cases = [
        (["decompress", str(tmp_path / "trunc.sarc"), "-o", str(tmp_path / "o1.tif"), "-m", ck], 5, "o1.tif"),
        (["decompress", str(tmp_path / "flip.sarc"), "-o", str(tmp_path / "o2.tif"), "-m", ck], 5, "o2.tif"),
        (["compress", str(tmp_path / "text.tif"), "-o", str(tmp_path / "o3.sarc"), "-m", ck], 3, "o3.sarc"),
        (["compress", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "o4.sarc"), "-m", ck], 3, "o4.sarc"),
        (["compress", str(tmp_path / "s.tif"), "-o", str(tmp_path / "o5.sarc"), "-m", "no-such-model"], 4, "o5.sarc"),
        (["decompress", str(sarc_file), "-o", str(tmp_path / "o6.tif")], 4, "o6.tif"),  # model not bundled
        (["decompress", str(sarc_file), "-o", str(tmp_path / "o7.tif"), "-m", ck, "--window", "0,0,999,5"], 3, "o7.tif"),
    ]
    for args, code, outname in cases:
        c, msg = _cli(args, capsys)
        assert c == code, (args, c, msg)
        assert msg.strip()
        assert not (tmp_path / outname).exists()
    # read-only location (root ignores file modes, /proc never accepts new files)
    c, msg = _cli(["compress", str(tmp_path / "s.tif"), "-o", "/proc/sarcodec-test.sarc", "-m", ck], capsys)
    assert c == 7
    # no temporary files left behind anywhere
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".part") or ".part." in f]


def test_python_api_rejects_windows_outside_the_raster(sarc_file, trained_tiny, tmp_path):
    for win in [(-1, 0, 10, 10), (0, -3, 10, 10), (0, 0, 0, 5), (100, 0, 30, 10)]:
        with pytest.raises(sarcodec.InputError, match="outside the raster"):
            decompress_file(sarc_file, tmp_path / "w.tif", model=str(trained_tiny), window=win)
        with pytest.raises(sarcodec.InputError, match="outside the raster"):
            read_window(sarc_file, win, model=str(trained_tiny))
    assert not (tmp_path / "w.tif").exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".w.tif")]


def test_cli_directories_and_globs(tmp_path, trained_tiny, capsys):
    for i in range(2):
        _write(tmp_path / f"in{i}.tif", synthetic_sar((70, 90), seed=i)[None])
    (tmp_path / "out").mkdir()
    main(["compress", str(tmp_path / "in*.tif"), "-o", str(tmp_path / "out"), "-m", str(trained_tiny), "--tile", "64"])
    assert sorted(os.listdir(tmp_path / "out")) == ["in0.sarc", "in1.sarc"]
    main(["decompress", str(tmp_path / "out"), "-o", str(tmp_path / "out"), "-m", str(trained_tiny)])
    with rasterio.open(tmp_path / "out" / "in1.tif") as ds:
        assert ds.shape == (70, 90)


def test_batched_encoding_decodes_like_one_tile_at_a_time(model):
    """Tiles of one shape share an analysis-transform call; edge tiles (other shapes) go on their
    own; every tile still decodes independently, to what one-at-a-time encoding gives."""
    img = synthetic_sar((300, 420), seed=31)
    one = sarcodec.encode(img, model, tile_size=128, batch=1)
    many = sarcodec.encode(img, model, tile_size=128, batch=3)
    a = sarcodec.decode(one, model, normalized=True)
    b = sarcodec.decode(many, model, normalized=True)
    assert abs(len(one) - len(many)) <= 0.005 * len(one)
    assert np.abs(a - b).max() < 0.02 and np.abs(a - b).mean() < 1e-3  # at most a rounding flip in ŷ


def test_window_decode_synthesises_only_what_it_needs(model, monkeypatch):
    """A small window inside a big tile costs a small synthesis (and equals the full decode)."""
    img = synthetic_sar((700, 700), seed=31)
    data = sarcodec.encode(img, model, tile_size=512)  # this model's synthesis reaches 8 latents (128 px)
    full = sarcodec.decode(data, model)
    areas = []
    real = type(model).synthesize
    monkeypatch.setattr(type(model), "synthesize", lambda self, y, h, w: areas.append(h * w) or real(self, y, h, w))
    win = sarcodec.decode(data, model, window=(200, 190, 20, 30))
    np.testing.assert_array_equal(win, full[190:220, 200:220])
    assert len(areas) == 1 and areas[0] < 0.4 * 512 * 512  # not the whole tile
    areas.clear()
    edge = sarcodec.decode(data, model, window=(500, 490, 40, 50))  # across four tiles
    np.testing.assert_array_equal(edge, full[490:540, 500:540])
    assert len(areas) == 4 and sum(areas) < 2 * 512 * 512


def test_decimated_sample_is_every_kth_pixel(tmp_path):
    """The radiometry sample of a file is rows and columns 0, k, 2k, ... as for an array (so a
    file and the same array fit the same clip bounds), read in strips (GDAL's decimated read was
    seconds per megapixel inside a rasterio.Env)."""
    import rasterio

    from sarcodec.files import RasterioSource, _gdal_env, _open_raster

    x = (np.arange(1100 * 700, dtype=np.uint32).reshape(1100, 700) % 65521).astype("uint16")
    p = tmp_path / "g.tif"
    with rasterio.open(p, "w", driver="GTiff", width=700, height=1100, count=1, dtype="uint16", tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate") as ds:
        ds.write(x[None])
    with _gdal_env(), _open_raster(p) as ds:
        for k in (1, 2, 3, 7):
            assert np.array_equal(RasterioSource(ds).read_decimated(0, k), x[::k, ::k])


def test_cli_nodata_override(tmp_path, trained_tiny):
    """A fill value the file does not declare (here -9999 on a quarter of an intensity raster)
    is refused with a message naming --nodata; --nodata V codes those pixels as invalid and the
    decoded GeoTIFF declares V."""
    x = synthetic_sar((96, 80), seed=5).astype(np.float32)
    x[:, :40] = -9999.0  # half of the raster: more than the 5% of negatives a linear kind tolerates
    src = tmp_path / "filled.tif"
    with rasterio.open(src, "w", driver="GTiff", width=80, height=96, count=1, dtype="float32") as ds:
        ds.write(x, 1)
    with pytest.raises(SystemExit) as e:
        main(["compress", str(src), "-o", str(tmp_path / "a.sarc"), "-m", str(trained_tiny)])
    assert e.value.code != 0 and not (tmp_path / "a.sarc").exists()
    main(["compress", str(src), "-o", str(tmp_path / "a.sarc"), "-m", str(trained_tiny), "--nodata", "-9999"])
    main(["decompress", str(tmp_path / "a.sarc"), "-o", str(tmp_path / "a.tif"), "-m", str(trained_tiny)])
    with rasterio.open(tmp_path / "a.tif") as ds:
        assert ds.nodata == -9999.0
        y = ds.read(1)
    assert (y[:, :40] == -9999.0).all() and (y[:, 40:] > 0).all()


def test_negative_values_message_names_the_cli_option():
    from sarcodec.errors import InputError
    from sarcodec.radiometry import check_representable

    with pytest.raises(InputError, match="--nodata"):
        check_representable(-np.ones((8, 8), np.float32), "intensity", None, "band 1")


def test_rgb_picture_is_refused_unless_a_kind_is_given(tmp_path, trained_tiny):
    """A 3-band 8-bit PNG without georeferencing (a quicklook) is not coded silently as SAR DN."""
    from sarcodec.errors import InputError

    rgb = (np.random.default_rng(0).random((3, 64, 64)) * 255).astype("uint8")
    png = tmp_path / "quicklook.png"
    with rasterio.open(png, "w", driver="PNG", width=64, height=64, count=3, dtype="uint8") as ds:
        ds.write(rgb)
    with pytest.raises(InputError, match="RGB picture.*--kind"):
        compress_file(png, tmp_path / "q.sarc", str(trained_tiny))
    assert not (tmp_path / "q.sarc").exists()
    compress_file(png, tmp_path / "q.sarc", str(trained_tiny), kind="dn")  # the user insists
    assert (tmp_path / "q.sarc").is_file()


def test_progress_covers_every_pass(tmp_path):
    """One bar over all the work: the pixel-layer pass reports progress too (half of each tile
    after the first pass's half), and a --bpp search advances per trial encode, summing to the
    raster's pixels either way; the CLI says up front what a search costs."""
    import subprocess
    import sys

    import rasterio

    x = synthetic_sar((160, 130), seed=31).astype(np.float32)
    with rasterio.open(tmp_path / "p.tif", "w", driver="GTiff", width=130, height=160, count=1, dtype="float32") as ds:
        ds.write(x, 1)
    for kw, least in (({}, 2 * 9), ({"bpp": 1.0}, 5)):
        calls = []
        sarcodec.compress_file(tmp_path / "p.tif", tmp_path / "p.sarc", "default", tile_size=64, force=True,
                               progress=calls.append, **kw)
        assert sum(calls) == x.size and len(calls) >= least, (kw, calls)
    r = subprocess.run([sys.executable, "-m", "sarcodec", "compress", str(tmp_path / "p.tif"), "-o",
                        str(tmp_path / "q.sarc"), "--bpp", "1", "--tile", "64"], capture_output=True, text=True)
    assert r.returncode == 0 and "trial encodes" in r.stderr, r.stderr
