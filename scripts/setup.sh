#!/usr/bin/env bash
# One-shot, repeatable set-up: a virtual environment in .venv with pinned dependencies.
#   * torch 2.13.0 (CPU build; installed first so that nothing pulls a CUDA build)
#   * everything else pinned by constraints.txt (numpy 2, constriction, rasterio, imagecodecs,
#     pytorch-msssim, typer, rich, pyyaml, scipy, numba; pytest and the notebook runner nbclient +
#     ipykernel for the tests; tensorboard for training logs)
# Idempotent: re-running only installs what changed. PYTHON overrides the interpreter (>= 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "sarcodec needs Python >= 3.11"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=24"
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev,train]"
.venv/bin/python -c "import sarcodec, torch; print('sarcodec', sarcodec.__version__, '| torch', torch.__version__)"
