"""Encoder precision: a bf16 analysis transform changes the chosen integers a little, never the decoder."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import sarcodec
from sarcodec.cli import main
from sarcodec.data import synthetic_sar
from sarcodec.evaluation.metrics import psnr
from sarcodec.radiometry import Radiometry
from sarcodec.scene import cpu_has_bf16, encoder_precision


@pytest.fixture(scope="module")
def model(trained_tiny):
    return sarcodec.load_model(trained_tiny)


def test_bf16_analysis_costs_almost_nothing(model):
    img = synthetic_sar((256, 320), seed=9)
    a = sarcodec.encode(img, model, tile_size=128, precision="fp32")
    b = sarcodec.encode(img, model, tile_size=128, precision="bf16")
    default = encoder_precision(None, torch.device("cpu"))
    assert sarcodec.encode(img, model, tile_size=128) == (a if default == "fp32" else b)
    assert abs(len(a) - len(b)) <= 0.02 * len(a)
    ra, rb = sarcodec.decode(a, model, normalized=True), sarcodec.decode(b, model, normalized=True)
    x = Radiometry.fit(img, "intensity").forward(img)[0]  # the same reference for both
    assert abs(psnr(x, ra) - psnr(x, rb)) < 0.1
    np.testing.assert_array_equal(sarcodec.decode(b, model, normalized=True), rb)  # decoding stays exact


def test_precision_choice_and_refusals(model, tmp_path, trained_tiny):
    assert encoder_precision(None, torch.device("cpu")) == ("bf16" if cpu_has_bf16() else "fp32")
    assert encoder_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(sarcodec.InputError, match="precision"):
        sarcodec.encode(synthetic_sar((64, 64), seed=1), model, precision="fp16")
    with pytest.raises(SystemExit) as e:
        main(["compress", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "o.sarc"), "-m", str(trained_tiny),
              "--precision", "int8"])
    assert e.value.code == 3 and not (tmp_path / "o.sarc").exists()


def test_the_container_records_the_precision(model, tmp_path, trained_tiny, capsys):
    import rasterio

    from sarcodec.container import ContainerReader

    data = sarcodec.encode(synthetic_sar((64, 64), seed=1), model, precision="bf16")
    assert ContainerReader(data).header.metadata["analysis_precision"] == "bf16"
    with rasterio.open(tmp_path / "s.tif", "w", driver="GTiff", width=64, height=64, count=1, dtype="float32") as ds:
        ds.write(synthetic_sar((64, 64), seed=2)[None].astype("float32"))
    main(["compress", str(tmp_path / "s.tif"), "-o", str(tmp_path / "s.sarc"), "-m", str(trained_tiny),
          "--precision", "fp32", "--device", "cpu"])
    capsys.readouterr()
    main(["info", str(tmp_path / "s.sarc")])
    assert "analysis in fp32" in capsys.readouterr().out
