"""Batches: one task per file, here or on a Dask LocalCluster; failures recorded, the rest done;
relative paths kept; skip-existing; bytes identical to the sequential path."""
import subprocess
import sys

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from sarcodec.batch import batch_exit_code, compress_files, decompress_files, output_paths, summary_table  # noqa: E402
from sarcodec.data import synthetic_sar  # noqa: E402


def _tif(path, seed):
    x = synthetic_sar((96, 80), seed=seed).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=80, height=96, count=1, dtype="float32") as ds:
        ds.write(x, 1)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    _tif(d / "a" / "scene.tif", 1)
    _tif(d / "b" / "scene.tif", 2)  # the same name in another folder
    (d / "b" / "bad.tif").write_bytes(b"not a raster at all")
    _tif(d / "c.tif", 3)
    return d, [d / "a" / "scene.tif", d / "b" / "bad.tif", d / "b" / "scene.tif", d / "c.tif"]


def test_output_paths_keep_relative_paths(tmp_path):
    outs = output_paths([tmp_path / "x" / "s.tif", tmp_path / "y" / "s.tif"], tmp_path / "o", ".sarc")
    assert outs == [tmp_path / "o" / "x" / "s.sarc", tmp_path / "o" / "y" / "s.sarc"]


def test_sequential_batch_continues_and_skips(inputs, trained_tiny, tmp_path):
    d, files = inputs
    rows = compress_files(files, tmp_path / "out", model=str(trained_tiny), tile_size=64)
    assert [r["status"] for r in rows] == ["ok", "error", "ok", "ok"]
    assert rows[1]["exit_code"] == 3 and batch_exit_code(rows) == 3 and "1 failed" in summary_table(rows)
    assert (tmp_path / "out" / "a" / "scene.sarc").exists() and (tmp_path / "out" / "b" / "scene.sarc").exists()
    again = compress_files(files, tmp_path / "out", model=str(trained_tiny), skip_existing=True, tile_size=64)
    assert [r["status"] for r in again] == ["skipped", "error", "skipped", "skipped"]
    back = decompress_files(sorted((tmp_path / "out").rglob("*.sarc")), tmp_path / "tifs", model=str(trained_tiny))
    assert all(r["status"] == "ok" for r in back) and len(list((tmp_path / "tifs").rglob("*.tif"))) == 3


def test_local_cluster_batch_is_byte_identical(inputs, trained_tiny, tmp_path):
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    d, files = inputs
    seq = compress_files(files, tmp_path / "seq", model=str(trained_tiny), tile_size=64, precision="fp32")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            Client(cl) as client:
        par = compress_files(files, tmp_path / "par", client, model=str(trained_tiny), tile_size=64, precision="fp32")
    assert [r["status"] for r in par] == [r["status"] for r in seq] == ["ok", "error", "ok", "ok"]
    for r_seq, r_par in zip(seq, par):
        if r_seq["status"] == "ok":
            assert open(r_seq["output"], "rb").read() == open(r_par["output"], "rb").read()


def test_cli_batch_summary_and_exit_code(inputs, trained_tiny, tmp_path):
    d, files = inputs
    (tmp_path / "o").mkdir()
    r = subprocess.run([sys.executable, "-m", "sarcodec", "compress", *map(str, files), "-o", str(tmp_path / "o"),
                        "-m", str(trained_tiny), "--tile", "64"], capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    assert "3 ok, 0 skipped, 1 failed" in r.stdout and "[4/4]" in r.stderr  # a log line per file
    assert len(list((tmp_path / "o").rglob("*.sarc"))) == 3


def test_cli_directory_trees_round_trip(trained_tiny, tmp_path):
    """A directory is searched recursively, -o DIR/ is created, decompress takes the tree compress
    wrote, and without -o the output lands beside its input."""
    src = tmp_path / "data" / "batch"
    _tif(src / "a" / "scene.tif", 1)
    _tif(src / "b" / "deep" / "scene.tif", 2)
    cli = [sys.executable, "-m", "sarcodec"]
    r = subprocess.run(cli + ["compress", str(src), "-o", str(tmp_path / "outb") + "/", "-m", str(trained_tiny),
                              "--tile", "64"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.relative_to(tmp_path / "outb").as_posix() for p in (tmp_path / "outb").rglob("*.sarc")) == \
        ["a/scene.sarc", "b/deep/scene.sarc"]
    r = subprocess.run(cli + ["decompress", str(tmp_path / "outb"), "-o", str(tmp_path / "outdec"), "-m",
                              str(trained_tiny)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.relative_to(tmp_path / "outdec").as_posix() for p in (tmp_path / "outdec").rglob("*.tif")) == \
        ["a/scene.tif", "b/deep/scene.tif"]
    # one input, no -o: beside the input, same name with the new suffix
    one = tmp_path / "single" / "x.tif"
    _tif(one, 3)
    r = subprocess.run(cli + ["compress", str(one), "-m", str(trained_tiny), "--tile", "64"], capture_output=True, text=True)
    assert r.returncode == 0 and (tmp_path / "single" / "x.sarc").is_file(), r.stderr
    # a single input into a new directory named with a trailing separator
    r = subprocess.run(cli + ["decompress", str(tmp_path / "single" / "x.sarc"), "-o", str(tmp_path / "new") + "/",
                              "-m", str(trained_tiny)], capture_output=True, text=True)
    assert r.returncode == 0 and (tmp_path / "new" / "x.tif").is_file(), r.stderr


def test_summary_table_tells_same_names_apart(tmp_path):
    rows = [{"input": str(tmp_path / d / "scene.tif"), "status": "ok", "bpp": 0.5, "seconds": 1.0, "error": None}
            for d in ("a", "b/deep")]
    table = summary_table(rows)
    assert "a/scene.tif" in table and "b/deep/scene.tif" in table
    long = [{"input": str(tmp_path / ("x" * 90) / "scene.tif"), "status": "ok", "bpp": 0.5, "seconds": 1.0,
             "error": None}, rows[0]]
    assert "…" in summary_table(long) and "/scene.tif" in summary_table(long)


def test_ctrl_c_during_a_cluster_batch_leaves_no_temporaries(tmp_path, trained_tiny):
    """SIGINT while a LocalCluster compresses: exit 130, the tasks not started are cancelled, the
    cluster closes, and nothing half-written (no .part file) is left in the output tree."""
    import os
    import signal
    import time

    pytest.importorskip("distributed")
    src = tmp_path / "in"
    x = synthetic_sar((512, 512), seed=5).astype(np.float32)
    src.mkdir()
    for i in range(8):
        with rasterio.open(src / f"s{i}.tif", "w", driver="GTiff", width=512, height=512, count=1,
                           dtype="float32") as ds:
            ds.write(x, 1)
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "sarcodec", "compress", str(src), "-o", f"{out}/", "--cluster",
                          "local:2", "--model", str(trained_tiny), "--tile", "128"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and not (out.exists() and any(
            ".part" in f or f.endswith(".sarc") for _, _, fs in os.walk(out) for f in fs)):
        time.sleep(0.05)  # until the workers are writing
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=180)
    assert p.returncode == 130, err.decode()[-2000:]
    left = [f for _, _, fs in os.walk(out) for f in fs if ".part" in f or f.startswith(".")]
    assert left == [], left
    # no traceback through sarcodec's code (a worker's heartbeat to a scheduler already closing
    # may log one of distributed's own, a race of the cluster's shutdown)
    ours = [t for t in err.decode().split("Traceback (most recent call last):")[1:] if "/sarcodec/" in t]
    assert ours == [], err.decode()[-3000:]
