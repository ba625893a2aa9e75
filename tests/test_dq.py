"""Dependent (trellis-coded) quantisation of MSE layers (layer/dq.py, layer flag 9): exact round trips
on any shape, the state machine, the gain over the scalar quantiser, and damaged blobs."""
import numpy as np
import pytest

from sarcodec.layer import dq
from sarcodec.errors import CorruptedFileError
from sarcodec.layer import LayerData, decode_layer, encode_layer
from sarcodec.layer.coder import centroid_offsets


def _psnr_bits(x, blob, lay):
    return 8 * len(blob) / x.size, float(np.mean((lay.values() - x) ** 2))


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (2, 3), (37, 53), (64, 64)])
@pytest.mark.parametrize("scale", [0.3, 3.0, 60.0])  # mostly zeros / ~2 bits / escapes
def test_round_trip_on_any_shape(shape, scale):
    x = np.random.default_rng(int(scale * 10) + shape[0]).laplace(0, scale, shape) * 0.01
    blob, lay = dq.encode_dq(x, 0.01)
    if not blob:  # every level zero: nothing to send
        assert lay.q is None and scale == 0.3
        return
    assert blob[2] == dq.FLAG
    got = decode_layer(blob, shape)
    np.testing.assert_array_equal(got.q, lay.q)
    assert got.offsets == lay.offsets and got.step == lay.step
    np.testing.assert_array_equal(got.values(), lay.values())
    if scale == 60.0 and x.size > 100:
        assert np.abs(got.q).max() >= 2 * dq.ALPHABET  # escapes were used


def test_reconstruction_index_follows_the_trellis():
    """Re-derive the states from the decoded values along each chain: every value must belong to
    the quantiser its state selects (Q0: even multiples of delta, Q1: zero or odd)."""
    from sarcodec.layer import coder as L

    x = np.random.default_rng(5).normal(0, 0.05, (40, 48))
    blob, lay = dq.encode_dq(x, 0.01)
    assert blob[2] == dq.FLAG
    nxt, quant = dq.MACHINE
    m = decode_layer(blob, x.shape).q
    np.testing.assert_array_equal(m, lay.q)
    for p in range(len(L.PASSES)):
        rr, cc = dq._lattice(x.shape, p)
        v = m[np.ix_(rr, cc)]
        st = np.zeros(rr.size, np.int64)
        for j in range(cc.size):
            q1 = quant[st] == 1
            assert np.all((v[q1, j] == 0) | (v[q1, j] % 2 != 0))
            assert np.all(v[~q1, j] % 2 == 0)
            k = (np.abs(v[:, j]) + q1) // 2  # |level|
            st = nxt[st, k & 1]


def test_the_state_machines_are_trellises():
    """Every state has two successors (one per parity) and two predecessors, both of which use
    the same quantiser (the union cosets of trellis-coded quantisation)."""
    for nxt, quant in (dq.MACHINE,):
        n = len(quant)
        assert nxt.shape == (n, 2) and sorted(np.bincount(nxt.reshape(-1), minlength=n)) == [2] * n
        for t in range(n):
            pred = [s for s in range(n) for p in (0, 1) if nxt[s, p] == t]
            assert len({int(quant[s]) for s in pred}) == 1


def test_dependent_quantisation_beats_the_scalar_quantiser():
    """On a Laplacian field at 1-3 bits per value, DQ gives a lower error at the same coded size
    than the scalar quantiser with centroid reconstruction (the layer it replaces)."""
    x = np.random.default_rng(7).laplace(0, 1.0, (128, 128))
    sq, dqc = [], []
    for step in (1.6, 1.0, 0.6, 0.35, 0.2):
        q = np.rint(x / step).astype(np.int64)
        off = centroid_offsets(q.reshape(-1), x.reshape(-1), step)
        blob = encode_layer(q, step)  # the scalar layer; reconstructed at the centroids (4 bytes not counted)
        sq.append(_psnr_bits(x, blob, LayerData(q, step, 0.0, off)))
        dqc.append(_psnr_bits(x, *dq.encode_dq(x, step)))
    sb, sd = np.array(sorted(sq)).T
    for b, d in dqc:
        if sb[0] <= b <= sb[-1]:
            ref = np.exp(np.interp(b, sb, np.log(sd)))
            assert 10 * np.log10(ref / d) > 0.25, (b, ref, d)


def test_damaged_dq_blobs_are_format_errors():
    x = np.random.default_rng(8).laplace(0, 0.03, (40, 36))
    blob, _ = dq.encode_dq(x, 0.01)
    rng = np.random.default_rng(9)
    bad = [blob[:5], blob[:-1], blob + b"\0", blob[:30], blob[:len(blob) // 2]]
    for _ in range(60):  # random edits (as a forger would, past the CRC)
        b = bytearray(blob)
        b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        bad.append(bytes(b))
    for b in bad[:5]:
        with pytest.raises(CorruptedFileError):
            decode_layer(b, x.shape)
    for b in bad[5:]:  # a clear error or some layer of the right shape, never a crash
        try:
            d = decode_layer(b, x.shape)
        except CorruptedFileError:
            continue
        assert d.q.shape == x.shape


def test_mse_layers_are_dependent_quantised():
    """make_layer codes MSE layers with DQ, in the pixel form (white residual) or inside the
    wavelet packet form (correlated residual), and both decode to what the encoder reconstructed."""
    from scipy.ndimage import gaussian_filter

    from sarcodec.layer import LayerSpec, RestorationFilter, make_layer
    from sarcodec.layer.coder import _HEAD

    shape, lo, hi = (64, 72), -25.0, 5.0
    rng = np.random.default_rng(10)
    base = np.full(shape, 0.5)
    for t, wavelet in ((base + rng.normal(0, 0.05, shape), False),
                       (base + gaussian_filter(rng.normal(0, 0.05, shape), 2.0) * 5, True)):
        blob, lay = make_layer(t, base, None, LayerSpec(0.3, bound=False), lo, hi)
        inner = blob if blob[2] != 5 else blob[RestorationFilter.unpack(blob, _HEAD.size)[1]:]
        assert inner[2] == (8 if wavelet else dq.FLAG)  # the wavelet packet form is flag 8
        np.testing.assert_array_equal(decode_layer(blob, shape).apply(base, lo, hi), lay.apply(base, lo, hi))


def test_context_coded_signs_adapt_and_stay_positive():
    """The signs are coded with adaptive contexts (which way the unrounded prediction lies from
    the predicted level, the magnitude, the quantiser): the count halving keeps every count
    positive and below the total."""
    rng = np.random.default_rng(30)
    s = dq._Signs()
    ctx = rng.integers(0, dq.N_SIGN, 20000)
    for _ in range(3):
        s.update(ctx, (rng.random(ctx.size) < 0.9).astype(np.int64))
    assert np.all(s.tot <= dq.SIGN_HALVE + 1000) and np.all((s.neg >= 1) & (s.neg < s.tot))
    p = s.probs(np.arange(dq.N_SIGN))
    assert np.all(p > 0) and np.allclose(p.sum(1), 1)
