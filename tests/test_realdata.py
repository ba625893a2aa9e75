"""Tests on the real Sentinel-1 data in ../shared/sar; skipped cleanly when it is absent."""
import numpy as np
import pytest

import sarcodec
from sarcodec.data.scenes import PatchSampler, read_intensity, scan_scenes, split_by_location, tile_eval_patches

from conftest import SHARED_SAR, small_model

pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not (SHARED_SAR / "index.json").is_file(), reason="../shared/sar not present")]


def test_scene_index_and_location_splits_are_disjoint():
    scenes = scan_scenes(SHARED_SAR)
    assert {s.split for s in scenes} == {"train", "ships", "test"}
    train, val = split_by_location(scenes, ("mexico-b",))
    test_locs = {s.location for s in scenes if s.split == "test"}
    assert val and {s.location for s in val} == {"mexico-b"}
    assert not {s.location for s in train} & {s.location for s in val}
    assert not ({s.location for s in train} | {s.location for s in val}) & test_locs
    assert all(s.split != "test" for s in train + val)


def test_patches_from_real_scenes():
    scenes = [s for s in scan_scenes(SHARED_SAR, folders=("train",))][:4]
    ims = []
    for s in scenes:
        v, _ = sarcodec.Radiometry.fit(read_intensity(s.path)).forward(read_intensity(s.path))
        ims.append(v)
    sampler = PatchSampler(ims, 64, seed=1)
    a = sampler.batch(5)
    assert a.shape == (5, 1, 64, 64) and 0 <= a.min() and a.max() <= 1
    assert tile_eval_patches(ims, 64).shape[1:] == (1, 64, 64)


def test_real_test_image_round_trip():
    path = SHARED_SAR / "test" / "s1_lake_vv.tif"
    img = read_intensity(path)
    m = small_model("baseline")
    data = sarcodec.encode(img, m)
    out = sarcodec.decode(data, m)
    assert out.shape == img.shape and np.isfinite(out).all() and (out > 0).all()


def test_validation_images_are_the_held_out_location():
    from sarcodec.training import validation_images

    ims = validation_images({"source": "shared", "root": str(SHARED_SAR), "val_locations": ["mexico-b"]})
    assert ims and all("mexico-b" in name for name, _ in ims)
    assert all(im.ndim == 2 and im.dtype == np.float32 for _, im in ims)
