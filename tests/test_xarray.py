"""The xarray backend: values equal decode, lazy tile-by-tile reads, coordinates and CRS."""
import numpy as np
import pytest

xr = pytest.importorskip("xarray")
pytest.importorskip("dask")
rasterio = pytest.importorskip("rasterio")

import sarcodec  # noqa: E402
from sarcodec.data import synthetic_sar  # noqa: E402


@pytest.fixture(scope="module")
def sarc(tmp_path_factory, trained_tiny):
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    d = tmp_path_factory.mktemp("xr")
    x = np.stack([synthetic_sar((200, 330), seed=s) for s in (1, 2)]).astype(np.float32)
    x[0, :20, :30] = np.nan
    with rasterio.open(d / "a.tif", "w", driver="GTiff", width=330, height=200, count=2, dtype="float32",
                       crs=CRS.from_epsg(32633), transform=from_origin(500000.0, 4200000.0, 10.0, 10.0),
                       nodata=float("nan")) as ds:
        ds.write(x)
    sarcodec.compress_file(d / "a.tif", d / "a.sarc", sarcodec.load_model(trained_tiny), tile_size=64)
    return d / "a.sarc", sarcodec.load_model(trained_tiny)


def test_open_dataarray_equals_decode_and_is_lazy(sarc, monkeypatch):
    from sarcodec import scene

    path, model = sarc
    calls = []
    real = scene.SceneDecoder.tile_pixels
    monkeypatch.setattr(scene.SceneDecoder, "tile_pixels", lambda self, e, *a: calls.append(e) or real(self, e, *a))
    da = xr.open_dataarray(path, engine="sarcodec", chunks={}, model=model)
    assert calls == []  # opening decodes nothing
    assert da.dims == ("band", "y", "x") and da.shape == (2, 200, 330)
    assert da.chunks == ((1, 1), (64, 64, 64, 8), (64, 64, 64, 64, 64, 10))  # the file's tiles
    win = da.isel(band=1, y=slice(70, 120), x=slice(130, 190)).values
    assert {(e.band, e.row, e.col) for e in calls} <= {(1, r, c) for r in (64, 128) for c in (128,)}
    full = sarcodec.decode(str(path), model)
    np.testing.assert_array_equal(win, full[1, 70:120, 130:190])
    np.testing.assert_array_equal(da.values, full)
    assert np.isnan(da.values[0, :20, :30]).all()  # nodata as NaN
    assert xr.open_dataarray(path, engine="sarcodec", model=model, kind="db").attrs["units"] == "dB"


def test_coordinates_and_crs_round_trip(sarc):
    path, model = sarc
    ds = xr.open_dataset(path, engine="sarcodec", model=model)
    assert float(ds.x[0]) == 500005.0 and float(ds.y[0]) == 4199995.0 and float(ds.x[1] - ds.x[0]) == 10.0
    assert "32633" in ds.spatial_ref.attrs["crs_wkt"] or "UTM zone 33N" in ds.spatial_ref.attrs["crs_wkt"]
    assert ds.band_data.attrs["grid_mapping"] == "spatial_ref"
    sel = ds.band_data.sel(x=slice(500500, 501000), y=slice(4199500, 4199000))
    assert sel.shape == (2, 50, 50)
    rio = pytest.importorskip("rioxarray")
    assert ds.band_data.rio.crs.to_epsg() == 32633
    assert rio is not None


def test_gcp_georeferencing_is_exposed_as_rioxarray_does(tmp_path, trained_tiny):
    """A GCP-referenced raster (a GRD in radar geometry) opens with x / y at pixel centres, the
    GCPs' CRS as the CRS, and its GCPs in the grid mapping, as rioxarray.open_rasterio gives them."""
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    x = synthetic_sar((96, 80), seed=4).astype(np.float32)
    gcps = [GroundControlPoint(row=r, col=c, x=10.0 + c / 1000, y=45.0 - r / 1000, z=120.0, id=str(i), info="")
            for i, (r, c) in enumerate([(0, 0), (0, 79), (95, 0), (95, 79), (48, 40)])]
    with rasterio.open(tmp_path / "g.tif", "w", driver="GTiff", width=80, height=96, count=1, dtype="float32",
                       gcps=gcps, crs=CRS.from_epsg(4326)) as ds:
        ds.write(x, 1)
    with rasterio.open(tmp_path / "g.tif") as ds:
        assert ds.gcps[0] and ds.transform.is_identity
        gcps = ds.gcps[0]  # as GDAL stored them (it renumbers the ids)
    m = sarcodec.load_model(trained_tiny)
    sarcodec.compress_file(tmp_path / "g.tif", tmp_path / "g.sarc", m, tile_size=64)
    da = xr.open_dataarray(tmp_path / "g.sarc", engine="sarcodec", model=m)
    assert float(da.x[0]) == 0.5 and float(da.y[-1]) == 95.5
    rio = pytest.importorskip("rioxarray")
    assert rio is not None and da.rio.crs.to_epsg() == 4326
    got = da.rio.get_gcps()
    assert [(g.row, g.col, g.x, g.y, g.z, g.id) for g in got] == [(g.row, g.col, g.x, g.y, g.z, g.id) for g in gcps]
    ref = rio.open_rasterio(tmp_path / "g.tif")
    assert [(g.row, g.col, g.x, g.y) for g in ref.rio.get_gcps()] == [(g.row, g.col, g.x, g.y) for g in got]
