"""Batches of files, in this process or on a Dask cluster (``dask.distributed``).

``compress_files(inputs, out_dir, client=None, ...)`` / ``decompress_files``: one task per file;
a failure is recorded and the batch goes on; every input keeps its path relative to the inputs'
common folder under ``out_dir`` (two ``scene.tif`` from different folders never collide);
``skip_existing`` leaves finished outputs alone (a rerun of an interrupted batch does only the
rest). The bytes are those of the sequential path: each task runs the same ``compress_file``,
in a worker process with one entropy-coding process (``workers=0``) unless told otherwise.

A cluster is anything ``dask.distributed.Client`` accepts: ``cluster_client("local:4")`` starts a
LocalCluster of 4 single-threaded worker processes, ``cluster_client("tcp://host:8786")``
connects to a running scheduler (``dask scheduler`` + ``dask worker`` on the nodes, or
dask-jobqueue / dask-kubernetes). Each worker loads a bundled model once and keeps it.
"""
from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import InputError, OutputError, SarcodecError


def output_paths(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, suffix: str) -> list[Path]:
    """``out_dir`` / (each input's path relative to the inputs' common folder), with ``suffix``."""
    ins = [Path(p).resolve() for p in inputs]
    if not ins:
        return []
    common = Path(os.path.commonpath([str(p.parent) for p in ins]))
    outs = [Path(out_dir) / p.relative_to(common).with_suffix(suffix) for p in ins]
    if len(set(outs)) != len(outs):  # the same file twice
        raise InputError("the same input is given twice")
    return outs


@functools.lru_cache(maxsize=8)
def _model(spec: str, device: str | None):
    from .checkpoint import load_model

    return load_model(spec, device=device)


def _compress_task(src: str, dst: str, model: str, skip_existing: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
    from .files import compress_file

    device = kwargs.pop("device", None)
    # a target or an error bound searches the family's rate points: pass the name through
    searching = any(kwargs.get(k) is not None for k in ("psnr", "bpp", "max_error"))
    return _run(src, dst, skip_existing,
                lambda: compress_file(src, dst, model if searching else _model(model, device), **kwargs))


def _decompress_task(src: str, dst: str, model: str | None, skip_existing: bool, kwargs: dict[str, Any]
                     ) -> dict[str, Any]:
    from .files import decompress_file

    return _run(src, dst, skip_existing, lambda: decompress_file(src, dst, model=model, **kwargs))


def _run(src: str, dst: str, skip_existing: bool, fn: Callable[[], dict]) -> dict[str, Any]:
    row: dict[str, Any] = {"input": src, "output": dst, "status": "ok", "bpp": None, "seconds": 0.0,
                           "error": None, "exit_code": 0}
    if skip_existing and os.path.exists(dst):
        row["status"] = "skipped"
        return row
    t = time.perf_counter()
    try:
        try:
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{Path(dst).parent}: cannot create the output folder ({e.strerror})") from e
        r = fn()
        row["bpp"] = r.get("bpp")
    except SarcodecError as e:
        row.update(status="error", error=str(e), exit_code=e.exit_code)
    except MemoryError:
        row.update(status="error", error="out of memory", exit_code=6)
    except Exception as e:  # noqa: BLE001 - one bad file must not stop a batch
        row.update(status="error", error=f"unexpected {type(e).__name__}: {e}", exit_code=1)
    row["seconds"] = round(time.perf_counter() - t, 3)
    return row


def _map(task: Callable, jobs: list[tuple], client: Any, progress: Callable[[dict], None] | None) -> list[dict]:
    if client is None:
        rows = []
        for j in jobs:
            rows.append(task(*j))
            if progress:
                progress(rows[-1])
        return rows
    from distributed import as_completed

    futs = [client.submit(task, *j, pure=False, key=f"sarcodec-{i}-{Path(j[0]).name}") for i, j in enumerate(jobs)]
    index = {f.key: i for i, f in enumerate(futs)}
    rows: list[dict | None] = [None] * len(futs)
    try:
        for fut in as_completed(futs):
            i = index[fut.key]
            try:
                rows[i] = fut.result()
            except Exception as e:  # noqa: BLE001 - a worker lost mid-task
                rows[i] = {"input": jobs[i][0], "output": jobs[i][1], "status": "error", "bpp": None, "seconds": None,
                           "error": f"task failed on the cluster: {type(e).__name__}: {e}", "exit_code": 6}
            if progress:
                progress(rows[i])
    except BaseException:  # Ctrl-C, SIGTERM: start nothing more (a running task cannot be stopped)
        client.cancel([f for f in futs if not f.done()])
        raise
    return rows  # type: ignore[return-value]


def remove_temporaries(outputs: Sequence[str | os.PathLike]) -> None:
    """After an interrupted batch whose workers are gone (their cluster closed): remove what they
    were writing beside ``outputs`` (temporary files of writers no longer running)."""
    from .container import remove_stale_temporaries

    for o in outputs:
        remove_stale_temporaries(Path(o))


def close_cluster(client: Any, interrupted: bool = False) -> None:
    """Close ``client`` and the LocalCluster it started, if any. ``interrupted``: quietly (closing
    a cluster whose tasks were cancelled makes dask log a warning per lost task)."""
    import logging

    loggers = [logging.getLogger(n) for n in ("distributed", "distributed.worker", "distributed.nanny",
                                               "distributed.scheduler", "distributed.core")]
    levels = [lg.level for lg in loggers]
    if interrupted:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
    try:
        cl = client.cluster
        client.close()
        if cl is not None:
            cl.close()
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def compress_files(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, client: Any = None, *,
                   model: str = "default", skip_existing: bool = False,
                   progress: Callable[[dict], None] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """Compress every input to ``out_dir`` (relative paths kept); returns one row per input:
    ``input, output, status (ok | skipped | error), bpp, seconds, error, exit_code``. ``client``:
    a ``dask.distributed.Client`` (None: one file after another here). ``model``: a bundled name or
    a checkpoint path every worker can read. Other keywords go to :func:`sarcodec.compress_file`."""
    outs = output_paths(inputs, out_dir, ".sarc")
    kwargs.setdefault("workers", 0)
    jobs = [(str(i), str(o), str(model), skip_existing, dict(kwargs)) for i, o in zip(inputs, outs)]
    return _map(_compress_task, jobs, client, progress)


def decompress_files(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, client: Any = None, *,
                     model: str | None = None, skip_existing: bool = False,
                     progress: Callable[[dict], None] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """The inverse batch: .sarc files to GeoTIFFs under ``out_dir`` (see :func:`compress_files`)."""
    outs = output_paths(inputs, out_dir, ".tif")
    kwargs.setdefault("workers", 0)
    jobs = [(str(i), str(o), model, skip_existing, dict(kwargs)) for i, o in zip(inputs, outs)]
    return _map(_decompress_task, jobs, client, progress)


def cluster_client(spec: str):
    """A ``dask.distributed.Client`` for ``local``, ``local:N`` (N single-threaded worker
    processes on this machine) or a scheduler address (``tcp://host:8786``)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:  # pragma: no cover - optional dependency
        raise InputError("--cluster needs dask.distributed: pip install 'sarcodec[cluster]'") from e
    if spec == "local" or spec.startswith("local:"):
        n = spec.partition(":")[2]
        if n and not n.isdigit():
            raise InputError(f"--cluster local:N needs a number of workers, got {spec!r}")
        workers = int(n) if n else max(1, (os.cpu_count() or 2))
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster)
    if "://" not in spec:
        raise InputError(f"--cluster takes local, local:N or a scheduler address like tcp://host:8786, got {spec!r}")
    return Client(spec)


def summary_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of a batch (file, status, bpp, seconds, error). Files are named by their
    path relative to the inputs' common folder (two ``scene.tif`` stay apart), the start elided
    when longer than the column."""
    names = [Path(r["input"]) for r in rows]
    if len(names) > 1:
        common = Path(os.path.commonpath([str(p.parent) for p in names]))
        names = [p.relative_to(common) if p.is_relative_to(common) else p for p in names]
    else:
        names = [p.name for p in names]
    width = max([40] + [min(60, len(str(n))) for n in names])
    lines = [f"{'file':{width}s} {'status':8s} {'bpp':>7s} {'seconds':>8s}  error"]
    for r, n in zip(rows, names):
        bpp = "-" if r["bpp"] is None else f"{r['bpp']:.3f}"
        sec = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"
        n = str(n) if len(str(n)) <= width else "…" + str(n)[-(width - 1):]
        lines.append(f"{n:{width}s} {r['status']:8s} {bpp:>7s} {sec:>8s}  {r['error'] or ''}")
    n_ok = sum(r["status"] == "ok" for r in rows)
    n_skip = sum(r["status"] == "skipped" for r in rows)
    lines.append(f"{n_ok} ok, {n_skip} skipped, {len(rows) - n_ok - n_skip} failed")
    return "\n".join(lines)


def batch_exit_code(rows: list[dict[str, Any]]) -> int:
    """0 when nothing failed, else the exit code of the first failure (in input order)."""
    return next((r["exit_code"] for r in rows if r["status"] == "error"), 0)
