"""The compiled layer loops (layer/jit.py) against what they replace: constriction's range decoder
and model quantisation, and the NumPy paths of the dependent-quantisation decoder, its Viterbi
search and the restoration filter. Every comparison is exact (same integers, same floats)."""
import numpy as np
import pytest

from sarcodec.errors import CorruptedFileError
from sarcodec.layer import decode_layer, dq, jit
from sarcodec.layer.restoration import RestorationFilter

pytestmark = pytest.mark.skipif(not jit.AVAILABLE, reason="numba not installed")


@pytest.fixture(autouse=True)
def compiled(monkeypatch):
    """The kernels compiled (also under SARCODEC_JIT=0, which only changes the default)."""
    monkeypatch.setattr(jit, "ENABLED", True)
    jit.on()


@pytest.fixture
def numpy_path(monkeypatch):
    """Run a block with the compiled loops off (the NumPy + constriction reference)."""
    def off():
        monkeypatch.setattr(jit, "ENABLED", False)

    def on():
        monkeypatch.setattr(jit, "ENABLED", True)
        jit.on()

    return off, on


def _random_rows(rng, rows, n):
    """Probability rows as the coders build them (integer frequencies / their sum), some peaked,
    some with tiny entries, some with a zero (an unused table's row)."""
    f = rng.integers(1, 2**24, (rows, n)).astype(np.float64) ** rng.uniform(0.2, 3.0, (rows, 1))
    f[::7, 1:] = 0.0
    f[3::11, 2:] = 1.0
    return f / f.sum(1, keepdims=True)


def test_model_quantisation_and_decoder_match_constriction():
    """Symbols range-coded by constriction with random float64 models decode to the same
    symbols through the compiled quantisation and decoder (and through the binary model)."""
    import constriction

    rng = np.random.default_rng(0)
    for n, count in ((2, 3000), (5, 2000), (43, 4000)):
        prob = _random_rows(rng, count, n)
        cdf = jit.quantised_cdf(prob)
        assert np.all(np.diff(cdf, axis=1) > 0) and np.all(cdf[:, -1] == 1 << 24)
        sym = np.array([rng.choice(n, p=p) if p[0] < 1 else 0 for p in prob], np.int32)
        enc = constriction.stream.queue.RangeEncoder()
        fam = constriction.stream.model.Categorical(perfect=False)
        enc.encode(sym, fam, prob)
        words = enc.get_compressed()
        st = jit.decoder(words)
        got = [jit._decode(st, words, cdf[i], n) for i in range(count)]
        np.testing.assert_array_equal(got, sym)
    # the sign models: (1 - neg/tot, neg/tot) from adaptive counts
    neg = rng.integers(1, 4000, 5000)
    tot = neg + rng.integers(1, 4000, 5000)
    p1 = neg / tot
    prob = np.stack([1.0 - p1, p1], 1)
    bits = (rng.random(5000) < p1).astype(np.int32)
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(bits, constriction.stream.model.Categorical(perfect=False), prob)
    words = enc.get_compressed()
    st = jit.decoder(words)
    got = [jit._decode_bit(st, words, jit._binary_cdf1(int(a), int(b))) for a, b in zip(neg, tot)]
    np.testing.assert_array_equal(got, bits)
    assert all(jit._binary_cdf1(int(a), int(b)) == jit.quantised_cdf(p[None])[0, 1] for a, b, p in
               zip(neg[:200], tot[:200], prob[:200]))


@pytest.mark.parametrize("scale", [0.3, 3.0, 60.0])
def test_dq_layers_decode_the_same_both_ways(scale, numpy_path):
    off, on = numpy_path
    for shape in ((1, 9), (7, 1), (37, 53), (96, 80)):
        x = np.random.default_rng(int(scale * 10) + shape[0]).laplace(0, scale, shape) * 0.01
        off()
        blob, lay = dq.encode_dq(x, 0.01)
        if not blob:
            continue
        ref = decode_layer(blob, shape)
        on()
        assert dq.encode_dq(x, 0.01)[0] == blob  # the compiled Viterbi picks the same levels
        got = decode_layer(blob, shape)
        np.testing.assert_array_equal(got.q, ref.q)
        np.testing.assert_array_equal(got.q, lay.q)
        assert got.offsets == ref.offsets


def test_damaged_blobs_fail_alike(numpy_path):
    """A damaged stream is a format error (or some layer) on both paths, the same one."""
    off, on = numpy_path
    x = np.random.default_rng(8).laplace(0, 0.03, (40, 36))
    blob, _ = dq.encode_dq(x, 0.01)
    rng = np.random.default_rng(9)
    for _ in range(40):
        b = bytearray(blob)
        b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        out = []
        for f in (off, on):
            f()
            try:
                out.append(decode_layer(bytes(b), x.shape).q)
            except CorruptedFileError:
                out.append(None)
        assert (out[0] is None) == (out[1] is None)
        if out[0] is not None:
            np.testing.assert_array_equal(out[0], out[1])


def test_restoration_filter_gives_the_same_floats(numpy_path):
    off, on = numpy_path
    rng = np.random.default_rng(3)
    for h, w, k in ((1, 1, 1), (5, 300, 4), (64, 33, 3), (120, 90, 4)):
        x = rng.normal(0.5, 0.1, (h, w))
        f = RestorationFilter(np.sort(rng.uniform(0, 2, k - 1)).astype(np.float32),
                              rng.integers(-3000, 3000, (k, 18)).astype(np.int16),
                              rng.integers(-3000, 3000, k).astype(np.int16))
        off()
        ref = f.apply(x)
        on()
        np.testing.assert_array_equal(f.apply(x), ref)


def test_contexts_are_the_same_integers(numpy_path):
    """The pass contexts (class, neighbour sum, count) of dense and sparse residuals."""
    from sarcodec.layer import coder as L

    off, on = numpy_path
    rng = np.random.default_rng(4)
    for shape in ((1, 1), (2, 3), (9, 5), (37, 53), (130, 70)):
        for density in (0.001, 0.3, 1.0):
            q = rng.laplace(0, 20, shape).astype(np.int64) * (rng.random(shape) < density)
            for p in range(len(L.PASSES)):
                off()
                ref = L._context(q, p)
                on()
                for a, b in zip(L._context(q, p), ref):
                    np.testing.assert_array_equal(a, b)


def test_encoder_writes_constrictions_words():
    """The compiled range encoder against constriction's on long random streams, including the
    rare 'inverted' runs (a carry still undecided across words), and the empty stream."""
    import constriction

    rng = np.random.default_rng(5)
    inverted = 0
    for n, count in ((2, 20000), (43, 20000), (3, 1)):
        prob = _random_rows(rng, count, n)
        cdf = jit.quantised_cdf(prob)
        sym = np.array([rng.choice(n, p=p) if p[0] < 1 else 0 for p in prob], np.int32)
        ref = constriction.stream.queue.RangeEncoder()
        ref.encode(sym, constriction.stream.model.Categorical(perfect=False), prob)
        st, out = jit.encoder(count)
        for i, s in enumerate(sym):
            jit._encode(st, out, cdf[i, s], cdf[i, s + 1] - cdf[i, s])
            inverted += st[2] > 0
        np.testing.assert_array_equal(jit.sealed(st, out), ref.get_compressed())
    assert inverted > 0  # the held-back path ran
    st, out = jit.encoder(0)
    assert jit.sealed(st, out).size == constriction.stream.queue.RangeEncoder().get_compressed().size == 0


def test_table_fits_in_one_pass_equal_the_per_table_fits():
    from sarcodec.layer import coder as L

    rng = np.random.default_rng(6)
    e = (rng.laplace(0, 3, 20000) * (rng.random(20000) < 0.6)).astype(np.int64)
    e[:5] = [5000, -3000, 0, 1, -1]  # beyond HALF
    tid = rng.integers(0, 40, e.size)
    tid[tid == 7] = 8  # an unused table
    got = dq._fit_tables(e, tid)
    assert got == {int(t): L._fit_class(np.abs(e[tid == t])) for t in np.unique(tid)}


def test_filter_fit_compiled_matches_numpy(numpy_path):
    """The restoration filter's fit in one compiled pass: the same activity (bit for bit), so the
    same classes, and the same normal equations up to summation order (taps within one unit of
    1/4096; equal on this tile)."""
    from scipy.ndimage import uniform_filter

    from sarcodec.layer import restoration as R

    rng = np.random.default_rng(4)
    t = rng.normal(0.5, 0.1, (96, 80))
    x = uniform_filter(t + rng.normal(0, 0.03, t.shape), 3)
    valid = np.ones(t.shape, bool)
    valid[:9, :30] = False
    xp = R._padded(x)
    np.testing.assert_array_equal(jit.filter_activity(xp, R.FILTER_REACH), R._filter_activity(xp, x.shape))
    fast = R.fit_filter(x, t, valid)
    off, on = numpy_path
    off()
    ref = R.fit_filter(x, t, valid)
    on()
    np.testing.assert_array_equal(fast.edges, ref.edges)
    assert np.abs(fast.taps.astype(int) - ref.taps).max() <= 1 and np.abs(fast.dc.astype(int) - ref.dc).max() <= 1
    assert fast.taps.any()


def test_wavelet_lifting_gives_the_same_floats(numpy_path):
    """The compiled CDF 9/7 lifting (either axis, odd and even lengths, both directions) against
    wavelet.py's NumPy steps: the same floats."""
    from sarcodec.layer import wavelet

    off, on = numpy_path
    rng = np.random.default_rng(5)
    for shape in ((1, 6), (2, 3), (3, 1), (5, 7), (64, 33), (130, 257)):
        x = rng.normal(0, 0.1, shape)
        for axis in (0, 1):
            off()
            ref = wavelet._dwt1(x, axis)
            inv = wavelet._idwt1(*ref, axis)
            on()
            got = wavelet._dwt1(x, axis)
            for a, b in zip(got, ref):
                np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(wavelet._idwt1(*ref, axis), inv)


def test_kernels_inline_into_their_callers():
    """The range decoder's per-symbol helpers are inlined by numba (a call per symbol kept its
    state out of registers, ~4x slower): marked, and they still run on their own."""
    for name in ("_symbol_at", "_bit_at", "_shift_in", "_predicted", "_khat_of", "_bucket", "_binary_cdf1"):
        assert name in jit._INLINE
    for alpha in range(-32, 33, 3):  # the shifts for 4 and 2 neighbours are floor divisions
        for ssum in range(-70, 71, 7):
            for n in range(1, 5):
                assert jit._predicted(alpha, ssum, n) == ((2 * alpha * ssum + 32 * n) // (64 * n) if alpha else 0)
