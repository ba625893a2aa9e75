"""Outputs complete or absent: signals, full disks / file-size limits, permissions under a umask,
atomic no-overwrite, temporaries of killed writers, worker processes that die with their parent."""
import os
import resource
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

import sarcodec  # noqa: E402
from sarcodec.container import atomic_write  # noqa: E402
from sarcodec.data import synthetic_sar  # noqa: E402
from sarcodec.errors import OutputError  # noqa: E402

CLI = [sys.executable, "-m", "sarcodec"]


def _tif(path, size=(1200, 1500)):
    x = synthetic_sar(size, seed=1).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=size[1], height=size[0], count=1, dtype="float32") as ds:
        ds.write(x, 1)
    return x


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("rel")
    _tif(d / "big.tif")
    return d


def _leftovers(d, name):
    return [p.name for p in d.iterdir() if p.name.startswith(f".{name}.")]


def _children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


@pytest.mark.parametrize("sig,code,extra", [(signal.SIGINT, 130, []), (signal.SIGTERM, 143, []),
                                            (signal.SIGINT, 130, ["--workers", "2"]),
                                            (signal.SIGTERM, 143, ["--workers", "2"])])
def test_signals_exit_with_their_code_and_leave_nothing(scene, tmp_path, sig, code, extra):
    out = tmp_path / "big.sarc"
    p = subprocess.Popen(CLI + ["compress", str(scene / "big.tif"), "-o", str(out), "--tile", "256", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not _leftovers(tmp_path, "big.sarc") and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)  # wait until it is writing
    kids = _children(p.pid)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == code, err.decode()
    assert b"interrupted" in err
    assert not out.exists() and not _leftovers(tmp_path, "big.sarc")
    time.sleep(0.5)
    assert not [k for k in kids if os.path.exists(f"/proc/{k}")]  # no orphan worker


def test_sigkill_leaves_no_orphan_and_the_next_run_cleans_up(scene, tmp_path):
    out = tmp_path / "big.sarc"
    p = subprocess.Popen(CLI + ["compress", str(scene / "big.tif"), "-o", str(out), "--tile", "256",
                                "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not _leftovers(tmp_path, "big.sarc") and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the pool is up
    kids = _children(p.pid)
    p.kill()
    p.wait()
    time.sleep(1.0)
    assert not [k for k in kids if os.path.exists(f"/proc/{k}") and
                open(f"/proc/{k}/stat").read().split()[2] != "Z"]  # workers died with their parent
    assert _leftovers(tmp_path, "big.sarc")  # SIGKILL cannot clean up ...
    small = tmp_path / "s.tif"
    _tif(small, (64, 64))
    subprocess.run(CLI + ["compress", str(small), "-o", str(out)], check=True, capture_output=True)
    assert not _leftovers(tmp_path, "big.sarc") and out.exists()  # ... the next run does


def _limited(limit_bytes):
    def pre():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return pre


@pytest.mark.parametrize("cog", [False, True])
def test_file_size_limit_on_decompress_is_exit_7_and_no_output(scene, tmp_path, cog):
    sarc = tmp_path / "a.sarc"
    subprocess.run(CLI + ["compress", str(scene / "big.tif"), "-o", str(sarc), "-q", "4"], check=True,
                   capture_output=True)
    old = tmp_path / "a.tif"
    old.write_bytes(b"previous content")
    args = CLI + ["decompress", str(sarc), "-o", str(old), "--force"] + (["--cog"] if cog else [])
    r = subprocess.run(args, capture_output=True, preexec_fn=_limited(2_000_000))
    assert r.returncode == 7, r.stderr.decode()
    assert old.read_bytes() == b"previous content"  # the previous output is intact
    assert not _leftovers(tmp_path, "a.tif")


def test_file_size_limit_on_compress_is_exit_7(scene, tmp_path):
    r = subprocess.run(CLI + ["compress", str(scene / "big.tif"), "-o", str(tmp_path / "a.sarc")],
                       capture_output=True, preexec_fn=_limited(20_000))
    assert r.returncode == 7, r.stderr.decode()
    assert not (tmp_path / "a.sarc").exists() and not _leftovers(tmp_path, "a.sarc")


def test_outputs_follow_the_umask_and_force_keeps_the_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "x.bin", b"1")
        assert stat.S_IMODE(os.stat(tmp_path / "x.bin").st_mode) == 0o644
        os.chmod(tmp_path / "x.bin", 0o640)
        atomic_write(tmp_path / "x.bin", b"2", force=True)
        assert stat.S_IMODE(os.stat(tmp_path / "x.bin").st_mode) == 0o640
        _tif(tmp_path / "s.tif", (64, 64))
        sarcodec.compress_file(tmp_path / "s.tif", tmp_path / "s.sarc")
        sarcodec.decompress_file(tmp_path / "s.sarc", tmp_path / "d.tif", cog=True)
        for f in ("s.sarc", "d.tif"):
            assert stat.S_IMODE(os.stat(tmp_path / f).st_mode) == 0o644
    finally:
        os.umask(old)


def test_no_overwrite_is_atomic(tmp_path):
    from sarcodec.container import atomic_path

    with pytest.raises(OutputError, match="already exists"):
        with atomic_path(tmp_path / "z.bin") as t2:
            t2.write_bytes(b"mine")
            (tmp_path / "z.bin").write_bytes(b"theirs")
    assert (tmp_path / "z.bin").read_bytes() == b"theirs"
    assert not _leftovers(tmp_path, "z.bin")


def test_inputs_the_kind_cannot_represent_are_refused(tmp_path):
    from sarcodec.errors import InputError

    x = synthetic_sar((64, 64), seed=3).astype(np.float32)
    for bad, hint in ((10 * np.log10(x), "--kind db"), (np.zeros_like(x), "nodata=0"),
                      (x * (1 + 1j), "complex")):
        with pytest.raises(InputError, match=hint.replace("-", "\\-")):
            sarcodec.encode(bad, "default")
    sarcodec.encode(np.where(x > np.quantile(x, 0.02), x, -1e-3 * x), "default")  # 2% small negatives: sigma0 after noise removal
    assert sarcodec.decode(sarcodec.encode(10 * np.log10(x), "default", kind="db")).shape == x.shape
    z = np.zeros((64, 64), np.uint16)  # an all-nodata band (a scene border) is fine
    assert (sarcodec.decode(sarcodec.encode(z, "default", kind="dn", nodata=0)) == 0).all()  # nodata out
    with rasterio.open(tmp_path / "slc.tif", "w", driver="GTiff", width=64, height=64, count=1, dtype="complex_int16") as ds:
        ds.write(np.ones((64, 64), np.complex64), 1)
    r = subprocess.run(CLI + ["compress", str(tmp_path / "slc.tif"), "-o", str(tmp_path / "slc.sarc")],
                       capture_output=True, text=True)
    assert r.returncode == 3 and "complex" in r.stderr and not (tmp_path / "slc.sarc").exists()
    with pytest.raises(InputError, match="above the limit"):
        sarcodec.encode(x, "default", max_pixels=1000)


def test_api_arguments_are_validated(tmp_path):
    from sarcodec.errors import InputError

    x = synthetic_sar((64, 64), seed=4).astype(np.float32)
    data = sarcodec.encode(x, "default")
    calls = [lambda: sarcodec.decode(str(tmp_path / "missing.sarc")), lambda: sarcodec.decode(123),
             lambda: sarcodec.decode(data, window=(0.5, 0, 2, 2)), lambda: sarcodec.decode(data, dtype="bool"),
             lambda: sarcodec.decode(data, dtype="float128"), lambda: sarcodec.encode(x, "default", nodata="x"),
             lambda: sarcodec.encode(x, "default", batch=-3),
             lambda: sarcodec.encode(x, "default", metadata={"a": object()})]
    for c in calls:
        with pytest.raises(InputError):
            c()
    for dt in ("bool", "object", "float128"):
        (tmp_path / "a.sarc").write_bytes(data)
        r = subprocess.run(CLI + ["decompress", str(tmp_path / "a.sarc"), "-o", str(tmp_path / "a.tif"), "--dtype", dt],
                           capture_output=True, text=True)
        assert r.returncode == 3, r.stderr


def test_input_changed_during_compression_writes_nothing(tmp_path, monkeypatch):
    from sarcodec import files
    from sarcodec.errors import InputError

    _tif(tmp_path / "s.tif", (64, 64))
    real = files._identity
    calls = []

    def changing(p):
        calls.append(1)
        return real(p) if len(calls) == 1 else (-5, -5)

    monkeypatch.setattr(files, "_identity", changing)
    with pytest.raises(InputError, match="changed"):
        sarcodec.compress_file(tmp_path / "s.tif", tmp_path / "s.sarc")
    assert not (tmp_path / "s.sarc").exists() and not _leftovers(tmp_path, "s.sarc")


def test_full_disk_on_compress_is_exit_7_and_no_output(tmp_path, monkeypatch, capsys):
    import errno

    from sarcodec import container
    from sarcodec.cli import main

    _tif(tmp_path / "s.tif", (64, 64))
    real = container.ContainerWriter.add_blob
    calls = []

    def full(self, data):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(container.ContainerWriter, "add_blob", full)
    with pytest.raises(SystemExit) as e:
        main(["compress", str(tmp_path / "s.tif"), "-o", str(tmp_path / "s.sarc")])
    assert e.value.code == 7 and "No space left" in capsys.readouterr().err
    assert not (tmp_path / "s.sarc").exists() and not _leftovers(tmp_path, "s.sarc")
