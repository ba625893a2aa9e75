"""Copy a trained checkpoint into the package as a bundled model and update the manifest.

    python scripts/bundle_model.py CHECKPOINT NAME [--alias default] [--notes "..."] [--base default-q2 [--int8]]

The checkpoint is re-saved under NAME (the id written into every .sarc it encodes) with float16
weights. ``--base`` stores only the weights that differ from that bundled model (a derived
checkpoint, e.g. a fast synthesis fitted to its latents), ``--int8`` those as int8 with a scale
per output channel. Keep the weights directory under 25 MB in total.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

import sarcodec  # noqa: E402
from sarcodec.container import atomic_write  # noqa: E402

WEIGHTS = ROOT / "src" / "sarcodec" / "weights"
LIMIT = 25 * 1024 * 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("name")
    ap.add_argument("--alias", action="append", default=[])
    ap.add_argument("--notes", default="")
    ap.add_argument("--base", default=None, help="a bundled model: store only the weights that differ from it")
    ap.add_argument("--int8", action="store_true", help="with --base: the differing weights as int8")
    a = ap.parse_args()
    m = sarcodec.load_model(a.checkpoint)
    obj = torch.load(a.checkpoint, weights_only=True)
    dest = WEIGHTS / f"{a.name}.pt"
    # float16 storage keeps four rate points inside the 25 MB budget; tables are rebuilt from the
    # rounded weights, so the bundled file is self-consistent
    sarcodec.save_checkpoint(m, dest, name=a.name, training=obj.get("training"), radiometry=obj.get("radiometry"),
                             metrics=obj.get("metrics"), half=a.base is None, base=a.base, int8=a.int8)
    check = sarcodec.load_model(dest)
    assert check.weights_hash() == m.weights_hash() and check.name == a.name  # m now holds the rounded weights
    man_path = WEIGHTS / "manifest.json"
    man = json.loads(man_path.read_text()) if man_path.is_file() else {"models": {}, "aliases": {}}
    man["models"][a.name] = {"file": dest.name, "arch": m.arch, "hash": m.weights_hash(), "notes": a.notes,
                             "lmbda": (obj.get("training") or {}).get("config", {}).get("lmbda")}
    if a.base:
        man["models"][a.name]["base"] = a.base
    for al in a.alias:
        man["aliases"][al] = a.name
    atomic_write(man_path, (json.dumps(man, indent=1) + "\n").encode(), force=True)
    total = sum(p.stat().st_size for p in WEIGHTS.glob("*.pt"))
    print(f"bundled {dest.name} ({dest.stat().st_size / 1e6:.1f} MB, hash {m.weights_hash()}); weights total {total / 1e6:.1f} MB")
    if total > LIMIT:
        sys.exit(f"weights exceed the 25 MB budget ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
