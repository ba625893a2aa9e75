"""What every patch sampler shares: a resumable RNG and the flip / rot90 augmentation."""
from __future__ import annotations

import numpy as np


class RandomSampler:
    """Base of the patch samplers: ``batch(n)`` -> (n, 1, P, P) float32; ``state``/``set_state``
    capture the RNG so that training resumes exactly."""

    def __init__(self, seed: int = 0, augment: bool = True):
        self.rng = np.random.default_rng(seed)
        self.augment = augment

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, st: dict) -> None:
        self.rng.bit_generator.state = st

    def _augment(self, crop: np.ndarray) -> np.ndarray:
        """Random rot90 and horizontal flip (SAR has no preferred orientation in a patch)."""
        if not self.augment:
            return crop
        crop = np.rot90(crop, int(self.rng.integers(0, 4)))
        return crop[:, ::-1] if self.rng.random() < 0.5 else crop

    def batch(self, n: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError
