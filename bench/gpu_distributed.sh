#!/usr/bin/env bash
# The distributed check for the borrowed GPU machine (one GPU, so NCCL runs
# with world size 1: its communicator, streams and the Reducer, against no
# process group), from the repo root after `make gpu-stage`:
#   1. `asl train` of MODEL at SIZE with AMP, no process group;
#   2. the same under torchrun --nproc-per-node=1 (NCCL), gradient buckets
#      of 25 MiB (PyTorch's default), then 1 and 100 MiB (a bucket sweep).
# Each run trains EPOCHS epochs on coco-mini's train split repeated TIMES
# times; the last epoch's images/s is compared.
#   3. The stop agreement on NCCL (world 1): SIGTERM raised at step 5
#      (ASL_FAULT) must stop the run after step 6 with status 75.
#   4. Where 2 GPUs exist: 2 NCCL ranks, rank 1 stopped with SIGSTOP after
#      the first checkpoint (alive, sockets open, heartbeat silent); rank 0
#      must exit non-zero naming "lost rank 1" within the heartbeat timeout
#      (HEARTBEAT, 10 s) plus 2 s. With one GPU it says so and skips.
# Environment overrides (for
# a CPU smoke test, where torchrun's group is Gloo): MODEL SIZE BATCH
# THREADS TIMES EPOCHS DEVICE PY STAGE WORK OUT.
set -u -o pipefail
OUT=${OUT:-$PWD/target/gpu-out}
STAGE=${STAGE:-.device}
MODEL=${MODEL:-tresnet_l} SIZE=${SIZE:-448} BATCH=${BATCH:-56} THREADS=${THREADS:-12}
TIMES=${TIMES:-4} EPOCHS=${EPOCHS:-2} DEVICE=${DEVICE:-cuda} PY=${PY:-python3}
WORK=${WORK:-/tmp/asl-gpu-dist}
rm -rf "$WORK" && mkdir -p "$WORK" "$OUT"
export LD_LIBRARY_PATH=$($PY -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
$PY bench/repeat_coco.py --src "$STAGE/coco-mini" --dst "$WORK/coco" --times "$TIMES" || exit 1
$PY models/export.py --model "$MODEL" --num-classes 80 --img-size "$SIZE" --out "$WORK/model.pt" || exit 1

train() { # name, launcher words..., then --set overrides after "--"
  local name=$1; shift
  local launcher=()
  while [ "$1" != "--" ]; do launcher+=("$1"); shift; done; shift
  "${launcher[@]}" "$STAGE/asl" train --config configs/coco.yaml --data "$WORK/coco" --runs "$WORK/runs" \
    --no-progress --set name="$name" --set model.path="$WORK/model.pt" --set device="$DEVICE" \
    --set data.image_size="$SIZE" --set data.batch_size="$BATCH" --set data.val_batch_size="$BATCH" \
    --set data.threads="$THREADS" --set data.drop_last=true --set train.epochs="$EPOCHS" "$@" \
    2>&1 | tee "$OUT/dist_$name.log"
}
torchrun=($PY -m torch.distributed.run --standalone --nproc-per-node=1 --no-python)
train plain env --
train nccl_25 "${torchrun[@]}" -- --set distributed.bucket_mb=25
train nccl_1 "${torchrun[@]}" -- --set distributed.bucket_mb=1
train nccl_100 "${torchrun[@]}" -- --set distributed.bucket_mb=100

$PY - "$WORK/runs" <<'PY' | tee "$OUT/dist_summary.txt"
import json, sys
runs = sys.argv[1]
def last(name):
    return json.load(open(f"{runs}/{name}/checkpoints/last/state.json"))["history"][-1]
plain = last("plain")["images_per_second"]
print(f"no process group:          {plain:8.1f} img/s")
for name, label in [("nccl_25", "NCCL world 1, 25 MiB"), ("nccl_1", "NCCL world 1, 1 MiB"), ("nccl_100", "NCCL world 1, 100 MiB")]:
    speed = last(name)["images_per_second"]
    print(f"{label:26s} {speed:8.1f} img/s   overhead {100 * (plain / speed - 1):+.1f}%")
PY

# 3. The stop agreement through the store with NCCL's asynchronous host: a request at step 5 stops after step 6.
export ASL_FAULT="SIGTERM@step=5"
train stop "${torchrun[@]}" -- --set train.epochs=1 >/dev/null
unset ASL_FAULT
stopped_at=$($PY -c 'import json, sys; print(json.load(open(sys.argv[1]))["optimizer_step"])' \
  "$WORK/runs/stop/checkpoints/last/state.json" 2>/dev/null)
if [ "$stopped_at" = 6 ]; then
  echo "NCCL stop agreement: stopped after step 6: PASS" | tee -a "$OUT/dist_summary.txt"
else
  echo "NCCL stop agreement: stopped after step '${stopped_at}': FAIL (see dist_stop.log)" | tee -a "$OUT/dist_summary.txt"
fi

# 4. A lost rank named on NCCL (2 GPUs or more).
GPUS=$($PY -c 'import torch; print(torch.cuda.device_count())')
HEARTBEAT=${HEARTBEAT:-10}
if [ "$DEVICE" = cuda ] && [ "$GPUS" -ge 2 ]; then
  PORT=$((29500 + RANDOM % 1000))
  pids=()
  for rank in 0 1; do
    RANK=$rank WORLD_SIZE=2 LOCAL_RANK=$rank LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT \
      "$STAGE/asl" train --config configs/coco.yaml --data "$WORK/coco" --runs "$WORK/runs" --no-progress \
      --set name=lost --set model.path="$WORK/model.pt" --set device=cuda --set data.image_size="$SIZE" \
      --set data.batch_size="$BATCH" --set data.val_batch_size="$BATCH" --set data.threads="$THREADS" \
      --set train.epochs=40 --set distributed.heartbeat_timeout_s="$HEARTBEAT" >"$OUT/lost_rank$rank.log" 2>&1 &
    pids+=($!)
  done
  until [ -f "$WORK/runs/lost/checkpoints/last/state.json" ] || ! kill -0 "${pids[0]}" 2>/dev/null; do sleep 1; done
  kill -STOP "${pids[1]}"
  stopped=$(date +%s.%N)
  wait "${pids[0]}"; status=$?
  elapsed=$(awk -v a="$(date +%s.%N)" -v b="$stopped" 'BEGIN { printf "%.1f", a - b }')
  kill -KILL "${pids[1]}"
  if [ $status -ne 0 ] && grep -q "lost rank 1" "$OUT/lost_rank0.log" && \
     awk -v e="$elapsed" -v h="$HEARTBEAT" 'BEGIN { exit !(e < h + 2) }'; then
    echo "NCCL lost rank: named in ${elapsed} s (heartbeat timeout ${HEARTBEAT} s): PASS" | tee -a "$OUT/dist_summary.txt"
  else
    echo "NCCL lost rank: status $status after ${elapsed} s: FAIL (see lost_rank0.log)" | tee -a "$OUT/dist_summary.txt"
  fi
else
  echo "NCCL lost rank: skipped, $GPUS GPU(s) here (needs 2)" | tee -a "$OUT/dist_summary.txt"
fi
