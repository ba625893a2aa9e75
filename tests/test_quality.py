"""Continuous quality: the latent quantisation step Δ = step / 64 (entropy.py, latent codecs,
container version 3, api.quality_point, the search, the CLI)."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import sarcodec
from sarcodec.api import quality_point
from sarcodec.container import FORMAT_VERSION, ContainerReader
from sarcodec.entropy import STEP_MAX, STEP_MIN, STEP_ONE, ACT_BITS, log_step_fixed, step_from_delta
from sarcodec.errors import CorruptedFileError, InputError, ModelError, UnsupportedVersionError
from sarcodec.fuzz import rewrite_footer

CLI = [sys.executable, "-m", "sarcodec"]


@pytest.fixture(scope="module")
def family():
    return sarcodec.api.family_members("default")


@pytest.fixture(scope="module")
def img():
    return sarcodec.data.synthetic_sar((160, 144), seed=3)


def test_log_step_table_is_far_from_rounding_boundaries():
    """The table's integers cannot differ between libms: every ln(step/64)·2^10 is > 1e-4 from x.5."""
    for s in range(STEP_MIN, STEP_MAX + 1):
        v = math.log(s / STEP_ONE) * 2**ACT_BITS
        assert abs(v - math.floor(v) - 0.5) > 1e-4
        assert log_step_fixed(s) == round(v)
    assert log_step_fixed(STEP_ONE) == 0


def test_step_codes_latents_exactly(family):
    """ŷ = μ + q·Δ from the stream equals the encoder's own rounding, and is finer for smaller Δ."""
    m = family[0]
    x = torch.from_numpy(sarcodec.data.synthetic_sar((64, 64), seed=1))[None, None]
    x = (torch.log10(x) + 3).clamp(0, 4) / 4
    with torch.no_grad():
        y = m.g_a(m._pad(x) - 0.5)
    errs = []
    for st in (32, 64, 181):
        coder = m.coder(st)
        y_np, z_int = m.latent_codec.prepare(y)
        y_hat, used = coder.decode(coder.encode(y_np, z_int), tuple(y.shape))
        mu, _ = coder._params(z_int)
        d = st / STEP_ONE
        want = (mu + d * torch.round((torch.from_numpy(y_np).double() - mu) / d)).float().numpy()
        assert np.array_equal(y_hat, want)
        errs.append(float(np.abs(y_hat - y_np).max()))
    assert errs[0] <= 0.25 + 1e-6 and errs[1] <= 0.5 + 1e-6 and errs[2] <= 181 / 128 + 1e-6


def test_quality_point_mapping(family):
    for k in range(1, 5):
        assert quality_point(family, k) == (family[k - 1], STEP_ONE)
    assert quality_point(family, 2.5) == (family[2], step_from_delta(2 ** 0.5))
    assert quality_point(family, 2.49) == (family[1], step_from_delta(2 ** -0.49))
    assert quality_point(family, 0) == (family[0], STEP_MAX)  # Δ 8
    assert quality_point(family, 0.5) == (family[0], step_from_delta(2 ** 1.5))  # Δ 2.83
    assert quality_point(family, 5) == (family[3], 32)
    for bad in (-0.1, 5.01, float("nan"), True, "3"):
        with pytest.raises(InputError, match="quality"):
            quality_point(family, bad)
    assert quality_point(family[:1], 2) == (family[0], 32)  # one model: quality 0..2


def test_quality_is_continuous_and_monotone(family, img):
    """Bigger quality, bigger file, better PSNR; integers are the trained rate points."""
    from sarcodec.evaluation.metrics import BenchmarkDomain, psnr

    dom = BenchmarkDomain(img)
    ref = dom(img)
    sizes, psnrs = [], []
    for q in (0, 0.5, 1, 1.5, 2, 2.75, 3.5, 4, 5):
        d = sarcodec.encode(img, family, quality=q, precision="fp32")
        sizes.append(len(d))
        psnrs.append(psnr(ref, dom(sarcodec.decode(d))))
    assert sizes == sorted(sizes) and psnrs == sorted(psnrs), (sizes, psnrs)
    assert sizes[0] < sizes[2] / 1.8  # quality 0: well below the first rate point
    assert sarcodec.encode(img, family, quality=3, precision="fp32") == \
        sarcodec.encode(img, "default-q3", precision="fp32")


def forged(data: bytes, header) -> bytes:
    """``data`` with ``header`` as its footer, written without the writer's checks (a forger's)."""
    return rewrite_footer(data, header.to_json())


def test_step_files_are_checked(family, img):
    d2 = sarcodec.encode(img, family, quality=2)
    d25 = sarcodec.encode(img, family, quality=2.5)
    h2, h25 = ContainerReader(d2).header, ContainerReader(d25).header
    assert h2.version == h25.version == FORMAT_VERSION and "latent_step" not in h2.metadata
    assert h25.metadata["latent_step"] == step_from_delta(2 ** 0.5)
    # a reader refuses a newer version (it would decode it wrongly)
    new = bytearray(d25)
    new[8:10] = (FORMAT_VERSION + 1).to_bytes(2, "little")
    with pytest.raises(UnsupportedVersionError):
        ContainerReader(bytes(new))
    for bad in (0, 999, "64", True):
        h25.metadata["latent_step"] = bad
        with pytest.raises(CorruptedFileError, match="latent_step"):
            ContainerReader(forged(d25, h25))
    h2.metadata["latent_step"] = 80.0  # a step is an integer numerator
    with pytest.raises(CorruptedFileError, match="latent_step"):
        ContainerReader(forged(d2, h2))


def test_step_needs_a_hyperprior_and_valid_knobs(img, family):
    from conftest import small_model

    m = small_model("baseline")  # factorized latent codec: no step but 1
    m.update()
    with pytest.raises(ModelError, match="step"):
        sarcodec.encode(img, m, step=0.7)
    sarcodec.encode(img, m, step=1.0)
    with pytest.raises(InputError, match="step"):
        sarcodec.encode(img, family, step=0.7)  # a family: use quality
    with pytest.raises(InputError):
        sarcodec.encode(img, family, quality=2, psnr=30)
    with pytest.raises(InputError):
        sarcodec.encode(img, family, quality=2, step=1.0)
    with pytest.raises(InputError, match="positive"):
        sarcodec.encode(img, family[0], step=-1.0)


def _psnr(img, data):
    ref = sarcodec.Radiometry.fit(img)
    got = np.clip(sarcodec.decode(data, normalized=True), 0, 1)
    return 10 * np.log10(1 / np.mean((got - ref.forward(img)[0]) ** 2))


def test_search_beats_its_candidates(family, img):
    """A bpp budget between two rate points: the search's file fits, records what it used and
    the PSNR it reached, and is at least as good as the continuous quality alone or an MSE layer
    on quality 2 (the base below the crossing, always tried) at the ladder step the budget allows."""
    from sarcodec.api import ERROR_LADDER

    lo = len(sarcodec.encode(img, family, quality=2))
    hi = len(sarcodec.encode(img, family, quality=3))
    budget = 8 * (lo + hi) / 2 / img.size
    d = sarcodec.encode(img, family, bpp=budget)
    tg = ContainerReader(d).header.metadata["target"]
    assert tg["met"] and 8 * len(d) / img.size <= budget and len(d) > lo, tg
    assert 0 <= tg["quality"] < 3 and tg["psnr_reached"] == pytest.approx(_psnr(img, d), abs=0.05)
    rivals = [sarcodec.encode(img, family, quality=2)]
    for qb in (2.0,):
        fits = [x for x in (sarcodec.encode(img, family, quality=qb, max_error=e, bound=False) for e in ERROR_LADDER)
                if 8 * len(x) / img.size <= budget]
        rivals += fits[-1:]
    assert tg["psnr_reached"] >= max(_psnr(img, x) for x in rivals) - 1e-6


def test_search_psnr_target_takes_the_smallest(family, img):
    """A PSNR target: the file meets it and is no larger than quality alone at the first
    quarter-step quality that meets it."""
    target = _psnr(img, sarcodec.encode(img, family, quality=2.5))
    d = sarcodec.encode(img, family, psnr=target)
    tg = ContainerReader(d).header.metadata["target"]
    assert tg["met"] and _psnr(img, d) >= target - 0.05
    assert len(d) <= len(sarcodec.encode(img, family, quality=2.5))


def test_refine_with_a_step(family, img):
    d = sarcodec.encode(img[:64, :64], family, quality=1.5, refine=3)
    assert ContainerReader(d).header.metadata["latent_step"] == step_from_delta(2 ** 0.5)  # q2 at Δ √2
    assert sarcodec.decode(d).shape == (64, 64)


def test_cli_continuous_quality(tmp_path, img):
    import rasterio

    src = tmp_path / "a.tif"
    with rasterio.open(src, "w", driver="GTiff", width=img.shape[1], height=img.shape[0], count=1,
                      dtype="float32") as ds:
        ds.write(img.astype("float32"), 1)
    r = subprocess.run(CLI + ["compress", str(src), "-o", str(tmp_path / "a.sarc"), "-q", "2.5"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    info = subprocess.run(CLI + ["info", str(tmp_path / "a.sarc")], capture_output=True, text=True)
    assert "format 1.0" in info.stdout and "quantisation step 91/64" in info.stdout.replace("\n", " "), info.stdout
    r = subprocess.run(CLI + ["decompress", str(tmp_path / "a.sarc"), "-o", str(tmp_path / "b.tif")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(CLI + ["compress", str(src), "-o", str(tmp_path / "c.sarc"), "-q", "9"],
                       capture_output=True, text=True)
    assert r.returncode == 3 and "quality" in r.stderr and not (tmp_path / "c.sarc").exists()


def test_window_and_multitile_decode_with_a_step(family):
    """Tiles, windows and worker processes all decode a stepped file like a whole decode."""
    img = sarcodec.data.synthetic_sar((200, 150), seed=5)
    d = sarcodec.encode(img, family, quality=3.3, tile_size=64)
    full = sarcodec.decode(d)
    win = sarcodec.decode(d, window=(40, 70, 90, 60))
    assert np.array_equal(win, full[70:130, 40:130])
    assert np.array_equal(sarcodec.decode(d, workers=1), full)


def test_search_trials_share_latents_and_bases(family, img, monkeypatch):
    """A search's trials reuse the analysis latents (once per model), the base tile streams and
    the base reconstructions through its memo; the file is byte-identical to a search without."""
    calls = []
    hooks = [m.g_a.register_forward_hook(lambda mod, i, o, m=m: calls.append(m.name)) for m in family]
    syn = []
    hooks += [m.g_s.register_forward_hook(lambda mod, i, o: syn.append(1)) for m in family]
    runs = []
    orig = sarcodec.api._encode_one
    monkeypatch.setattr(sarcodec.api, "_encode_one", lambda *a, **k: runs.append(k.get("max_error")) or orig(*a, **k))
    try:
        with_memo = sarcodec.encode(img, family, bpp=1.2)
        assert len(calls) == len(set(calls)) and len(runs) > len(set(calls))  # g_a once per model
        assert len(syn) < len(runs)  # layer trials on one base synthesise it once
        monkeypatch.setattr(sarcodec.api, "search_memo", lambda pixels: None)
        calls.clear()
        assert sarcodec.encode(img, family, bpp=1.2) == with_memo
        assert len(calls) > len(set(calls))
    finally:
        for h in hooks:
            h.remove()
    assert sarcodec.api.search_memo(2**27) is None  # too large to keep: trials recompute


def test_sample_blocks_spread_over_the_raster():
    """A large raster is searched on blocks from every cell of a grid shaped like it, each inside
    the raster and apart from the others, an even number of them in a mosaic of two rows (two
    tiles or more, coded on two cores); a small raster (or a thin strip) is searched whole."""
    from sarcodec.api import SAMPLE_BLOCK, SAMPLE_BLOCKS, SAMPLE_FROM, read_sample, sample_blocks

    b = SAMPLE_BLOCK
    assert sample_blocks(1024, 1024) is None and sample_blocks(100, 10**6) is None
    for rows, cols in ((2048, 2048), (17000, 25000), (2000, 12000), (300, 40000), (6000, 2000)):
        assert rows * cols >= SAMPLE_FROM
        corners = sample_blocks(rows, cols)
        assert 2 <= len(corners) <= SAMPLE_BLOCKS + 3 and len(set(corners)) == len(corners)
        assert len(corners) % 2 == 0, (rows, cols)
        assert all(0 <= r <= rows - b and 0 <= c <= cols - b for r, c in corners), (rows, cols)
        rs, cs = sorted({r for r, _ in corners}), sorted({c for _, c in corners})
        assert all(y - x >= b for x, y in zip(rs, rs[1:])) and all(y - x >= b for x, y in zip(cs, cs[1:]))
        assert len(rs) * len(cs) == len(corners)  # a full grid
    x = np.arange(2 * 2048 * 2048, dtype=np.float32).reshape(2, 2048, 2048)
    m = read_sample(lambda k, r0, r1, c0, c1: x[k, r0:r1, c0:c1], 2, 2048, 2048)
    assert m.shape == (2, 2 * b, SAMPLE_BLOCKS // 2 * b)
    r, c = sample_blocks(2048, 2048)[5]
    g = m.shape[2] // b
    np.testing.assert_array_equal(m[1, (5 // g) * b:(5 // g + 1) * b, (5 % g) * b:(5 % g + 1) * b], x[1, r:r + b, c:c + b])


@pytest.fixture
def small_sample(monkeypatch):
    """Sampling thresholds scaled down so that a 256^2 raster is searched on a sample (4 blocks of 64^2)."""
    monkeypatch.setattr(sarcodec.api, "SAMPLE_BLOCK", 64)
    monkeypatch.setattr(sarcodec.api, "SAMPLE_BLOCKS", 4)
    monkeypatch.setattr(sarcodec.api, "SAMPLE_FROM", 3 * 4 * 64 * 64)


@pytest.mark.parametrize("target", [{"bpp": 1.0}, {"psnr": 33.0}])
def test_sampled_search_meets_the_target_on_the_whole(family, small_sample, monkeypatch, target):
    """The search runs on the sample; the whole raster is encoded at most three times and its file
    meets the target within 3% of the budget (0.06 dB of the PSNR), as recorded. A target won by
    a layer is carried to the whole through its base: the whole's base is coded first (the
    layer's bits and error estimated against it), then the layer at most three times."""
    img = sarcodec.data.synthetic_sar((256, 256), seed=8)
    shapes, knobs = [], []
    orig = sarcodec.api._encode_one

    def spy(a, *p, **k):
        shapes.append(a.shape)
        if a.shape == img.shape:
            knobs.append(k.get("max_error"))
        return orig(a, *p, **k)

    monkeypatch.setattr(sarcodec.api, "_encode_one", spy)
    d = sarcodec.encode(img, family, tile_size=64, **target)
    whole = shapes.count(img.shape)
    carried = "max_error" in ContainerReader(d).header.metadata["target"]
    assert 1 <= whole <= 3 + carried and shapes.count((128, 128)) == len(shapes) - whole > whole, shapes
    if carried:
        assert knobs[0] is None and all(e is not None for e in knobs[1:]) and 2 <= whole, knobs
    tg = ContainerReader(d).header.metadata["target"]
    assert tg["met"], tg
    if "bpp" in target:
        assert 0.97 <= 8 * len(d) / img.size <= 1.0
    else:
        assert 33.0 <= _psnr(img, d) <= 33.06 + 0.05 and tg["psnr_reached"] == pytest.approx(_psnr(img, d), abs=0.05)
    assert sarcodec.decode(d).shape == img.shape


def test_sampled_search_of_a_file_uses_the_files_clip_bounds(family, small_sample, tmp_path):
    """compress_file samples a large raster too: the file meets the budget, its radiometry is the
    whole raster's, and the progress bar still sums to the raster's pixels."""
    import rasterio

    img = sarcodec.data.synthetic_sar((256, 256), seed=9).astype(np.float32)
    with rasterio.open(tmp_path / "s.tif", "w", driver="GTiff", width=256, height=256, count=1, dtype="float32") as ds:
        ds.write(img, 1)
    calls = []
    r = sarcodec.compress_file(tmp_path / "s.tif", tmp_path / "s.sarc", "default", bpp=1.0, tile_size=64,
                               progress=calls.append)
    assert 0.97 <= r["bpp"] <= 1.0 and sum(calls) == img.size
    ref = sarcodec.encode(img, family, quality=2, tile_size=64)
    h, h_ref = ContainerReader(tmp_path / "s.sarc").header, ContainerReader(ref).header
    assert h.metadata["target"]["met"] and h.bands[0]["radiometry"] == h_ref.bands[0]["radiometry"]


def _fake_outcome(family, m, st, e):
    """A synthetic R-D model: quality q costs 400 * 2^(0.8 q) bytes for 20 + 3 q dB; an MSE layer
    of max_error e adds 6 ln(4 / e) dB for 500 ln(4 / e)^1.5 bytes."""
    q = [b.name for b in family].index(m.name) + 1 - math.log2(st / 64)
    size, p = 400 * 2 ** (0.8 * q), 20 + 3 * q
    if e is not None and e < 4:
        size, p = size + 500 * math.log(4 / e) ** 1.5, p + 6 * math.log(4 / e)
    return size, p


def _fake_search(family, monkeypatch, budget, jump=None):
    """search_target on :func:`_fake_outcome` (no encoding), at a bpp budget over 10^4 pixels.
    ``jump=(model name, step, e0)``: on that base a layer finer than e0 is 6% larger and 0.3 dB
    better (a tile's layer changing form). Returns (trials (name, step, e, bytes), knob, bpp)."""
    knobs, trials = [], []
    monkeypatch.setattr(sarcodec.api, "_record_target", lambda data, target, p, met, knob=None: knobs.append(knob) or data)

    def encode_fn(m, st, e, stats):
        size, p = _fake_outcome(family, m, st, e)
        if jump is not None and e is not None and (m.name, st) == jump[:2] and e < jump[2]:
            size, p = size * 1.06, p + 0.3
        stats["sse"], stats["count"] = [10000 * 10 ** (-p / 10)], [10000]
        trials.append((m.name, st, e, int(size)))
        return b"x" * int(size)

    data = sarcodec.api.search_target(encode_fn, list(family), psnr=None, bpp=budget, pixels=10000)
    return trials, knobs[-1], 8 * len(data) / 10000


def test_search_does_not_bisect_a_jump(family, monkeypatch):
    """Where the budget falls inside a jump of the winning line (just above the jump the file is 3%
    under the budget, just below it 3% over), the search stops narrowing the jump after a few
    trials (it used to bisect it to the end of its refining budget), and the file fits."""
    _, knob, _ = _fake_search(family, monkeypatch, 1.5)
    m, st = quality_point(family, knob["quality"])
    lo, hi = math.log(knob["max_error"]), math.log(4.0)  # the coarser e for 3% less
    goal = 0.97 * _fake_outcome(family, m, st, knob["max_error"])[0]
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _fake_outcome(family, m, st, math.exp(mid))[0] > goal else (lo, mid)
    e_j = math.exp(lo)
    trials, knob, got = _fake_search(family, monkeypatch, 1.5, jump=(m.name, st, e_j))
    near = [t for t in trials if (t[0], t[1]) == (m.name, st) and t[2] and abs(math.log(t[2] / e_j)) < 0.03]
    assert got <= 1.5 and len(near) <= 4, trials  # bisected to the end: 6 or more


def test_an_estimate_pass_codes_the_base_alone(family):
    """An encode asked for layer estimates without a dense layer (what a carried target codes
    first) writes no pixel layer, measures the base's own error, and estimates more bits and
    less error for a finer layer."""
    img = sarcodec.data.synthetic_sar((128, 128), seed=3)
    st = {"estimate_at": [2.0, 0.5]}
    d = sarcodec.api._encode_one(img, family[0], stats=st, tile_size=64)
    tiles = ContainerReader(d).header.tiles
    assert len(tiles) == 4 and all(e.layer_length == 0 for e in tiles)
    ref: dict = {}  # a layer too coarse to code anything: the base's error
    sarcodec.api._encode_one(img, family[0], max_error=20.0, bound=False, stats=ref, tile_size=64)
    assert st["sse"] == pytest.approx(ref["sse"]) and st["count"] == ref["count"]
    assert st["estimate_bits"][0] < st["estimate_bits"][1] and st["estimate_sse"][0] > st["estimate_sse"][1]


def test_quality_line_tries_both_sides_of_a_rate_point_switch(family, monkeypatch):
    """Where the quality line jumps (each rate point here 20% larger than the one below at the
    same quality) and the budget falls inside the jump at quality 2.5, the search tries the two
    sides of the switch directly and stops there, instead of bisecting towards it."""
    smooth = _fake_outcome

    def outcome(fam, m, st, e):
        size, p = smooth(fam, m, st, e)
        return size * 1.2 ** [b.name for b in fam].index(m.name), p
    below = quality_point(family, 2.5 - sarcodec.api.SWITCH_SIDE)
    above = quality_point(family, 2.5)
    assert below[0].name != above[0].name
    lo, hi = outcome(family, *below, None)[0], outcome(family, *above, None)[0]
    budget = 8 * math.sqrt(lo * hi) / 10000
    monkeypatch.setattr(sys.modules[__name__], "_fake_outcome", outcome)
    trials, _, got = _fake_search(family, monkeypatch, budget)
    qline = [(t[0], t[1]) for t in trials if t[2] is None]
    assert got <= budget
    assert (below[0].name, below[1]) in qline and (above[0].name, above[1]) in qline, qline
    assert len(qline) <= 4, qline  # bisecting towards the switch: 5
