"""Collects the figures of bench/gpu.sh into one table and summary.json.

Training: the last epoch of each run (the first warms up), from asl's
checkpoint state.json and bench/train_gpu_baseline.py's JSON. GPU memory:
peak nvidia-smi `memory.used` during the run minus its value just before.
Loss: criterion's mean for ids ending in `_cuda` against the baseline JSON.
Ratios are ours ÷ baseline in time per image or per iteration: below 1,
asl is faster.
"""

import argparse
import glob
import json
import os


def read_json(path):
    with open(path) as f:
        return json.load(f)


def peak_memory_mib(work, name):
    samples, idle = os.path.join(work, f"memory_{name}.csv"), os.path.join(work, f"memory_{name}_idle.txt")
    if not os.path.exists(samples):
        return None
    with open(samples) as f:
        values = [int(line) for line in f if line.strip().isdigit()]
    with open(idle) as f:
        return max(values) - int(f.read().strip()) if values else None


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    ours = read_json(os.path.join(args.work, "runs", "gpu", "checkpoints", "last", "state.json"))["history"][-1]
    baseline_run = read_json(os.path.join(args.work, "baseline_train.json"))
    baseline = baseline_run["epochs"][-1]
    summary = {
        "device": baseline_run["device"],
        "train": {
            "epoch_timed": ours["epoch"],
            "asl_images_per_second": ours["images_per_second"],
            "baseline_images_per_second": baseline["images_per_second"],
            "ratio_time_per_image": baseline["images_per_second"] / ours["images_per_second"],
            "asl_data_wait_fraction": ours["data_wait_fraction"],
            "baseline_data_wait_fraction": baseline["data_wait_fraction"],
            "asl_peak_memory_mib": peak_memory_mib(args.work, "asl"),
            "baseline_peak_memory_mib": peak_memory_mib(args.work, "baseline"),
            "baseline_max_memory_allocated_gib": baseline_run.get("max_memory_allocated_gib"),
            "baseline_max_memory_reserved_gib": baseline_run.get("max_memory_reserved_gib"),
            "asl_loss": ours["train_loss"],
            "baseline_loss": baseline["loss"],
        },
        "loss": {},
    }
    loss_baseline = read_json(os.path.join(args.work, "loss_baseline.json"))
    for path in sorted(glob.glob(os.path.join(args.work, "criterion", "loss_fwd_bwd", "*", "new", "estimates.json"))):
        bench_id = "loss_fwd_bwd/" + path.split(os.sep)[-3]
        if bench_id in loss_baseline:
            ours_ns = read_json(path)["mean"]["point_estimate"]
            summary["loss"][bench_id] = {"asl_ms": ours_ns / 1e6, "baseline_ms": loss_baseline[bench_id] / 1e6,
                                         "ratio": ours_ns / loss_baseline[bench_id]}
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=2)
    t = summary["train"]
    print(f"device: {summary['device']}")
    print(f"train (epoch {t['epoch_timed']}): asl {t['asl_images_per_second']:.1f} img/s, "
          f"baseline {t['baseline_images_per_second']:.1f} img/s, ratio {t['ratio_time_per_image']:.3f}")
    print(f"data wait: asl {100 * t['asl_data_wait_fraction']:.1f}%, "
          f"baseline {100 * t['baseline_data_wait_fraction']:.1f}%")
    print(f"peak GPU memory (nvidia-smi): asl {t['asl_peak_memory_mib']} MiB, "
          f"baseline {t['baseline_peak_memory_mib']} MiB")
    for bench_id, row in summary["loss"].items():
        print(f"{bench_id}: asl {row['asl_ms']:.3f} ms, baseline {row['baseline_ms']:.3f} ms, "
              f"ratio {row['ratio']:.3f}")


if __name__ == "__main__":
    main()
