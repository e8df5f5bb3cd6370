#!/usr/bin/env bash
# The GPU check, run once on the borrowed GPU machine from the repo root
# (see ../shared/device/GPU.md; `make gpu-stage` prepares .device/ here):
#   1. `asl train` of tresnet_l at 448 with AMP on coco-mini (train split
#      repeated TIMES times), EPOCHS epochs, the last one timed;
#   2. bench/train_gpu_baseline.py --best: the same in PyTorch/timm at its
#      own best (channels_last, fused Adam, TF32, cudnn.benchmark), same
#      batch, same weights, workers = our threads;
#   3. the loss bench at [128, 80] and [64, 9605] on CUDA, ours and timm's;
#   4. bench/gpu_report.py: one table of figures and ratios.
# GPU memory is sampled with nvidia-smi around each training run.
# Environment overrides (for a CPU smoke test): MODEL SIZE BATCH THREADS
# TIMES EPOCHS DEVICE PY STAGE WORK OUT.
set -u -o pipefail
OUT=${OUT:-$PWD/target/gpu-out}
STAGE=${STAGE:-.device}
MODEL=${MODEL:-tresnet_l} SIZE=${SIZE:-448} BATCH=${BATCH:-56} THREADS=${THREADS:-12}
TIMES=${TIMES:-6} EPOCHS=${EPOCHS:-2} DEVICE=${DEVICE:-cuda} PY=${PY:-python3}
WORK=${WORK:-/tmp/asl-gpu}
rm -rf "$WORK" && mkdir -p "$WORK" "$OUT"
export LD_LIBRARY_PATH=$($PY -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export CRITERION_HOME=$WORK/criterion PYTHONUNBUFFERED=1

has_smi() { command -v nvidia-smi >/dev/null; }
memory_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }
# Samples the GPU's used memory every 100 ms into $WORK/memory_<name>.csv while a run lasts.
sample_memory() {
  has_smi || return 0
  memory_used > "$WORK/memory_$1_idle.txt"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$WORK/memory_$1.csv" &
  SAMPLER=$!
}
stop_sampling() { has_smi && kill "$SAMPLER" 2>/dev/null; wait 2>/dev/null; return 0; }

{ has_smi && nvidia-smi; nproc; } > "$OUT/machine.txt" 2>&1
$STAGE/asl info || exit 1
$PY bench/repeat_coco.py --src "$STAGE/coco-mini" --dst "$WORK/coco" --times "$TIMES" || exit 1
$PY models/export.py --model "$MODEL" --num-classes 80 --img-size "$SIZE" --out "$WORK/model.pt" || exit 1

echo "== asl train"
sample_memory asl
$STAGE/asl train --config configs/coco.yaml --data "$WORK/coco" --runs "$WORK/runs" --no-progress \
  --set name=gpu --set model.path="$WORK/model.pt" --set device="$DEVICE" --set data.image_size="$SIZE" \
  --set data.batch_size="$BATCH" --set data.val_batch_size="$BATCH" --set data.threads="$THREADS" \
  --set data.drop_last=true --set train.epochs="$EPOCHS" 2>&1 | tee "$OUT/asl_train.log"
stop_sampling

echo "== PyTorch baseline"
sample_memory baseline
$PY bench/train_gpu_baseline.py --best --model "$WORK/model.pt" --timm "$MODEL" --data "$WORK/coco" --size "$SIZE" \
  --batch "$BATCH" --workers "$THREADS" --epochs "$EPOCHS" --device "$DEVICE" \
  --out "$WORK/baseline_train.json" 2>&1 | tee "$OUT/baseline_train.log"
stop_sampling

echo "== loss benches"
$STAGE/loss_bench --bench _cuda 2>&1 | tee "$OUT/loss_bench.log"
$PY bench/loss_baseline.py --device "$DEVICE" --out "$WORK/loss_baseline.json" 2>&1 | tee -a "$OUT/loss_bench.log"

$PY bench/gpu_report.py --work "$WORK" --out "$OUT/summary.json" 2>&1 | tee "$OUT/summary.txt"
