"""Scene index over GeoTIFFs, scene-level splits, and random patch sampling.

Splits are by *location* (never by patch): a location's scenes (all polarisations) land in exactly
one split. Each scene is normalised with its own radiometry (dB, 0.1/99.9 percentile clip, [0, 1]),
the same mapping the codec applies at encode time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..radiometry import Radiometry
from .sampling import RandomSampler


@dataclass
class Scene:
    path: Path
    location: str
    pol: str
    split: str
    kind: str = "intensity"
    family: str = "grd-crop"  # product family, for balanced sampling (see :func:`product_family`)


# index.json's free-text ``product`` -> a short family name; scenes without one are the original
# GRD-type crops (train/, test/) or the OpenSARShip chips (ships/)
_FAMILIES = (("opera", "opera-rtc"), ("sen1floods11", "grd-sigma0"), ("bigearthnet", "grd-sigma0"),
             ("gamma", "grd-sigma0"), ("single-look", "slc-single-look"), ("sar2sar", "slc-single-look"))


def product_family(product: str | None, folder: str) -> str:
    """A short product-family name from index.json's ``product`` text (or the folder)."""
    if product:
        low = product.lower()
        for key, fam in _FAMILIES:
            if key in low:
                return fam
        return "other"
    return "ships" if folder == "ships" else "grd-crop"


def default_data_dir() -> Path | None:
    """``../shared/sar`` relative to the repository (or $SARCODEC_DATA)."""
    import os

    env = os.environ.get("SARCODEC_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "sar"
        if (cand / "index.json").is_file():
            return cand
    return None


def scan_scenes(root: str | Path, folders: tuple[str, ...] = ("train", "ships", "test")) -> list[Scene]:
    """Index the GeoTIFFs of a data root. Uses ``index.json`` when present (location, split, pol);
    files not in it (e.g. ``ships/``) take their location from the file name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: data directory not found")
    idx = {}
    if (root / "index.json").is_file():
        for e in json.loads((root / "index.json").read_text()):
            idx[e["file"]] = e
    scenes = []
    for folder in folders:
        for p in sorted((root / folder).glob("*.tif")):
            rel = f"{folder}/{p.name}"
            e = idx.get(rel)
            if e:
                scenes.append(Scene(p, e["location"], e["pol"], e["split"],
                                    family=product_family(e.get("product"), folder)))
            else:
                stem = p.stem
                pol = stem.rsplit("_", 1)[-1] if "_" in stem else "unknown"
                loc = stem.rsplit("_", 1)[0]  # a ship chip: both pols of one chip are one location
                scenes.append(Scene(p, loc, pol, folder, family=product_family(None, folder)))
    return scenes


def split_by_location(scenes: list[Scene], val_locations: tuple[str, ...]) -> tuple[list[Scene], list[Scene]]:
    """(train, validation) by location; test scenes are never returned."""
    pool = [s for s in scenes if s.split in ("train", "ships")]
    val = [s for s in pool if s.location in val_locations]
    train = [s for s in pool if s.location not in val_locations]
    assert not {s.location for s in val} & {s.location for s in train}
    return train, val


def read_intensity(path: str | Path) -> np.ndarray:
    import rasterio

    try:
        with rasterio.open(path) as ds:
            return ds.read(1).astype(np.float32)
    except rasterio.errors.RasterioIOError as e:
        raise InputError(f"{path}: cannot read raster ({e})") from e


def load_normalized(scenes: list[Scene]) -> list[np.ndarray]:
    out = []
    for s in scenes:
        x = read_intensity(s.path)
        v, _ = Radiometry.fit(x, s.kind).forward(x)
        out.append(v)
    return out


PREPARED_INDEX = "prepared.json"


def prepare_dataset(root: str | Path, out: str | Path, folders: tuple[str, ...] = ("train", "ships")) -> int:
    """Normalise every training scene once (each with its own radiometry) and store it as float16
    ``.npy`` plus ``prepared.json``: a compact copy (half the bytes of float32 GeoTIFFs) that trains
    without GDAL, e.g. on a lent GPU machine. ``test/`` is never included. float16 keeps ~11 bits of
    the [0, 1] values (error < 2.5e-4, far below any codec's). Returns the number of scenes."""
    out = Path(out)
    if "test" in folders:
        raise InputError("prepare_dataset never copies test/: report on it, never train on it")
    entries = []
    for s in scan_scenes(root, folders):
        v = load_normalized([s])[0].astype(np.float16)
        rel = f"{s.split}/{s.path.stem}.npy"
        (out / s.split).mkdir(parents=True, exist_ok=True)
        np.save(out / rel, v)
        entries.append({"file": rel, "location": s.location, "pol": s.pol, "split": s.split, "family": s.family})
    (out / PREPARED_INDEX).write_text(json.dumps(entries, indent=1))
    return len(entries)


def load_scenes(root: str | Path, folders: tuple[str, ...] = ("train", "ships")) -> list[tuple[Scene, np.ndarray]]:
    """(scene, normalised image) for a data root of GeoTIFFs or a prepared copy (``prepared.json``)."""
    root = Path(root)
    if (root / PREPARED_INDEX).is_file():
        out = []
        for e in json.loads((root / PREPARED_INDEX).read_text()):
            if e["split"] in folders:
                out.append((Scene(root / e["file"], e["location"], e["pol"], e["split"],
                                  family=e.get("family") or product_family(None, e["split"])),
                            np.load(root / e["file"]).astype(np.float32)))
        return out
    scenes = scan_scenes(root, folders)
    return list(zip(scenes, load_normalized(scenes)))


class PatchSampler(RandomSampler):
    """Random P x P crops (area-weighted over images large enough), with flips and rot90."""

    def __init__(self, images: list[np.ndarray], patch: int, seed: int = 0, augment: bool = True):
        super().__init__(seed, augment)
        self.images = [im for im in images if min(im.shape) >= patch]
        if not self.images:
            raise InputError(f"no training image is at least {patch} px on each side")
        area = np.array([im.size for im in self.images], np.float64)
        self.p = area / area.sum()
        self.patch = patch

    def batch(self, n: int) -> np.ndarray:
        out = np.empty((n, 1, self.patch, self.patch), np.float32)
        for i in range(n):
            im = self.images[self.rng.choice(len(self.images), p=self.p)]
            r = self.rng.integers(0, im.shape[0] - self.patch + 1)
            c = self.rng.integers(0, im.shape[1] - self.patch + 1)
            out[i, 0] = self._augment(im[r:r + self.patch, c:c + self.patch])
        return out


class FamilySampler(RandomSampler):
    """Random crops balanced across product families, in several patch sizes, so that small chips
    (100 px OPERA crops, ship chips, BigEarthNet patches) are used as well as large scenes.

    Each batch has one patch size, drawn in proportion to ``size_weights``; its family is drawn
    with equal probability among the families that have an image of that size (then images
    area-weighted within the family). A batch of size ``s`` holds ``n * (sizes[0] / s)^2`` patches,
    so every batch has about the same number of pixels. Images smaller than the smallest size are
    skipped."""

    def __init__(self, images: list[np.ndarray], families: list[str], sizes: tuple[int, ...] = (128, 64),
                 size_weights: tuple[float, ...] | None = None, seed: int = 0, augment: bool = True,
                 family_weights: dict[str, float] | None = None):
        super().__init__(seed, augment)
        if len(images) != len(families):
            raise InputError("FamilySampler: one family name per image")
        self.sizes = tuple(int(s) for s in sizes)
        w = np.asarray(size_weights or [1.0] * len(self.sizes), np.float64)
        self.size_p = w / w.sum()
        self.pools = []  # per size: (family names, per-family (images, area probabilities))
        for s in self.sizes:
            fams: dict[str, list[np.ndarray]] = {}
            for im, f in zip(images, families):
                if min(im.shape) >= s:
                    fams.setdefault(f, []).append(im)
            names = sorted(fams)
            fw = np.array([(family_weights or {}).get(f, 1.0) for f in names], np.float64)
            self.pools.append((names, fw / max(fw.sum(), 1e-12),
                               [(fams[f], np.array([i.size for i in fams[f]], np.float64) / sum(i.size for i in fams[f]))
                                for f in names]))
        if not self.pools or not self.pools[-1][0]:
            raise InputError(f"no training image is at least {min(self.sizes)} px on each side")
        self.images = [im for im in images if min(im.shape) >= min(self.sizes)]
        self.families = sorted({f for im, f in zip(images, families) if min(im.shape) >= min(self.sizes)})

    def batch(self, n: int) -> np.ndarray:
        k = int(self.rng.choice(len(self.sizes), p=self.size_p))
        while not self.pools[k][0]:  # no image this large: fall back to the next smaller size
            k += 1
        s = self.sizes[k]
        names, fp, per = self.pools[k]
        m = max(1, int(round(n * (self.sizes[0] / s) ** 2)))
        out = np.empty((m, 1, s, s), np.float32)
        for i in range(m):
            ims, p = per[int(self.rng.choice(len(names), p=fp))]
            im = ims[int(self.rng.choice(len(ims), p=p))]
            r = self.rng.integers(0, im.shape[0] - s + 1)
            c = self.rng.integers(0, im.shape[1] - s + 1)
            out[i, 0] = self._augment(im[r:r + s, c:c + s])
        return out


def tile_eval_patches(images: list[np.ndarray], patch: int) -> np.ndarray:
    """Deterministic non-overlapping crops for validation."""
    out = []
    for im in images:
        for r in range(0, im.shape[0] - patch + 1, patch):
            for c in range(0, im.shape[1] - patch + 1, patch):
                out.append(im[r:r + patch, c:c + patch])
    if not out:
        raise InputError(f"no validation image is at least {patch} px on each side")
    return np.stack(out)[:, None]
