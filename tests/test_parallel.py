"""Entropy coding across tiles in worker processes: same bytes, same pixels, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

import sarcodec
from conftest import small_model
from sarcodec.cli import main
from sarcodec.data import synthetic_sar
from sarcodec.files import compress_file, decompress_file
from sarcodec.parallel import MIN_TILES, CoderPool, auto_workers


@pytest.fixture(scope="module")
def model(trained_tiny):
    return sarcodec.load_model(trained_tiny)


@pytest.fixture(scope="module")
def image():
    return np.stack([synthetic_sar((260, 330), seed=5), synthetic_sar((260, 330), seed=6) * 0.2])


def test_workers_change_no_byte_and_no_pixel(model, image):
    """30 tiles per band (the latent cache of 21 evicts) coded in 2 processes: the same file, the
    same decode (full and window)."""
    ref = sarcodec.encode(image, model, tile_size=64, workers=0)
    par = sarcodec.encode(image, model, tile_size=64, workers=2)
    assert par == ref
    full = sarcodec.decode(ref, model, normalized=True, workers=0)
    np.testing.assert_array_equal(sarcodec.decode(ref, model, normalized=True, workers=2), full)
    win = (70, 40, 190, 150)
    part = sarcodec.decode(ref, model, normalized=True, window=win, workers=2)
    np.testing.assert_array_equal(part, full[:, 40:190, 70:260])


@pytest.mark.parametrize("arch", ["baseline", "hyperprior"])
def test_every_latent_codec_codes_in_workers(arch):
    """The factorized and the scale-hyperprior coders work in a pool too (the default model
    family is mean-scale, covered above)."""
    m = small_model(arch)
    img = synthetic_sar((200, 200), seed=2)
    ref = sarcodec.encode(img, m, tile_size=64, workers=0)
    assert sarcodec.encode(img, m, tile_size=64, workers=2) == ref
    np.testing.assert_array_equal(sarcodec.decode(ref, m, normalized=True, workers=2),
                                  sarcodec.decode(ref, m, normalized=True, workers=0))


def test_files_and_cli_take_workers(model, image, tmp_path, trained_tiny):
    src = tmp_path / "s.tif"
    with rasterio.open(src, "w", driver="GTiff", width=330, height=260, count=2, dtype="float32") as ds:
        ds.write(image.astype("float32"))
    compress_file(src, tmp_path / "a.sarc", model, tile_size=128, workers=0)
    main(["compress", str(src), "-o", str(tmp_path / "b.sarc"), "-m", str(trained_tiny), "--tile", "128",
          "--workers", "2", "--device", "cpu"])
    assert (tmp_path / "a.sarc").read_bytes() == (tmp_path / "b.sarc").read_bytes()
    decompress_file(tmp_path / "a.sarc", tmp_path / "a.tif", model=model, workers=0)
    main(["decompress", str(tmp_path / "b.sarc"), "-o", str(tmp_path / "b.tif"), "-m", str(trained_tiny),
          "--workers", "2", "--device", "cpu"])
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_worker_errors_reach_the_caller(model):
    """A stream that fails in a worker raises the same error class in the caller."""
    img = synthetic_sar((64, 64), seed=1)
    data = sarcodec.encode(img, model, tile_size=64, workers=0)
    from sarcodec.container import ContainerReader

    with ContainerReader(data) as r:
        e = r.header.tiles[0]
        payload = r.tile_bytes(e)
    shape = model.latent_shape(e.height, e.width)
    with CoderPool(model.coder(), 1) as pool:
        assert np.array_equal(pool.decode(payload, shape).result(),
                              model.decode_latent(payload, e.height, e.width).numpy())
        with pytest.raises(sarcodec.FormatError, match="trailing bytes"):
            pool.decode(payload + b"\0\0\0\0", shape).result()
        with pytest.raises(sarcodec.FormatError):
            pool.decode(payload[:3], shape).result()


def test_bad_worker_counts_are_refused(model, tmp_path, capsys):
    img = synthetic_sar((64, 64), seed=1)
    for bad in (-1, 1.5, "2"):
        with pytest.raises(sarcodec.InputError, match="workers"):
            sarcodec.encode(img, model, workers=bad)
    with pytest.raises(sarcodec.InputError, match="workers"):
        decompress_file(tmp_path / "x.sarc", tmp_path / "x.tif", workers=-2)
    with pytest.raises(SystemExit) as e:
        main(["compress", "x.tif", "-o", str(tmp_path / "x.sarc"), "--workers", "-1"])
    assert e.value.code == 2 and not (tmp_path / "x.sarc").exists()


def test_automatic_worker_count(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert auto_workers(MIN_TILES - 1, "cuda") == 0  # a pool costs more than it saves
    assert auto_workers(100, "cuda") == 15  # the GPU leaves coding to the CPU: every core but one
    assert auto_workers(100, "cpu") == 0  # the transforms already use the cores
    # pixel layers decode on one core each (NumPy, GIL): a worker per core, at most one per layer
    assert auto_workers(4, "cpu", layers=4) == 4
    assert auto_workers(100, "cpu", layers=100) == 16
    assert auto_workers(100, "cpu", layers=1) == 0
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert auto_workers(100, "cuda") == 1
    assert auto_workers(100, "cpu", layers=30) == 2


def test_spawned_workers_get_a_pickled_coder(model, monkeypatch):
    """Off Linux the workers are spawned and receive the coder pickled: it must survive that."""
    import pickle

    coder = model.coder()
    with torch.no_grad():
        symbols = model.latent_codec.prepare(model.g_a(torch.rand(1, 1, 64, 64) - 0.5))
    copy = pickle.loads(pickle.dumps(coder))
    assert copy.encode(*symbols) == coder.encode(*symbols)
    monkeypatch.setattr("sys.platform", "darwin")
    with CoderPool(coder, 1) as pool:
        assert pool.encode(*symbols).result() == coder.encode(*symbols)


def test_a_dead_worker_is_a_resource_error(model):
    import os

    from sarcodec.parallel import result

    with CoderPool(model.coder(), 1) as pool:
        fut = pool._ex.submit(os._exit, 9)  # what the out-of-memory killer does to a worker
        with pytest.raises(sarcodec.ResourceError, match="worker process died") as e:
            result(fut)
    assert e.value.exit_code == 6


def test_planned_decoding_leaves_no_latent_to_the_main_process(model, image, monkeypatch):
    """With a pool, every latent a read needs was decoded ahead in a worker (none falls back to
    the main process), also for a window; without one, all are decoded in the main process."""
    import sarcodec.models.codec as codec

    data = sarcodec.encode(image, model, tile_size=64, workers=0)
    local = []
    real = codec.decode_tile
    monkeypatch.setattr(codec, "decode_tile", lambda *a: local.append(1) or real(*a))
    sarcodec.decode(data, model, workers=2, window=(70, 40, 190, 150))
    assert not local
    sarcodec.decode(data, model, workers=0, window=(0, 0, 64, 64))
    assert len(local) == 2 * 4  # two bands, the tile and its 3 neighbours


def test_pixel_layers_decode_in_workers(model, image, monkeypatch):
    """A file with pixel layers decodes to the same pixels with its layers decoded ahead in
    worker processes (none left to the main process, also for a window), and by default uses
    such a pool on a CPU; a lossless file's tiles (all layer) too."""
    import sarcodec.layer as layer
    import sarcodec.parallel as parallel

    data = sarcodec.encode(image, model, tile_size=64, max_error=1.0, workers=0)
    local = []
    real = layer.decode_layer
    monkeypatch.setattr(layer, "decode_layer", lambda *a: local.append(1) or real(*a))
    full = sarcodec.decode(data, model, normalized=True, workers=0)
    assert len(local) == 2 * 30
    local.clear()
    np.testing.assert_array_equal(sarcodec.decode(data, model, normalized=True, workers=2), full)
    win = (70, 40, 190, 150)
    np.testing.assert_array_equal(sarcodec.decode(data, model, normalized=True, window=win, workers=2),
                                  full[:, 40:190, 70:260])
    assert not local
    pools = []
    real_pool = parallel.CoderPool
    monkeypatch.setattr(parallel, "CoderPool", lambda *a: pools.append(a[1]) or real_pool(*a))
    np.testing.assert_array_equal(sarcodec.decode(data, model, normalized=True), full)  # automatic
    assert pools and pools[0] >= 1 and not local
    dn = (image[0] * 1000).astype(np.uint16)
    packed = sarcodec.encode(dn, model, lossless=True, tile_size=64)
    np.testing.assert_array_equal(sarcodec.decode(packed, workers=2), dn)
    np.testing.assert_array_equal(sarcodec.decode(packed, workers=0), dn)


def test_a_corrupted_layer_decoded_in_a_worker_names_its_tile(model, image):
    """A pixel layer that passes its checksum but does not decode (forged) is a
    CorruptedFileError naming the tile, from a worker as from the main process."""
    import zlib

    from sarcodec.container import ContainerReader, with_header
    from sarcodec.errors import CorruptedFileError

    data = bytearray(sarcodec.encode(image, model, tile_size=64, max_error=1.0, workers=0))
    hdr = ContainerReader(bytes(data)).header
    e = next(t for t in hdr.tiles if t.layer_length > 40)
    blob = bytearray(data[e.layer_offset:e.layer_offset + e.layer_length])
    blob[2] = 77  # an unknown layer form
    data[e.layer_offset:e.layer_offset + e.layer_length] = blob
    e.layer_crc = zlib.crc32(bytes(blob))
    forged = with_header(bytes(data), hdr)
    for w in (0, 2):
        with pytest.raises(CorruptedFileError, match=f"row {e.row}, col {e.col}.*unknown layer form"):
            sarcodec.decode(forged, model, workers=w)


def test_pixel_layers_encode_in_workers(model, image):
    """Pixel layers coded in worker processes while the main process synthesises the bases: the
    same file and the same measured error as in one process, for a bound layer on integer DN
    (its step follows the rounding), a lossless file and a search's MSE layer with a memo of
    bases."""
    from sarcodec.api import _encode_one

    image = image[:, :130, :200]  # 2 x 12 tiles
    dn = (image * 3000).astype(np.uint16)
    ref = sarcodec.encode(dn, model, tile_size=64, max_error=1.0, workers=0)
    assert sarcodec.encode(dn, model, tile_size=64, max_error=1.0, workers=2) == ref
    packed = sarcodec.encode(dn, model, lossless=True, tile_size=64, workers=0)
    assert sarcodec.encode(dn, model, lossless=True, tile_size=64, workers=2) == packed
    got = []
    for w in (0, 2):
        stats, memo = {}, {}
        for e in (2.0, 0.7):  # the second trial reuses the memo's bases
            data = _encode_one(image, model, tile_size=64, max_error=e, bound=False, workers=w, stats=stats, memo=memo)
        got.append((data, stats))
    assert got[0] == got[1]


def _encode_in_daemon(args):
    image, path = args
    import sarcodec as sc

    return sc.encode(image, sc.load_model(path), tile_size=64, max_error=1.0)


def test_no_pool_inside_a_daemonic_process(model, image, trained_tiny):
    """In a multiprocessing.Pool (or Dask) worker, which may not have children, a layered encode
    codes in its own process by default instead of failing to start workers."""
    import multiprocessing as mp

    small = image[0, :130, :200]
    with mp.get_context("spawn").Pool(1) as p:  # fork would hang: OpenMP after fork
        data = p.map(_encode_in_daemon, [(small, str(trained_tiny))])[0]
    assert data == sarcodec.encode(small, model, tile_size=64, max_error=1.0, workers=0)


def test_synthesis_threads_give_the_same_file_and_pixels(sar_300x437):
    """Tiles synthesised ahead in threads (the dense syntheses, two or more intra-op threads):
    the same bytes and pixels as one thread synthesising tile after tile, windows included."""
    threads = torch.get_num_threads()
    m = sarcodec.load_model("fast-q2")
    try:
        torch.set_num_threads(2)
        data = sarcodec.encode(sar_300x437, m, tile_size=64)
        full = sarcodec.decode(data, m, normalized=True)
        win = sarcodec.decode(data, m, normalized=True, window=(50, 70, 130, 90))
        torch.set_num_threads(1)  # no synthesis threads
        assert sarcodec.encode(sar_300x437, m, tile_size=64) == data
        np.testing.assert_array_equal(sarcodec.decode(data, m, normalized=True), full)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(win, full[70:160, 50:180])


def test_synthesis_threads_leave_the_thread_count_as_it_was(sar_300x437):
    import threading

    data = sarcodec.encode(sar_300x437, "fast", tile_size=64)
    threads = torch.get_num_threads()
    sarcodec.decode(data)
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert torch.get_num_threads() == threads and seen == [threads]
