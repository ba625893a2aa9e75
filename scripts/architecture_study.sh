#!/usr/bin/env bash
# The architecture study at a matched training budget: every architecture of the registry, its
# configs/<arch>.yaml model, trained with the same data (train/ + ships/, mexico-b held out), the
# same budget in patches (STEPS x 8 patches of 128^2), the same lr (2e-4; the configs' own lrs are
# tuned for long runs) and two rate points (lambda 0.004 and 0.03), then measured by
# `sarcodec benchmark` on test/ against JPEG 2000. Two trainings run side by side, one thread each.
# Output: runs/arch-study/<arch>-l<lambda>/ and docs/architecture-study/ (report.md, results.json).
#   STEPS=600 scripts/architecture_study.sh        # the CPU budget of the committed report
#   DEVICE=cuda STEPS=15000 scripts/architecture_study.sh   # a GPU budget (trains and times on the GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/sarcodec
STEPS=${STEPS:-600}
OUT=${OUT:-runs/arch-study}
ARCHS=${ARCHS:-"baseline resnet-lite residual attention hyperprior"}
DEVICE=${DEVICE:-cpu}
mkdir -p "$OUT"
train() {  # arch lambda
  OMP_NUM_THREADS=1 $S train -c "configs/$1.yaml" -o "$OUT/$1-l$2" --device "$DEVICE" lmbda="$2" steps="$STEPS" \
    batch_size=8 patch_size=128 lr=2.0e-4 warmup_steps=50 val_every="$STEPS" threads=1 tensorboard=false \
    > "$OUT/$1-l$2.log" 2>&1
}
for A in $ARCHS; do
  train "$A" 0.004 &
  train "$A" 0.03 &
  wait
  tail -n 2 "$OUT/$A-l0.004.log" "$OUT/$A-l0.03.log"
done
MODELS=()
for A in $ARCHS; do MODELS+=(--models "$A=$OUT/$A-l0.004/latest.pt,$OUT/$A-l0.03/latest.pt"); done
$S benchmark "${MODELS[@]}" --codecs jpeg2000 --no-gallery --device "$DEVICE" --out "${REPORT:-docs/architecture-study}"
