#!/usr/bin/env bash
# Reproduces the bundled default models (CPU, 2 threads; see weights/MODEL_CARD.md for what was run
# in this repository's history, including the schedule change of the base run).
#   1. base rate point, lambda 0.01
#   2. rate points fine-tuned from it (decaying lr, no warmup)
#   3. bundle as default-q1..q4 (q = increasing rate), alias "default" -> q2
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/sarcodec
STEPS_FT=${STEPS_FT:-500}
$S train -c configs/default.yaml -o runs/default-base "$@"
for L in 0.0025 0.01 0.04 0.12; do
  $S train -c configs/default.yaml -o runs/default-l$L lmbda=$L steps=$STEPS_FT lr=5.0e-5 warmup_steps=0 \
     val_every=250 init_from=runs/default-base/latest.pt
done
q=1
for L in 0.0025 0.01 0.04 0.12; do
  .venv/bin/python scripts/bundle_model.py runs/default-l$L/best.pt default-q$q --notes "lambda $L" \
     $([ $q = 2 ] && echo --alias default)
  q=$((q + 1))
done
