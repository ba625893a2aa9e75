"""Fuzz the .sarc container at scale and print the outcome table (the test suite runs a small
seeded version: tests/test_fuzz.py).

    python benchmarks/fuzz.py [--random 1000] [--forged 1000] [--seed 0] [--model default]

Mutants: random byte flips / cuts / insertions; forged footers (a field replaced by a hostile
value, deep nesting, a zlib bomb) and forged payload / mask / layer bytes, all with checksums
recomputed; payloads moved between tile positions. Findings (uncaught exceptions, decodes slower
than --time-limit seconds, wrong shapes) are listed; the goal is none.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import sarcodec  # noqa: E402
from sarcodec.fuzz import fuzz_container  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--random", type=int, default=1000)
    ap.add_argument("--forged", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="default")
    ap.add_argument("--time-limit", type=float, default=10.0)
    a = ap.parse_args()
    t = time.perf_counter()
    r = fuzz_container(sarcodec.load_model(a.model), a.random, a.forged, a.seed, a.time_limit)
    print(f"{'kind':8s} {'total':>6s} {'FormatError':>12s} {'Input/Model':>12s} {'decoded':>8s}")
    for k, c in r["counts"].items():
        print(f"{k:8s} {c['total']:6d} {c['format_error']:12d} {c['input_error']:12d} {c['decoded']:8d}")
    for k in ("uncaught", "slow", "wrong_shape"):
        print(f"{k}: {len(r[k])}")
        for x in r[k][:20]:
            print("   ", x[:3])
    print(f"{time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
