import numpy as np
import pytest
import torch
import torch.nn as nn

from sarcodec.entropy import (
    ACT_BITS,
    EntropyBottleneck,
    FixedPointNet,
    decode_symbols,
    encode_symbols,
    gaussian_tables,
    scale_index_from_fixed,
    scale_table,
)
from sarcodec.errors import CorruptedFileError


def test_symbols_round_trip_with_escapes():
    rng = np.random.default_rng(0)
    tables = gaussian_tables()
    idx = rng.integers(0, len(tables), 5000)
    vals = np.round(rng.normal(0, scale_table()[idx])).astype(np.int64)
    vals[::500] = 10**6  # far outside every table: escape path
    vals[7] = -(10**6)
    data = encode_symbols(vals, idx, tables)
    out, used = decode_symbols(data, idx, tables)
    assert used == len(data) and np.array_equal(out, vals)


def test_truncated_symbol_stream_is_reported():
    tables = gaussian_tables()
    idx = np.zeros(100, np.int64)
    data = encode_symbols(np.zeros(100, np.int64) + 10**5, idx, tables)
    with pytest.raises(CorruptedFileError):
        decode_symbols(data[:-8], idx, tables)


def test_fixed_point_matches_float_and_is_exact_integers():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.ConvTranspose2d(8, 8, 5, 2, 2, 1), nn.ReLU(), nn.ConvTranspose2d(8, 12, 5, 2, 2, 1),
                        nn.ReLU(), nn.Conv2d(12, 6, 3, 1, 1))
    fx = FixedPointNet(seq)
    z = torch.randint(-6, 7, (2, 8, 5, 7)).double()
    out = fx(z)
    assert torch.equal(out, torch.round(out))  # integer-valued
    ref = seq.double()(z)
    assert out.shape == ref.shape
    assert torch.max(torch.abs(out / 2**ACT_BITS - ref)) < 0.02


def test_fixed_point_independent_of_threads():
    torch.manual_seed(1)
    seq = nn.Sequential(nn.ConvTranspose2d(16, 16, 5, 2, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 1, 1))
    fx = FixedPointNet(seq)
    z = torch.randint(-20, 21, (1, 16, 9, 9)).double()
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = fx(z)
        torch.set_num_threads(max(2, n))
        b = fx(z)
    finally:
        torch.set_num_threads(n)
    assert torch.equal(a, b)


def test_scale_index_is_nearest_table_entry():
    table = scale_table()
    ls = torch.tensor(np.log(table) * 2**ACT_BITS).round()
    assert np.array_equal(scale_index_from_fixed(ls), np.arange(len(table)))
    assert scale_index_from_fixed(torch.tensor([-10**9, 10**9]).double()).tolist() == [0, len(table) - 1]


def test_entropy_bottleneck_tables_code_its_own_samples():
    eb = EntropyBottleneck(4)
    eb.update()
    z = np.random.default_rng(1).integers(-3, 4, (1, 4, 6, 6))
    data = eb.compress(z)
    out, used = eb.decompress(data, z.shape)
    assert np.array_equal(out, z) and used == len(data)


def test_fixed_point_deconv_polyphase_equals_zero_stuffing():
    """The hyper-synthesis' transposed convs run per output phase; every output is the same
    integer sum as the conv over the zero-stuffed input (the reference kept here), so the two
    are identical, for every stride, kernel, padding and output padding tried."""
    import torch.nn.functional as F

    from sarcodec.entropy import FixedPointNet

    def stuffed(a, wq, bq, s, pad, opad, k):
        bsz, c, h, w = a.shape
        z = torch.zeros(bsz, c, (h - 1) * s + 1, (w - 1) * s + 1, dtype=torch.float64)
        z[:, :, ::s, ::s] = a
        p = k - 1 - pad
        return FixedPointNet._conv(F.pad(z, (p, p + opad, p, p + opad)), wq, bq, 1, 0)

    g = torch.Generator().manual_seed(0)
    cases = 0
    for s in (1, 2, 3):
        for k in (1, 2, 3, 5):
            for pad in range(k):
                for opad in range(s):
                    for h, w in ((1, 1), (4, 3), (7, 6)):
                        wq = torch.randint(-2**14, 2**14, (3, 4, k, k), generator=g).double()
                        bq = torch.randint(-2**20, 2**20, (3,), generator=g).double()
                        a = torch.randint(-2**12, 2**12, (2, 4, h, w), generator=g).double()
                        try:
                            ref = stuffed(a, wq, bq, s, pad, opad, k)
                        except RuntimeError:  # no output pixel at all for this size
                            continue
                        assert torch.equal(FixedPointNet._deconv(a, wq, bq, s, pad, opad, k), ref), (s, k, pad, opad, h, w)
                        cases += 1
    assert cases > 150
