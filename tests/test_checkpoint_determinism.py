import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import sarcodec
from sarcodec.errors import ModelError, UnknownModelError


def test_checkpoint_rebuilds_model_from_file_alone(trained_tiny, tmp_path):
    m = sarcodec.load_model(trained_tiny)
    assert m.arch == "residual" and m.name == "tiny"
    obj = torch.load(trained_tiny, weights_only=True)
    assert {"arch", "config", "state_dict", "entropy_tables", "weights_hash", "training", "radiometry"} <= set(obj)
    m2 = sarcodec.load_model(str(trained_tiny))
    assert m.weights_hash() == m2.weights_hash()


def test_corrupt_and_missing_checkpoints(trained_tiny, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        sarcodec.load_model(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(ModelError, match="not a readable"):
        sarcodec.load_model(bad)
    obj = torch.load(trained_tiny, weights_only=True)
    obj["state_dict"]["g_s.3.conv2.weight"] = obj["state_dict"]["g_s.3.conv2.weight"] + 1
    tampered = tmp_path / "tampered.pt"
    torch.save(obj, tampered)
    with pytest.raises(ModelError, match="hash mismatch"):
        sarcodec.load_model(tampered)
    with pytest.raises(UnknownModelError, match="architecture"):
        sarcodec.load_model("residual")


DECODE_SCRIPT = """
import sys, hashlib, numpy as np, torch
if len(sys.argv) > 4:  # MKL used before sarcodec is imported: its reproducible mode cannot be set
    torch.randn(64, 64) @ torch.randn(64, 64)
import sarcodec
from sarcodec._reproducible import mkl_strict
torch.set_num_threads(int(sys.argv[3]))
out = sarcodec.decode(open(sys.argv[1], 'rb').read(), sarcodec.load_model(sys.argv[2]), normalized=True)
print(hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest(), "strict" if mkl_strict() else "not-strict")
"""

# MKL's AVX2 code path splits SGEMM reductions by thread count where its AVX-512 path does not:
# forcing it (and oneDNN's AVX2 kernels, which the dense syntheses run on) shows on any AVX-512
# machine what an AVX2-only machine does.
AVX2 = {**os.environ, "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# ``import sarcodec`` in this process put MKL_CBWR in os.environ: a child that inherits it runs MKL
# in strict mode from its first call, so the "MKL used first" case needs it taken out
AVX2_NO_CBWR = {k: v for k, v in AVX2.items() if k != "MKL_CBWR"}


def _decode_digest(f, ckpt, threads, env=None, mkl_first=False, mode="strict"):
    """The decoded pixels' digest in a fresh process, checking which MKL mode it ran in."""
    args = [sys.executable, "-c", DECODE_SCRIPT, str(f), str(ckpt), str(threads)] + (["mkl-first"] if mkl_first else [])
    digest, ran = subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout.split()
    assert ran == mode, f"the decode ran with MKL {ran}, expected {mode}"
    return digest


@pytest.mark.parametrize("arch", ["residual", "hyperprior", "hyperprior-step", "fast-q2"])
def test_decode_bit_identical_across_processes_and_threads(arch, trained_tiny, tmp_path, sar_300x437):
    """Same pixels from fresh processes, with 1 and 2 threads, AVX-512 and AVX2 kernels, and in
    this process. "residual": the native kernels under MKL's strict mode; the hyperprior family
    (GDN + transposed convs, whose own oneDNN kernels depend on threads) and "fast-q2" (the
    bundled lite synthesis, loaded from its derived checkpoint): their dense form on oneDNN;
    "-step": coded at a latent quantisation step other than 1 (continuous quality)."""
    if arch == "residual":
        ckpt = trained_tiny
    elif arch == "fast-q2":
        ckpt = "fast-q2"
    else:
        from conftest import small_model

        ckpt = tmp_path / "hp.pt"
        sarcodec.save_checkpoint(small_model("hyperprior"), ckpt)
    m = sarcodec.load_model(ckpt)
    data = sarcodec.encode(sar_300x437, m, tile_size=256, step=0.7 if arch.endswith("-step") else None)
    f = tmp_path / "img.sarc"
    f.write_bytes(data)
    here = hashlib.sha256(np.ascontiguousarray(sarcodec.decode(data, m, normalized=True)).tobytes()).hexdigest()
    digests = [_decode_digest(f, ckpt, threads, env) for env in (None, AVX2) for threads in (1, 2)]
    assert digests == [here] * 4


def test_decode_reproducible_when_mkl_ran_first(tmp_path, sar_300x437):
    """MKL used before ``import sarcodec`` keeps its default mode; the synthesis then runs on one
    thread, so 1 and 2 threads still give the same pixels on that machine."""
    from conftest import small_model

    ckpt = tmp_path / "hp.pt"
    sarcodec.save_checkpoint(small_model("hyperprior"), ckpt)
    f = tmp_path / "img.sarc"
    f.write_bytes(sarcodec.encode(sar_300x437, sarcodec.load_model(ckpt), tile_size=256, step=0.7))
    one, two = (_decode_digest(f, ckpt, threads, AVX2_NO_CBWR, mkl_first=True, mode="not-strict") for threads in (1, 2))
    assert one == two


def test_encode_is_deterministic_too(trained_tiny, sar_300x437):
    m = sarcodec.load_model(trained_tiny)
    assert sarcodec.encode(sar_300x437, m) == sarcodec.encode(sar_300x437, m)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_gpu_cpu_cross_decode(trained_tiny, sar_300x437):
    cpu = sarcodec.load_model(trained_tiny)
    gpu = sarcodec.load_model(trained_tiny, device="cuda")
    d_cpu, d_gpu = sarcodec.encode(sar_300x437, cpu), sarcodec.encode(sar_300x437, gpu)
    from sarcodec.container import ContainerReader

    for data in (d_cpu, d_gpu):
        r = ContainerReader(data)
        for t in r.header.tiles:
            b = r.tile_bytes(t)
            # the entropy-decoded latents are bit-identical whichever device decodes
            assert torch.equal(cpu.decode_latent(b, t.height, t.width), gpu.decode_latent(b, t.height, t.width))
        a = sarcodec.decode(data, cpu, normalized=True)
        g = sarcodec.decode(data, gpu, normalized=True)
        assert np.isfinite(g).all() and np.abs(a - g).max() < 1e-3


def test_half_precision_checkpoint_is_self_consistent(trained_tiny, tmp_path, sar_300x437):
    m = sarcodec.load_model(trained_tiny)
    full = tmp_path / "f.pt"
    half = tmp_path / "h.pt"
    sarcodec.save_checkpoint(m, full)
    sarcodec.save_checkpoint(m, half, half=True)  # rounds m in place
    assert half.stat().st_size < 0.65 * full.stat().st_size
    h = sarcodec.load_model(half)
    assert h.weights_hash() == m.weights_hash()
    data = sarcodec.encode(sar_300x437, m)
    assert np.array_equal(sarcodec.decode(data, h, normalized=True), sarcodec.decode(data, m, normalized=True))


def test_loading_other_weights_invalidates_tables_and_hash(trained_tiny):
    from conftest import small_model

    m = small_model("residual")
    before = m.weights_hash()
    m.load_state_dict(sarcodec.load_model(trained_tiny).state_dict())
    assert m.weights_hash() != before
    assert m.weights_hash() == sarcodec.load_model(trained_tiny).weights_hash()


def test_mkl_runs_in_its_strict_reproducible_mode():
    """``import sarcodec`` put MKL (where torch has it) in strict CNR mode before its first call."""
    import platform

    from sarcodec._reproducible import mkl_strict, synthesis_threads

    if not (torch.backends.mkl.is_available() and platform.machine() in ("x86_64", "AMD64")):
        pytest.skip("no MKL in this torch build")
    assert mkl_strict() and synthesis_threads() is None
