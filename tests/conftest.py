from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sarcodec.data import synthetic_sar

REPO = Path(__file__).resolve().parents[1]
SHARED_SAR = REPO.parent / "shared" / "sar"

# Small configurations: every architecture at test speed (the defaults are checked for size only).
SMALL = {
    "baseline": dict(latent_channels=16, base_channels=8),
    "resnet-lite": dict(latent_channels=16, base_channels=8, hyper_channels=16),
    "residual": dict(latent_channels=16, base_channels=8, hyper_channels=16),
    "attention": dict(latent_channels=16, base_channels=8, hyper_channels=16),
    "hyperprior": dict(latent_channels=24, base_channels=16, hyper_channels=16),
}


@pytest.fixture(scope="session")
def sar_300x437() -> np.ndarray:
    return synthetic_sar((300, 437), seed=7)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def small_model(arch: str, name: str = "test-model", **kw):
    from sarcodec import create_model

    m = create_model(arch, **{**SMALL[arch], **kw})
    m.name = name
    m.eval()
    return m


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
    """A residual model trained a few steps on synthetic SAR, saved as a checkpoint."""
    from sarcodec import save_checkpoint
    from sarcodec.models import bits_from_likelihoods

    # a session fixture is set up before the function-scoped _seed: seed here, or the weights
    # would depend on which tests ran first
    torch.manual_seed(0)
    m = small_model("residual")
    m.train()
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    x = torch.from_numpy(np.stack([synthetic_sar((64, 64), seed=s) for s in range(4)]))[:, None]
    x = torch.log10(x).clamp(-3, 1.5)
    x = (x - x.min()) / (x.max() - x.min())
    for _ in range(5):
        out = m(x)
        loss = 1000 * ((out["x_hat"] - x) ** 2).mean() + bits_from_likelihoods(out["likelihoods"]) / x.numel() + m.aux_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(m, path, name="tiny")
    return path
