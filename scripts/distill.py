"""Fit a fast synthesis (default ``lite``) to a bundled model's frozen latents.

    python scripts/distill.py default-q2 -o runs/fast-q2 [--data ../shared/sar | .data/sar]
        [--time-budget 600 | --steps 20000] [--device cuda] [--channels 48,64,40,16]
        [--log2-delta -0.5,0.5] [--batch 16] [--patch 256] [--lr 2e-3]

Writes ``best.pt`` / ``latest.pt`` (full checkpoints of the student), ``state.pt`` (resume: run the
same command again) and ``summary.json``. Bundle a result with
``scripts/bundle_model.py RUN/best.pt fast-q2 --base default-q2``. See
:mod:`sarcodec.training.distill`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sarcodec import load_model  # noqa: E402
from sarcodec.data.scenes import default_data_dir  # noqa: E402
from sarcodec.errors import SarcodecError  # noqa: E402
from sarcodec.training.distill import DistillConfig, distill_on_directory  # noqa: E402


def floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in s.split(","))
    except ValueError:
        raise SarcodecError(f"expected comma-separated numbers, got {s!r}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("teacher")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--data", default=None)
    ap.add_argument("--time-budget", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--synthesis", default="lite")
    ap.add_argument("--channels", default=None)
    ap.add_argument("--log2-delta", default="-0.5,0.5")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--teacher-weight", type=float, default=0.0)
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    data = a.data or default_data_dir()
    if data is None:
        sys.exit("no data: give --data (a data root or a prepared copy)")
    cfg = DistillConfig(synthesis=a.synthesis, channels=tuple(int(v) for v in floats(a.channels)) if a.channels else None,
                        steps=a.steps or (10**9 if a.time_budget else 20000), time_budget_s=a.time_budget,
                        batch_size=a.batch, patch_size=a.patch, lr=a.lr, teacher_weight=a.teacher_weight,
                        log2_delta=floats(a.log2_delta), val_every=a.val_every, threads=a.threads, seed=a.seed)
    summary = distill_on_directory(load_model(a.teacher), cfg, data, a.out, device=a.device)
    print(summary)


if __name__ == "__main__":
    try:
        main()
    except SarcodecError as e:  # an unknown teacher, missing data, bad options: one line and its exit code
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
