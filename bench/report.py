"""Prints ours ÷ baseline for every benchmark measured in this `make bench` run.

Ours: criterion's mean estimate (target/criterion/<id>/new/estimates.json).
Baseline: the JSON written by the bench/*_baseline.py scripts.
A ratio below 1 means asl is faster. Times are per iteration (criterion
benches) or per image (pipeline, train step).
"""

import glob
import json
import os
import platform

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CRITERION = os.path.join(ROOT, "target", "criterion")
BASELINES = os.path.join(ROOT, "target", "bench")


def ours_ns(bench_id, custom):
    """Criterion's estimate, or a custom bench's figure (target/bench/asl_*.json)."""
    if bench_id in custom:
        return custom[bench_id]
    path = os.path.join(CRITERION, bench_id, "new", "estimates.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["mean"]["point_estimate"]


def main():
    baselines, custom = {}, {}
    for path in sorted(glob.glob(os.path.join(BASELINES, "*_baseline.json"))):
        with open(path) as f:
            baselines.update(json.load(f))
    for path in sorted(glob.glob(os.path.join(BASELINES, "asl_*.json"))):
        with open(path) as f:
            custom.update(json.load(f))
    rows = [(k, v) for k, v in baselines.items() if not k.startswith("_")]
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {baselines.get('_threads', '?')}")
    print(f"{'benchmark':<42} {'asl (ms)':>12} {'baseline (ms)':>14} {'ratio':>8}")
    for bench_id, baseline_ns in rows:
        ours = ours_ns(bench_id, custom)
        if ours is None:
            print(f"{bench_id:<42} {'not run':>12} {baseline_ns / 1e6:>14.3f} {'-':>8}")
            continue
        print(f"{bench_id:<42} {ours / 1e6:>12.3f} {baseline_ns / 1e6:>14.3f} {ours / baseline_ns:>8.3f}")


if __name__ == "__main__":
    main()
