"""Write a prepared (normalised, float16 .npy) copy of a data root's train/ + ships/ scenes.

    python scripts/prepare_data.py ../shared/sar .data/sar

Training reads it like the GeoTIFF root (``data.root=.data/sar``) without GDAL. test/ is never copied.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sarcodec.data.scenes import prepare_dataset  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    n = prepare_dataset(sys.argv[1], sys.argv[2])
    print(f"{n} scenes prepared in {sys.argv[2]}")
