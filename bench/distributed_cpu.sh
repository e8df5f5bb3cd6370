#!/usr/bin/env bash
# The demo run on this machine's CPU cores, two ways, in one go:
#   1 process  × 2 threads (libtorch and the loader) against
#   2 processes × 1 thread each, launched by torchrun over Gloo.
# Prints each run's training images/s (epochs 2 onwards; epoch 1 warms up)
# and the ratio (2 processes ÷ 1). Needs `make build` and the synthetic data
# (`make train` writes it). EPOCHS=20 by default, as the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-20}
DATA=${DATA:-runs/data/synth}
OUT=${OUT:-target/bench/distributed_cpu}
rm -rf "$OUT" && mkdir -p "$OUT"
test -f "$DATA/annotations/instances_val.json" || ./target/release/asl synth --out "$DATA" --train-images 3000 --val-images 500
common=(train --config configs/demo.yaml --data "$DATA" --runs "$OUT" --no-progress
        --set device=cpu --set train.epochs="$EPOCHS" --set schedule.scheduled_epochs="$EPOCHS")

OMP_NUM_THREADS=2 ./target/release/asl "${common[@]}" --set name=one --set data.threads=2 > "$OUT/one.log"
OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc-per-node=2 --no-python ./target/release/asl \
  "${common[@]}" --set name=two --set data.threads=1 > "$OUT/two.log" 2> "$OUT/two.err"

.venv/bin/python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def speed(run):
    history = json.load(open(f"{out}/{run}/checkpoints/last/state.json"))["history"]
    rates = [r["images_per_second"] for r in history[1:]]
    return sum(rates) / len(rates), history[-1]["map"]
(one, map1), (two, map2) = speed("one"), speed("two")
print(f"1 process x 2 threads:  {one:7.1f} img/s  (final mAP {map1:.2f})")
print(f"2 processes x 1 thread: {two:7.1f} img/s  (final mAP {map2:.2f})")
print(f"ratio (2 processes / 1): {two / one:.2f}")
PY
