"""The benchmark command on a tiny synthetic data root: every output, resumption, the report."""
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from sarcodec.cli import main
from sarcodec.data.synthetic import synthetic_sar
from sarcodec.evaluation.benchmark import Benchmark, Family

rasterio = pytest.importorskip("rasterio")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sar")
    (root / "test").mkdir()
    for i, name in enumerate(["s1_alpha_vv.tif", "s1_beta_vh.tif"]):
        x = synthetic_sar((96, 112), seed=10 + i).astype(np.float32)
        with rasterio.open(root / "test" / name, "w", driver="GTiff", width=112, height=96, count=1,
                           dtype="float32") as ds:
            ds.write(x, 1)
    return root


def test_benchmark_writes_report_and_resumes(data_root, trained_tiny, tmp_path, monkeypatch):
    fam = Family.parse(f"tiny={trained_tiny},{trained_tiny}")
    assert fam.name == "tiny" and len(fam.models) == 2
    out = tmp_path / "bench"
    b = Benchmark(data_root, out, [fam], ["jpeg", "avif"], log=lambda s: None)
    assert b.codecs == ["jpeg2000", "jpeg", "avif"]  # the reference always runs
    res = b.run()
    report = b.report()
    assert set(res["images"]) == {"s1_alpha_vv.tif", "s1_beta_vh.tif"}
    for e in res["images"].values():
        assert len(e["jpeg2000"]["points"]) >= 4 and len(e["tiny"]["points"]) == 2
        p = e["tiny"]["points"][0]
        assert 0 < p["bpp"] and np.isfinite(p["psnr"]) and 0 < p["ms_ssim"] <= 1 and np.isfinite(p["epi"])
    assert "jpeg" in res["summary"] and res["summary"]["jpeg"]["bd_rate"] is not None
    assert res["summary"]["avif"]["bd_psnr"] is not None and set(res["psnr_at"]) == {"tiny", "jpeg2000", "jpeg", "avif"}
    assert res["psnr_at"]["jpeg2000"]["1.0"]["n"] == 2  # both images reach 1 bpp
    md = report.read_text()
    assert "Headline" in md and "BD-PSNR against JPEG 2000" in md
    assert "BD-rate against JPEG 2000" in md and "Wilcoxon" in md and "Architecture comparison" in md
    html = (out / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "<table>" in html
    for svg in (out / "figures").glob("rd_*.svg"):
        ET.fromstring(svg.read_text())  # well-formed
    assert len(list((out / "figures").glob("rd_*.svg"))) == 4
    assert (out / "figures" / "gallery_s1_alpha_vv.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "results.json").read_text())["summary"]

    calls = []
    monkeypatch.setattr(Benchmark, "_learned", staticmethod(lambda *a: calls.append(1)))
    logs = []
    Benchmark(data_root, out, [fam], ["jpeg", "avif"], log=logs.append).run()
    assert not calls and "resumed: 8 of 8" in logs[0]  # nothing measured twice


def test_evaluate_and_bad_codec(data_root, trained_tiny, tmp_path, capsys):
    try:
        main(["evaluate", str(trained_tiny), "--data", str(data_root), "--out", str(tmp_path / "ev")])
    except SystemExit as e:  # pragma: no cover - shows the message on failure
        pytest.fail(f"evaluate exited {e.code}: {capsys.readouterr()}")
    out = capsys.readouterr().out
    assert "alpha" in out and " dB" in out  # one row per image, with the gain over JPEG 2000
    with pytest.raises(SystemExit) as e:
        main(["benchmark", "--data", str(data_root), "--out", str(tmp_path / "b"), "--codecs", "webp"])
    assert e.value.code == 3 and "unknown codec" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # a device this machine lacks: resource error, before any work
        main(["benchmark", "--data", str(data_root), "--out", str(tmp_path / "c"), "--device", "cuda:7"])
    assert e.value.code == 6 and "cuda:7" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_family_spec_with_refinement(trained_tiny):
    from sarcodec.errors import InputError

    fam = Family.parse(f"{trained_tiny}:refine=7")
    assert fam.refine == 7 and fam.name == "tiny-refine7" and fam.models == [str(trained_tiny)]
    named = Family.parse(f"mine={trained_tiny},{trained_tiny}:refine=3")
    assert (named.name, named.refine, len(named.models)) == ("mine", 3, 2)
    assert Family.parse(str(trained_tiny)).refine == 0
    with pytest.raises(InputError):
        Family.parse(f"{trained_tiny}:refine=x")


def test_benchmark_measures_a_refined_family(data_root, trained_tiny, tmp_path):
    """A ':refine=N' family is coded with refinement (its own results, its own resume signature)."""
    import sarcodec

    ckpt = tmp_path / "tiny-l.pt"
    sarcodec.save_checkpoint(sarcodec.load_model(trained_tiny), ckpt, name="tiny-l",
                             training={"config": {"lmbda": 0.01, "distortion": "mse"}})
    plain, refined = Family.parse(f"plain={ckpt}"), Family.parse(f"{ckpt}:refine=2")
    b = Benchmark(data_root, tmp_path / "bench", [plain, refined], [], log=lambda s: None, gallery=False)
    res = b.run()
    assert res["families"]["plain"]["device"] == "cpu"
    assert "|refine2" in b._signature(refined.name) and "refine2" not in b._signature("plain")
    for e in res["images"].values():
        p, r = e["plain"]["points"][0], e["tiny-l-refine2"]["points"][0]
        assert r["bpp"] != p["bpp"] or r["psnr"] != p["psnr"]  # really refined, not a copy


def test_benchmark_ladder_full_range_and_fidelity_metrics(data_root, trained_tiny, tmp_path):
    """A ``:ladder`` family reaches high rates through (MSE) pixel layers; ``-full`` codecs code the
    whole dB range; every point carries bias / bright-target / max-error figures, in the report."""
    fam = Family.parse(f"{trained_tiny}:ladder")
    assert fam.ladder and fam.name.endswith("-ladder")
    b = Benchmark(data_root, tmp_path / "b", [fam], ["jpeg2000-full"], log=lambda s: None, gallery=False)
    res = b.run()
    md = b.report().read_text()
    for e in res["images"].values():
        pts = e[fam.name]["points"]
        assert max(p["bpp"] for p in pts) > 2.0 and any("mse_layer" in p["model"] for p in pts)
        for c in (fam.name, "jpeg2000", "jpeg2000-full"):
            for p in e[c]["points"]:
                assert {"bias_db", "peak_err_db", "peak_max_db", "max_err_db"} <= set(p)
        # the clipped domain loses the brightest pixel, the full range and the learned layer keep it
        assert min(p["peak_max_db"] for p in e["jpeg2000"]["points"]) > 1.0
        assert min(p["peak_max_db"] for p in e[fam.name]["points"]) < 0.5
        fine = [p for p in pts if p["model"].endswith("mse_layer=0.12")]
        assert not fine or fine[0]["max_err_db"] <= 2 * 0.12 + 1e-3  # within the step (centroids, no bound)
    assert "SAR fidelity at 0.5 / 1 / 2 bpp" in md and "jpeg2000-full" in md
