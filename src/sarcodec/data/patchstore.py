"""A lazy on-disk patch store: one float16 memmap of (N, P, P) normalised patches + a JSON index.

Built once from scenes (with a quality filter), then read in random batches with constant memory:
only the requested patches are paged in, so it scales to stores far larger than RAM.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import InputError
from .sampling import RandomSampler


def extract_patches(image: np.ndarray, patch: int, overlap: int = 0, invalid: np.ndarray | None = None,
                    max_invalid: float = 0.05, min_std: float = 1e-3) -> Iterable[tuple[int, int, np.ndarray]]:
    """(row, col, patch) over a grid with ``overlap`` px, skipping patches with more than
    ``max_invalid`` invalid pixels or a standard deviation below ``min_std`` (flat fill)."""
    if not 0 <= overlap < patch:
        raise InputError(f"overlap must be in [0, {patch})")
    step = patch - overlap
    for r in range(0, image.shape[0] - patch + 1, step):
        for c in range(0, image.shape[1] - patch + 1, step):
            p = image[r:r + patch, c:c + patch]
            if invalid is not None and invalid[r:r + patch, c:c + patch].mean() > max_invalid:
                continue
            if p.std() < min_std:
                continue
            yield r, c, p


class PatchStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "index.json"
        if not meta_path.is_file():
            raise InputError(f"{self.root}: not a patch store (index.json missing)")
        self.meta = json.loads(meta_path.read_text())
        n, p = self.meta["count"], self.meta["patch"]
        self.data = np.memmap(self.root / "patches.f16", dtype=np.float16, mode="r", shape=(n, p, p))

    def __len__(self) -> int:
        return self.meta["count"]

    @property
    def patch(self) -> int:
        return self.meta["patch"]

    def __getitem__(self, i) -> np.ndarray:
        return np.asarray(self.data[i], dtype=np.float32)

    @classmethod
    def build(cls, root: str | Path, images: Iterable[tuple[str, np.ndarray, np.ndarray | None]], patch: int,
              overlap: int = 0, max_invalid: float = 0.05, min_std: float = 1e-3) -> "PatchStore":
        """``images``: (scene name, normalised [0, 1] image, invalid mask or None). Streams patches
        to disk as they are cut; memory holds one image at a time."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        count, sources = 0, []
        with open(root / "patches.f16", "wb") as fh:
            for name, img, inv in images:
                first = count
                for _, _, p in extract_patches(img, patch, overlap, inv, max_invalid, min_std):
                    fh.write(p.astype(np.float16).tobytes())
                    count += 1
                sources.append({"scene": name, "first": first, "count": count - first})
        meta = {"count": count, "patch": patch, "overlap": overlap, "dtype": "float16", "sources": sources}
        (root / "index.json").write_text(json.dumps(meta, indent=1))
        if count == 0:
            raise InputError(f"no patch of {patch} px passed the quality filter")
        return cls(root)


class StoreSampler(RandomSampler):
    """Random batches from a PatchStore with flips / rot90 (same interface as PatchSampler)."""

    def __init__(self, store: PatchStore, seed: int = 0, augment: bool = True):
        super().__init__(seed, augment)
        self.store = store

    def batch(self, n: int) -> np.ndarray:
        idx = np.sort(self.rng.integers(0, len(self.store), n))  # sorted: sequential-ish disk reads
        patches = self.store[idx]
        return np.stack([self._augment(p) for p in patches])[:, None].astype(np.float32)
