#!/usr/bin/env bash
# `make bench-audit`: asl audit on synthetic multi-label data with known label corruptions, against the raw
# out-of-sample probability, cleanlab on the same probabilities, and the in-sample probabilities of one full
# training run; then the relabeled recipe against the noisy labels (clean validation mAP, SEEDS seeds each),
# and the audit's wall time against K × one training. Two settings: corruptions spread evenly over the
# classes, and each class with rates of its own (bench/corrupt_coco.py --by-class).
# Writes target/bench/audit/<setting>/ and prints one table. Environment: TRAIN (2000), EPOCHS (8),
# FOLDS (4), SEEDS (8).
set -euo pipefail
cd "$(dirname "$0")/.."
ASL=./target/release/asl PY=.venv/bin/python
TRAIN=${TRAIN:-2000} EPOCHS=${EPOCHS:-8} FOLDS=${FOLDS:-4} SEEDS=${SEEDS:-8}
ROOT=target/bench/audit
rm -rf "$ROOT" && mkdir -p "$ROOT"
sets=(--set train.epochs="$EPOCHS" --set schedule.scheduled_epochs="$EPOCHS")
for setting in even by-class; do
  dir=$ROOT/$setting
  mkdir -p "$dir"
  $ASL synth --out "$dir/data" --train-images "$TRAIN" --val-images 500 --classes 12 > /dev/null
  flag=(); [ "$setting" = by-class ] && flag=(--by-class)
  $PY bench/corrupt_coco.py "$dir/data" --truth "$dir/truth.csv" "${flag[@]}" | tee "$dir/corruptions.txt"
  start=$(date +%s.%N)
  $ASL audit --config configs/demo.yaml --data "$dir/data" --folds "$FOLDS" --out "$dir/out" --max-suspects 1000000 \
    --no-progress --set seed=0 "${sets[@]}" > "$dir/audit.log"
  audit_s=$(awk -v a="$(date +%s.%N)" -v b="$start" 'BEGIN { printf "%.1f", a - b }')
  for seed in $(seq 0 $((SEEDS - 1))); do
    start=$(date +%s.%N)
    $ASL train --config configs/demo.yaml --data "$dir/data" --runs "$dir/runs" --no-progress --set name="noisy-$seed" \
      --set seed="$seed" "${sets[@]}" > "$dir/noisy-$seed.log"
    [ "$seed" = 0 ] && train_s=$(awk -v a="$(date +%s.%N)" -v b="$start" 'BEGIN { printf "%.1f", a - b }')
    $ASL train --config "$dir/out/relabeled.yaml" --runs "$dir/runs" --no-progress --set name="relabeled-$seed" \
      --set seed="$seed" > "$dir/relabeled-$seed.log"
  done
  # In-sample probabilities: the first noisy run's model on its own training images, in images.txt's order.
  $ASL infer --model "$dir/runs/noisy-0/checkpoints/last" --device cpu --top-k 12 --out "$dir/in_sample.jsonl" \
    "$dir/out/images.txt" 2> /dev/null
  $PY - "$dir" <<'PY'
import json, sys, numpy as np
d = sys.argv[1]
classes = [l.rstrip("\n") for l in open(f"{d}/out/classes.txt")]
rows = [json.loads(l) for l in open(f"{d}/in_sample.jsonl")]
p = np.zeros((len(rows), len(classes)), dtype=np.float32)
for i, r in enumerate(rows):
    for label in r["labels"]:
        p[i, classes.index(label["name"])] = label["probability"]
np.save(f"{d}/in_sample.npy", p)
PY
  $PY bench/audit_quality.py "$dir/out" "$dir/data/annotations/instances_train.json" "$dir/truth.csv" \
    --in-sample "$dir/in_sample.npy" --json "$dir/quality.json" > /dev/null
  echo "$audit_s $train_s" > "$dir/times.txt"
done
$PY - "$ROOT" "$SEEDS" "$FOLDS" <<'PY'
import json, os, re, sys
root, seeds, folds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def best(log):
    return float(re.search(r"best mAP ([0-9.]+)", open(log).read()).group(1))
print("| setting | ranking | missing-label AP | wrong-label AP | per-image AP |")
print("|---|---|---|---|---|")
for setting in ("even", "by-class"):
    q = json.load(open(f"{root}/{setting}/quality.json"))
    for name, row in q.items():
        print(f"| {setting} | {name} | {row['missing_ap']:.3f} | {row['wrong_ap']:.3f} | {row['image_ap']:.3f} |")
print()
print("| setting | corruptions | clean val mAP, noisy labels | relabeled.yaml | relabeled − noisy, same seed: mean ± s.e. (higher in) | audit wall time | one training | audit ÷ (K × one training) |")
print("|---|---|---|---|---|---|---|---|")
for setting in ("even", "by-class"):
    d = f"{root}/{setting}"
    noisy = [best(f"{d}/noisy-{s}.log") for s in range(seeds)]
    relabeled = [best(f"{d}/relabeled-{s}.log") for s in range(seeds)]
    audit_s, train_s = map(float, open(f"{d}/times.txt").read().split())
    fmt = lambda v: f"{sum(v) / len(v):.2f} ({', '.join(f'{x:.2f}' for x in v)})"
    gain = [r - n for r, n in zip(relabeled, noisy)]
    mean = sum(gain) / seeds
    se = (sum((g - mean) ** 2 for g in gain) / (seeds - 1) / seeds) ** 0.5 if seeds > 1 else float("nan")
    paired = f"{mean:+.2f} ± {se:.2f} ({sum(g > 0 for g in gain)} of {seeds})"
    print(f"| {setting} | {open(f'{d}/corruptions.txt').read().strip()} | {fmt(noisy)} | {fmt(relabeled)} | {paired} | {audit_s:.0f} s | {train_s:.0f} s | {audit_s / (folds * train_s):.2f} |")
PY
