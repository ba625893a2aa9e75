#!/usr/bin/env bash
# Train the bundled default models on one lent GPU (the workplace's `device` tool), in two phases
# that each fit one 10-minute call:
#   scripts/gpu_train.sh base SECONDS      fp32-vs-bf16 throughput check, then the base rate point
#   scripts/gpu_train.sh finetune SECONDS  the four rate points fine-tuned from it, in parallel
#   scripts/gpu_train.sh families SECONDS  the four shipped rate points fine-tuned on every product family
#                                          (data.balance=family, 256 px: 64/128 px
#                                          patches make whole-scene coding worse although patch loss falls)
#   scripts/gpu_train.sh distill SECONDS   fast (lite) syntheses fitted to the frozen latents of the four
#                                          shipped rate points, plus a narrower and a wider one for q2,
#                                          six processes on the one GPU (scripts/distill.py); brings back
#                                          derived checkpoints (new weights only) and one log
#   scripts/gpu_train.sh highrate SECONDS  q3 and q4 again from scratch, in parallel, with a complete
#                                          latent (M >= 256 channels for 256 pixels: speckle is nearly
#                                          white, so M=144 might cap PSNR at high rates). Tried once:
#                                          lost to the fine-tuned M=144 models on validation (model card)
# Data: a prepared copy of train/ + ships/ (scripts/prepare_data.py ../shared/sar .data/sar), carried
# with the call along with wheels of the packages the machine lacks (.whl: constriction, pytorch-msssim).
# Checkpoints and logs go to $OUT (and runs/gpu-*, which a warm machine keeps between calls).
set -uo pipefail
PHASE=$1
BUDGET=$2
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
train() { python3 -c 'import sys; from sarcodec.cli import main; main(sys.argv[1:])' train -c configs/default.yaml --device cuda \
  data.root=.data/sar steps=10000000 "$@"; }
pps() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['patches_per_s'])" "$1/summary.json"; }
# rate_points PREFIX FIRST_Q "LAMBDAS" [overrides...]: one run per lambda, in parallel on the one GPU,
# each for $BUDGET seconds; brings back each best.pt plus one log (the device returns <= 8 files).
rate_points() {
  local prefix=$1 q=$2 lambdas=$3 first=$2
  shift 3
  for L in $lambdas; do
    train -o runs/gpu-$prefix$q lmbda=$L time_budget_s="$BUDGET" seed=$q "$@" > runs/gpu-$prefix$q.log 2>&1 &
    q=$((q + 1))
  done
  wait
  for ((i = first; i < q; i++)); do
    { echo "== $prefix$i"; cat runs/gpu-$prefix$i/summary.json; grep -E "usable|val step|done|rror" runs/gpu-$prefix$i.log; } \
      >> "$OUT/$prefix-runs.log"
    cp runs/gpu-$prefix$i/best.pt "$OUT/$prefix$i.pt"
  done
  grep -E "== |done|rror" "$OUT/$prefix-runs.log"
}
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader

if [ "$PHASE" = base ]; then
  train -o /tmp/ab-fp32 lmbda=0.02 time_budget_s=15 threads=8 > "$OUT/ab-fp32.log" 2>&1
  train -o /tmp/ab-bf16 lmbda=0.02 time_budget_s=15 threads=8 amp=bf16 > "$OUT/ab-bf16.log" 2>&1
  F=$(pps /tmp/ab-fp32); B=$(pps /tmp/ab-bf16)
  AMP=$(python3 -c "print('bf16' if $B > 1.2 * $F else 'null')")
  echo "throughput (batch 16 x 256^2, includes start-up): fp32/tf32 $F patches/s, bf16 $B patches/s -> amp=$AMP" | tee "$OUT/ab.txt"
  train -o runs/gpu-base lmbda=0.02 lr=2.0e-4 warmup_steps=500 time_budget_s="$BUDGET" threads=8 amp="$AMP" 2>&1 | tee "$OUT/base.log" | grep -E "val|done|error|Error"
  cp runs/gpu-base/latest.pt "$OUT/base.pt"; cp runs/gpu-base/summary.json "$OUT/base-summary.json"
  echo "$AMP" > runs/gpu-base/amp
elif [ "$PHASE" = finetune ]; then
  INIT=${INIT:-runs/gpu-base/latest.pt}
  AMP=$(cat runs/gpu-base/amp 2>/dev/null || echo bf16)
  rate_points q 1 "0.003 0.01 0.035 0.13" lr=1.0e-4 warmup_steps=100 threads=3 amp="$AMP" init_from="$INIT"
elif [ "$PHASE" = families ]; then
  # from the bundled weights; validation on a held-out location of each test family
  for q in 1 2 3 4; do cp src/sarcodec/weights/default-q$q.pt /tmp/init-q$q.pt; done
  q=1
  for L in 0.003 0.01 0.035 0.13; do
    train -o runs/gpu-fam$q lmbda=$L time_budget_s="$BUDGET" seed=$q lr=5.0e-5 warmup_steps=100 threads=3 amp=bf16 \
      init_from=/tmp/init-q$q.pt data.balance=family "data.patch_sizes=[256]" \
      "data.val_locations=[mexico-b,sen1floods11-spain-6860600,sar2sar-ramb]" > runs/gpu-fam$q.log 2>&1 &
    q=$((q + 1))
  done
  wait
  for i in 1 2 3 4; do
    { echo "== fam$i"; cat runs/gpu-fam$i/summary.json; grep -E "usable|val step|done|rror" runs/gpu-fam$i.log; } >> "$OUT/fam-runs.log"
    cp runs/gpu-fam$i/best.pt "$OUT/fam$i.pt"
  done
elif [ "$PHASE" = distill ]; then
  DEVICE=${DEVICE:-cuda}
  mkdir -p runs
  d() {
    python3 scripts/distill.py "$1" -o "runs/gpu-$2" --data .data/sar --device "$DEVICE" --time-budget "$BUDGET" \
      --threads 2 --batch 32 "${@:3}" > "runs/gpu-$2.log" 2>&1
    cp "runs/gpu-$2/best.pt" "$OUT/$2.pt"
  }
  # Δ ranges: q1 serves qualities 0-1.5 (Δ up to 2^3), q4 3.5-5 (Δ down to 2^-1), the others k ± 1/2
  d default-q1 fast-q1 --log2-delta=-0.5,3 &
  d default-q2 fast-q2 &
  d default-q3 fast-q3 &
  d default-q4 fast-q4 --log2-delta=-1,0.5 &
  d default-q2 fast-q2-narrow --channels 32,48,32,12 &
  d default-q2 fast-q2-wide --channels 64,96,48,24 &
  wait
  for r in fast-q1 fast-q2 fast-q3 fast-q4 fast-q2-narrow fast-q2-wide; do
    { echo "== $r"; grep -vi warn "runs/gpu-$r.log"; } >> "$OUT/distill-runs.log"
  done
  grep -E "== |best_psnr" "$OUT/distill-runs.log" | cut -c1-300
elif [ "$PHASE" = highrate ]; then
  rate_points hq 3 "0.035 0.13" model.base_channels=88 model.latent_channels=272 lr=2.0e-4 warmup_steps=500 \
    threads=6 amp=bf16
fi
