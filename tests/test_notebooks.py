"""The notebooks run top to bottom (tiny settings: SARCODEC_NOTEBOOK_SMOKE=1, synthetic SAR)."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {"train_residual.ipynb", "train_attention.ipynb", "compare_architectures.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("SARCODEC_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("SARCODEC_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "Error" not in text
    if path.stem.startswith("train_"):
        assert "enl_ratio" in text and "dpsnr" in text  # the SAR metrics table printed
        assert (tmp_path / "runs" / f"notebook-{path.stem[6:]}" / "best.pt").is_file()
    else:
        assert "Δpsnr" in text and "0 (ref)" in text  # the comparison table, with signed deltas
