#!/usr/bin/env bash
# Reproduces the bundled default models with the step counts of the shipped GPU run (see
# scripts/gpu_train.sh for the time-budgeted version that ran on one H100, and
# src/sarcodec/weights/MODEL_CARD.md for what was measured):
#   1. base rate point, lambda 0.02, 16.5k steps of 16 x 256^2
#   2. four rate points fine-tuned from it (8.7k steps each, lr 1e-4, short warmup)
#   3. bundle as default-q1..q4 (q = increasing rate), alias "default" -> q2
# On a CPU this takes days; pass --device cuda (and amp=bf16) where a GPU is available.
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/sarcodec
STEPS_FT=${STEPS_FT:-8700}
$S train -c configs/default.yaml -o runs/default-base "$@"
for L in 0.003 0.01 0.035 0.13; do
  $S train -c configs/default.yaml -o runs/default-l$L lmbda=$L steps=$STEPS_FT lr=1.0e-4 warmup_steps=100 \
     init_from=runs/default-base/latest.pt "$@"
done
q=1
for L in 0.003 0.01 0.035 0.13; do
  .venv/bin/python scripts/bundle_model.py runs/default-l$L/best.pt default-q$q --notes "lambda $L" \
     $([ $q = 2 ] && echo --alias default)
  q=$((q + 1))
done
