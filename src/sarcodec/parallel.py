"""Entropy coding of tiles, and decoding of their pixel layers, in worker processes.

A tile's range coding (and the fixed-point hyper-synthesis that picks its probability tables)
is pure CPU integer work that holds the GIL, so threads do not overlap it (measured: 8 tiles,
0.80 s on one thread, 0.74 s on two). :class:`CoderPool` runs it in worker processes, each holding
a copy of the model's exact coder (:meth:`SarCodec.coder`: integer tables and fixed-point
weights, no transforms), while the main process runs the transforms. Integer arithmetic only:
a tile's bytes and decoded latents are the same in any process, so parallel and sequential
coding give byte-identical files (tested). A tile's pixel layer (:mod:`sarcodec.layer`: NumPy and
range decoding, the GIL held) decodes to the same integers in any process too.

On Linux the workers are forked, as PyTorch's DataLoader workers are: a forked child starts at
once, needs nothing from ``__main__`` (a spawned one re-imports the user's script, which breaks
scripts without an ``if __name__ == "__main__":`` guard), and is safe here because it touches
neither CUDA nor more than one intra-op thread (it sets one). Elsewhere (macOS, Windows) they
are spawned, and a calling script needs that guard. :func:`auto_workers` only uses a pool when
a job has enough tiles to pay for starting it.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from .errors import InputError, ResourceError

MIN_TILES = 8  # fewer tiles than this: a pool's start-up (0.3 s for 2 forked workers) costs more than it saves
MAX_AUTO_WORKERS = 16

_CODER: Any = None


def _init_worker(coder: Any) -> None:
    import signal

    import torch

    global _CODER
    torch.set_num_threads(1)
    _CODER = coder
    # the parent handles Ctrl-C / SIGTERM and shuts the pool down; a worker must not outlive it
    # (SIGKILL of the parent included): Linux's parent-death signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()


def _die_with_parent() -> None:
    import ctypes
    import os
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _encode(y: np.ndarray, z_int: np.ndarray | None) -> bytes:
    return _CODER.encode(y, z_int)


def _decode(data: bytes, y_shape: tuple[int, ...]) -> np.ndarray:
    from .models.latent_codecs import decode_tile

    return decode_tile(_CODER, data, y_shape)


def _decode_layer(blob: bytes, shape: tuple[int, int], where: str) -> Any:
    from .layer import decode_layer

    return decode_layer(blob, shape, where)


def _code_layer(*args: Any) -> Any:
    from .scene import code_layer

    return code_layer(*args)


def _encode_raw(values: np.ndarray) -> bytes:
    from .layer import encode_layer

    return encode_layer(values, 1.0, raw=True)


def result(fut: Future) -> Any:
    """A pool task's result; a worker that died (the kernel's out-of-memory killer, most often)
    is a ResourceError (exit 6) that says what to do, not a bare BrokenProcessPool."""
    try:
        return fut.result()
    except BrokenProcessPool as e:
        raise ResourceError("an entropy-coding worker process died (out of memory?): "
                            "retry with fewer --workers, or 0") from e


def check_workers(workers: int | None) -> int | None:
    if workers is not None and (not isinstance(workers, int) or workers < 0):
        raise InputError(f"workers must be a whole number >= 0 (0: code in the main process), got {workers!r}")
    return workers


def auto_workers(n_tiles: int, device: str, layers: int = 0) -> int:
    """Worker processes for a job of ``n_tiles`` tiles, ``layers`` of them with a pixel layer to
    code or decode, when the user did not say.

    * On a GPU the transforms are fast and the CPU-side coding is the bottleneck (about 0.13 s
      per 1024 px tile on one core): one worker per CPU core but one (the main process feeds
      the GPU), at most 16.
    * Dense pixel layers (two or more; ``max_error`` or lossless, not the default outlier
      layer, which codes in milliseconds): one worker per core, at most one per layer. On one core a
      layer codes at ~0.2-0.5 MP/s and decodes at ~1-3 MP/s (NumPy per lattice column, the GIL
      held), slower than the synthesis, so layers coded in other processes overlap it and each
      other (a 2048^2 scene, 4 layered tiles, 2 cores: encode 29 -> 19 s, decode 7.0 -> 3.8 s).
    * None in a daemonic process (a ``multiprocessing.Pool`` or Dask worker), which may not
      start processes of its own.
    * Otherwise, on a CPU, none: the transforms already keep every core busy through PyTorch's
      threads and latent coding is under 10% of the work (1024 px tile on 2 cores: analysis
      1.0 s, coding 0.1 s, synthesis 2.2 s). Measured on 2 cores, a 4096^2 array: 0.91 / 0.90 /
      0.93 MP/s encode and 0.58 / 0.56 / 0.58 MP/s decode with 0 / 1 / 2 workers
      (benchmarks/parallel_coding.py).
    """
    if mp.current_process().daemon:
        return 0  # a daemonic process (a multiprocessing.Pool or Dask worker) may not start children
    cores = os.cpu_count() or 1
    if n_tiles >= MIN_TILES and device == "cuda":
        return max(1, min(cores - 1, MAX_AUTO_WORKERS))
    if layers >= 2:
        return min(cores, layers, MAX_AUTO_WORKERS)
    return 0


class CoderPool:
    """``workers`` processes, each with a copy of ``coder``; futures come back per tile.

    Use as a context manager: leaving it (also on an error) cancels what has not started and
    shuts the workers down."""

    def __init__(self, coder: Any, workers: int):
        if workers < 1:
            raise ValueError("a CoderPool needs at least one worker")
        self.workers = workers
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        self._ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                       initargs=(coder,))
        # start the workers now (a forking pool starts all of them at its first task): later the
        # caller may run threads of its own (SceneDecoder.synthesis_threads), and a process
        # forked while another thread is inside OpenMP or MKL can hang in them
        result(self._submit(os.getpid))

    def _submit(self, fn: Any, *args: Any) -> Future:
        # workers start on demand, here; Python >= 3.12 warns about any fork of a process with
        # threads (PyTorch's pool), a case the module docstring covers
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks", category=DeprecationWarning)
            return self._ex.submit(fn, *args)

    def encode(self, y: np.ndarray, z_int: np.ndarray | None) -> Future:
        return self._submit(_encode, y, z_int)

    def decode(self, data: bytes, y_shape: tuple[int, ...]) -> Future:
        return self._submit(_decode, bytes(data), tuple(y_shape))

    def decode_layer(self, blob: bytes, shape: tuple[int, int], where: str) -> Future:
        """A tile's pixel layer (:func:`sarcodec.layer.decode_layer`; needs no coder)."""
        return self._submit(_decode_layer, bytes(blob), tuple(shape), where)

    def code_layer(self, *args: Any) -> Future:
        """A tile's pixel layer coded (:func:`sarcodec.scene.code_layer`; needs no coder)."""
        return self._submit(_code_layer, *args)

    def encode_raw(self, values: np.ndarray) -> Future:
        """A lossless tile's stored integers coded (:func:`sarcodec.layer.encode_layer`, raw)."""
        return self._submit(_encode_raw, values)

    def close(self, cancel: bool = False) -> None:
        self._ex.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self) -> "CoderPool":
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        self.close(cancel=exc_type is not None)


@contextmanager
def coder_pool(coder: Any, n_tiles: int, device: str, workers: int | None, layers: int = 0,
               kernels: bool = False) -> Iterator[CoderPool | None]:
    """A :class:`CoderPool` of ``workers`` processes (None: :func:`auto_workers`), or None for 0.
    ``kernels``: the workers will code or decode dense layers, so the compiled layer kernels are
    loaded here first (:func:`sarcodec.layer.warm_kernels`, once per process) for forked workers
    to inherit instead of each loading them again."""
    n = auto_workers(n_tiles, device, layers) if check_workers(workers) is None else min(workers, n_tiles)
    if n == 0:
        yield None
        return
    if kernels and sys.platform.startswith("linux"):  # (spawned workers start empty whatever is done here)
        from .layer import warm_kernels

        warm_kernels()
    with CoderPool(coder, n) as pool:
        yield pool
