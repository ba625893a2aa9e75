"""Seeded fuzzing of the container: random damage, and forged files whose checksums were
recomputed (as an attacker would). Every outcome must be a clean FormatError, or a decode of the
shape the (valid) header says; never another exception, never a run past a time bound.
The larger run with its outcome table: ``python benchmarks/fuzz.py``."""
import pytest

from sarcodec.fuzz import fuzz_container


@pytest.fixture(scope="module")
def fuzz_model(trained_tiny):
    import sarcodec

    return sarcodec.load_model(trained_tiny)


def test_fuzz_random_and_forged_files(fuzz_model):
    table = fuzz_container(fuzz_model, n_random=120, n_forged=180, seed=1, time_limit=10.0)
    assert table["uncaught"] == [], table["uncaught"][:3]
    assert table["slow"] == [], table["slow"][:3]
    assert table["wrong_shape"] == []
    assert table["counts"]["random"]["format_error"] >= 115  # CRCs catch (nearly) every random edit
    assert table["counts"]["forged"]["total"] == 180
    assert table["counts"]["moved"]["format_error"] == table["counts"]["moved"]["total"] > 0  # positional CRC


def test_info_verifies_checksums(fuzz_model, tmp_path, capsys):
    from sarcodec.cli import main
    from sarcodec.container import ContainerReader
    from sarcodec.fuzz import sample_file

    data = sample_file(fuzz_model)
    e = ContainerReader(data).header.tiles[3]
    bad = bytearray(data)
    bad[e.offset + 1] ^= 0x10
    (tmp_path / "bad.sarc").write_bytes(bytes(bad))
    (tmp_path / "ok.sarc").write_bytes(data)

    def run(*args):
        try:
            main(list(args))
        except SystemExit as ex:
            return ex.code or 0
        return 0

    assert run("info", str(tmp_path / "ok.sarc")) == 0 and "verified" in capsys.readouterr().out
    assert run("info", str(tmp_path / "bad.sarc")) == 5 and "checksum" in capsys.readouterr().err
    assert run("info", str(tmp_path / "bad.sarc"), "--no-verify") == 0
    assert "NOT verified" in capsys.readouterr().out
