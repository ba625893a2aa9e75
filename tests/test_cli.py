import subprocess
import sys

import pytest

import sarcodec
from sarcodec.cli import main


def run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr()


def test_demo_with_checkpoint(trained_tiny, tmp_path, capsys):
    args = ["demo", "--model", str(trained_tiny), "--size", "128", "--out", str(tmp_path)]
    try:
        main(args)
    except SystemExit as e:  # pragma: no cover - shows the message on failure
        pytest.fail(f"demo exited {e.code}: {capsys.readouterr()}")
    out = capsys.readouterr().out
    assert "JPEG" in out and "settings" in out and "--bpp" in out  # (rich wraps the narrow table)
    assert (tmp_path / "demo.sarc").is_file() and (tmp_path / "demo.png").read_bytes()[:4] == b"\x89PNG"
    # the README's main command runs twice in a row: a rerun replaces the demo's own outputs
    main(args + ["--bpp", "0"])
    assert "--bpp" not in capsys.readouterr().out
    assert sarcodec.decode(str(tmp_path / "demo.sarc"), str(trained_tiny)).shape == (128, 128)
    # but a file the demo did not write is left alone without --force
    (tmp_path / "demo.sarc").write_bytes(b"someone else's file")
    code, io = run(args + ["--bpp", "0"], capsys)
    assert code == 7 and "exists" in io.err
    assert (tmp_path / "demo.sarc").read_bytes() == b"someone else's file"
    main(args + ["--bpp", "0", "--force"])
    assert (tmp_path / "demo.sarc").read_bytes()[:4] != b"some"


def test_info(trained_tiny, tmp_path, capsys, sar_300x437):
    m = sarcodec.load_model(trained_tiny)
    f = tmp_path / "a.sarc"
    f.write_bytes(sarcodec.encode(sar_300x437, m))
    main(["info", str(f)])
    out = capsys.readouterr().out
    assert "300 x 437" in out and "tiny" in out and "bpp" in out


@pytest.mark.parametrize("args,code", [
    (["info", "/definitely/missing.sarc"], 3),
    (["demo", "--model", "no-such-model"], 4),
    (["demo", "--no-such-flag"], 2),
    (["compress", "x.tif", "-o", "y.sarc", "--device", "cuda:7"], 6),
    (["compress", "x.tif", "-o", "y.sarc", "--device", "quantum"], 3),
])
def test_exit_codes(args, code, capsys):
    c, io = run(args, capsys)
    assert c == code


def test_exit_code_for_corrupt_container(tmp_path, capsys):
    f = tmp_path / "bad.sarc"
    f.write_bytes(b"\x89SARC\r\n\x1a" + b"\x00" * 10)
    c, io = run(["info", str(f)], capsys)
    assert c == 5 and "truncated" in io.err


def test_console_script_installed():
    r = subprocess.run([sys.executable, "-m", "sarcodec.cli", "models"], capture_output=True, text=True)
    assert r.returncode == 0 and "attention" in r.stdout


def test_help_speaks_to_a_user(capsys):
    """--help shows option names, not typer's <bool> / <float> / <list[str]> labels, and says the
    default quality and what each mode costs."""
    import re

    for cmd in ([], ["compress"], ["decompress"], ["info"], ["demo"]):
        try:
            main(cmd + ["--help"])
        except SystemExit as e:
            assert e.code in (0, None)
        out = capsys.readouterr().out
        assert not re.search(r"<(bool|float|int|str|list\[)", out), out
    main(["compress", "--help"])
    out = " ".join(re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().out).split())
    assert "QUALITY" in out and "MP/s" in out and "2 cores" in out and "quality" in out


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code in (0, None)
    assert capsys.readouterr().out.startswith(f"sarcodec {sarcodec.__version__}")
