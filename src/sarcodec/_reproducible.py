"""Same pixels whatever the thread count.

PyTorch's native CPU convolutions (the syntheses without a dense form, see ``Codec.synthesize``)
reduce through MKL's SGEMM, and on AVX2-only processors MKL splits those reductions by thread
count: the same file decoded with 1 and 2 threads differed in the last bits. MKL's vector maths
(GDN's square root, in the dense syntheses too) rounds, outside the mode below, by how the
threads split an array. MKL's *strict conditional numerical
reproducibility* mode (``MKL_CBWR=AVX2,STRICT``) fixes the code branch and the reduction order
for GEMM whatever the thread count, and, being the AVX2 branch, gives the same bits on AVX2 and
AVX-512 machines too (measured: same digest with 1-8 threads, AVX-512 and forced-AVX2 MKL; no
measurable cost on the synthesis). MKL reads the setting once, at its first call, so this module
sets it when ``sarcodec`` is imported; a user's own ``MKL_CBWR`` is respected.

Where the mode is not in force (MKL already used before ``import sarcodec``, another setting, a
build without MKL), :func:`synthesis_threads` says to synthesise on one thread, which is
reproducible on that machine at some cost in speed.
"""
from __future__ import annotations

import os

os.environ.setdefault("MKL_CBWR", "AVX2,STRICT")

_MKL_CBWR_ALL = -1  # ~0: ask for every CNR setting
_MKL_CBWR_STRICT = 0x10000
_strict: bool | None = None


def mkl_strict() -> bool:
    """Whether MKL runs in strict CNR mode in this process (False without MKL)."""
    global _strict
    if _strict is None:
        try:
            import ctypes

            import torch

            lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
            _strict = bool(lib.mkl_serv_cbwr_get(ctypes.c_int(_MKL_CBWR_ALL)) & _MKL_CBWR_STRICT)
        except (OSError, AttributeError):
            _strict = False
    return _strict


def synthesis_threads() -> int | None:
    """Threads the CPU synthesis may use: None (as set) under strict MKL, else 1."""
    return None if mkl_strict() else 1
