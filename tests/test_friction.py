"""What a GDAL user trips over: kinds and units, saturating dtypes, conflicting options, COG
overviews, packaged configs, any folder as benchmark data, BD-rate against a maintained package."""
import subprocess
import sys

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

import sarcodec  # noqa: E402
from sarcodec.data import synthetic_sar  # noqa: E402

CLI = [sys.executable, "-m", "sarcodec"]


@pytest.fixture(scope="module")
def sarc(tmp_path_factory, trained_tiny):
    d = tmp_path_factory.mktemp("fr")
    x = synthetic_sar((300, 300), seed=5).astype(np.float32)
    with rasterio.open(d / "a.tif", "w", driver="GTiff", width=300, height=300, count=1, dtype="float32") as ds:
        ds.write(x, 1)
        ds.set_band_description(1, "VV")
    sarcodec.compress_file(d / "a.tif", d / "a.sarc", sarcodec.load_model(trained_tiny), tile_size=128)
    return d, trained_tiny


def test_kind_db_sets_description_and_unit(sarc):
    d, ck = sarc
    sarcodec.decompress_file(d / "a.sarc", d / "db.tif", kind="db", model=sarcodec.load_model(ck))
    with rasterio.open(d / "db.tif") as ds:
        assert ds.descriptions[0] == "VV (db)" and ds.units[0] == "dB"


def test_saturating_dtype_warns(sarc):
    d, ck = sarc
    r = subprocess.run(CLI + ["decompress", str(d / "a.sarc"), "-o", str(d / "u8.tif"), "--dtype", "uint8", "--kind",
                              "db", "-m", str(ck), "--force"], capture_output=True, text=True)  # negative dB
    assert r.returncode == 0 and "saturated" in r.stderr
    res = sarcodec.decompress_file(d / "a.sarc", d / "f.tif", model=sarcodec.load_model(ck), force=True)
    assert res["saturated"] == 0


def test_quality_with_a_checkpoint_is_refused(sarc):
    d, ck = sarc
    r = subprocess.run(CLI + ["compress", str(d / "a.tif"), "-o", str(d / "q.sarc"), "-q", "3", "-m", str(ck)],
                       capture_output=True, text=True)
    assert r.returncode == 3 and "--quality" in r.stderr and not (d / "q.sarc").exists()


def test_cog_overviews_average_and_predictor(sarc, tmp_path):
    d, ck = sarc
    x = synthetic_sar((1100, 1100), seed=6).astype(np.float32)
    data = sarcodec.encode(x, sarcodec.load_model(ck), tile_size=512)
    (tmp_path / "big.sarc").write_bytes(data)
    sarcodec.decompress_file(tmp_path / "big.sarc", d / "cog.tif", cog=True, model=sarcodec.load_model(ck), force=True)
    with rasterio.open(d / "cog.tif") as ds:
        assert ds.overviews(1)[0] == 2 and ds.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") in ("2", "3")
        full, ov = ds.read(1).astype(np.float64), ds.read(1, out_shape=(550, 550)).astype(np.float64)
    # AVERAGE: an overview pixel is the mean of its 2x2 block (CUBIC would ring)
    np.testing.assert_allclose(ov[10:20, 10:20], full[20:40, 20:40].reshape(10, 2, 10, 2).mean(axis=(1, 3)), rtol=1e-3)
    with pytest.raises(sarcodec.InputError):
        sarcodec.decompress_file(d / "a.sarc", d / "x.tif", cog=True, overview_resampling="fancy")


def test_packaged_config_by_name(tmp_path):
    from sarcodec.training import load_config

    cfg, _ = load_config("residual", ["steps=3"])
    assert cfg.arch == "residual" and cfg.steps == 3
    with pytest.raises(sarcodec.InputError, match="packaged configs"):
        load_config("no-such-config")


def test_benchmark_takes_any_folder_or_file(sarc):
    from sarcodec.evaluation.benchmark import benchmark_scenes

    d, _ = sarc
    names = [s.path.name for s in benchmark_scenes(d)]  # the folder's GeoTIFFs (other tests add some)
    assert "a.tif" in names and all(n.endswith(".tif") for n in names) and "a.sarc" not in names
    assert [s.path.name for s in benchmark_scenes(d / "a.tif")] == ["a.tif"]


def test_bd_rate_matches_bjontegaard():
    bj = pytest.importorskip("bjontegaard")
    from sarcodec.evaluation.metrics import bd_psnr, bd_rate

    # ours is VCEG-M33's cubic fit: the package's "cubic" method, to rounding (pinned here)
    for r1, p1, r2, p2 in (([0.2, 0.5, 1.0, 2.0], [28.0, 31.5, 35.0, 39.0], [0.18, 0.45, 0.95, 1.9], [28.3, 31.9, 35.2, 39.1]),
                           ([0.1, 0.3, 0.6, 1.1, 2.0, 3.2], [25, 28.5, 31.7, 34.6, 38.4, 42.0],
                            [0.15, 0.35, 0.7, 1.0, 2.2, 3.9], [26.1, 29.0, 32.5, 34.5, 39.6, 44.2])):
        assert bd_rate(r1, p1, r2, p2) == pytest.approx(bj.bd_rate(r1, p1, r2, p2, method="cubic"), abs=1e-6)
        assert bd_psnr(r1, p1, r2, p2) == pytest.approx(bj.bd_psnr(r1, p1, r2, p2, method="cubic"), abs=1e-6)
