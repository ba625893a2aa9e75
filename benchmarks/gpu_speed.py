"""Array-level codec speed on a GPU (or CPU) for the bundled default model: encode / decode of a
synthetic Sentinel-1-like scene through the public API, plus the analysis transform alone in
float32 and bf16. Entropy coding (range coder, hyper-synthesis in fixed point) runs on the CPU,
in worker processes (``sarcodec.parallel``: automatic count, compared here with none).

    python benchmarks/gpu_speed.py [--size 4096 | --shape 17000 25000] [--model default] [--device cuda]

``--shape 17000 25000`` is one polarisation of a Sentinel-1 GRD scene: the issue's "<= 10 s each
way on a GPU" target, measured directly (about 1.7 GB of float32 in memory).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sarcodec  # noqa: E402
from sarcodec.data.synthetic import synthetic_sar  # noqa: E402


def timed(fn, repeat: int, sync) -> tuple[float, object]:
    ts, out = [], None
    for _ in range(repeat):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--shape", type=int, nargs=2, metavar=("ROWS", "COLS"), help="a rectangle instead of --size^2")
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one encode and one decode only (a whole scene)")
    a = ap.parse_args()
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    m = sarcodec.load_model(a.model, device=a.device)
    # synthetic_sar is slow at scene size (~20 s for 2048^2 on one core): mirror-tile a 1024^2 one
    base = synthetic_sar((1024, 1024), seed=0)
    rows, cols = a.shape or (a.size, a.size)
    img = np.ascontiguousarray(np.tile(np.concatenate([base, base[::-1]], 0),
                                       (-(-rows // 2048), -(-cols // 1024)))[:rows, :cols])
    mp = img.size / 1e6
    sarcodec.decode(sarcodec.encode(img[:512, :512], m), m)  # warm-up (kernels, tables)
    te, data = timed(lambda: sarcodec.encode(img, m), a.repeat, sync)
    if a.quick:
        td, rec = timed(lambda: sarcodec.decode(data, m), a.repeat, sync)
        name = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
        print(f"{name}, model {m.name}, {rows}x{cols} scene ({mp:.1f} MP), default settings: encode {mp / te:.1f} MP/s "
              f"({te:.1f} s), decode {mp / td:.1f} MP/s ({td:.1f} s), {8 * len(data) / img.size:.3f} bpp, "
              f"finite {bool(np.isfinite(rec).all())}", flush=True)
        return
    batches = {b: timed(lambda b=b: sarcodec.encode(img, m, batch=b), a.repeat, sync)[0] for b in (1, 4)}
    td, rec = timed(lambda: sarcodec.decode(data, m), a.repeat, sync)
    te0, data0 = timed(lambda: sarcodec.encode(img, m, workers=0), 1, sync)
    tp = {p: timed(lambda p=p: sarcodec.encode(img, m, precision=p), 1, sync)[0] for p in ("fp32", "bf16")}
    td0, _ = timed(lambda: sarcodec.decode(data, m, workers=0), 1, sync)
    from sarcodec.parallel import auto_workers
    from sarcodec.scene import encoder_precision

    nw = auto_workers(-(-rows // 1024) * -(-cols // 1024), torch.device(a.device).type)
    x = torch.rand(4, 1, 1024, 1024, device=a.device)
    with torch.no_grad():
        ta32, _ = timed(lambda: m.g_a(x), 5, sync)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            ta16, _ = timed(lambda: m.g_a(x), 5, sync)
    name = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    print(f"{name}, model {m.name}, {rows}x{cols} scene ({mp:.1f} MP), median of {a.repeat}:")
    print(f"  encode {mp / te:.1f} MP/s ({te:.2f} s), decode {mp / td:.1f} MP/s ({td:.2f} s), "
          f"{8 * len(data) / img.size:.3f} bpp, finite {bool(np.isfinite(rec).all())}")
    print(f"  entropy coding in {nw} worker processes (automatic) vs none: encode {mp / te:.1f} vs {mp / te0:.1f} MP/s, "
          f"decode {mp / td:.1f} vs {mp / td0:.1f} MP/s, same bytes {data0 == data}")
    print("  encode by analysis precision: " + ", ".join(f"{p} {mp / t:.1f} MP/s" for p, t in tp.items())
          + f" (default here: {encoder_precision(None, torch.device(a.device))})")
    print("  encode by tiles per analysis call: " + ", ".join(f"batch {b} {mp / t:.1f} MP/s" for b, t in batches.items()))
    print(f"  analysis transform alone: fp32 {4 * 1.048576 / ta32:.0f} MP/s, bf16 {4 * 1.048576 / ta16:.0f} MP/s")
    full = 25000 * 17000 / 1e6
    print(f"  -> a 25000x17000 band: encode ~{full / (mp / te):.0f} s, decode ~{full / (mp / td):.0f} s at these rates")


if __name__ == "__main__":
    main()
