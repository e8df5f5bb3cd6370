"""Time from a preemption signal to a written checkpoint and an exited process, at the demo's size.

    python bench/preemption.py [--repeats 3] [--out target/bench/preemption.json]

Trains configs/demo.yaml (test_resnet at 64 px on the built-in synthetic set, 3,000 training
images) on the CPU, once as one process and once as two under torchrun. After the run's first
checkpoint it waits a moment, sends SIGTERM (to asl, or to torchrun, which passes it on), and
measures until the process has exited; it checks that the checkpoint was rewritten after the signal
and stands mid-epoch. The issue's goal: within 10 s.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASL = os.path.join(ROOT, "target", "release", "asl")
TORCHRUN = os.path.join(ROOT, ".venv", "bin", "torchrun")


def command(launcher, runs, data, name):
    train = [ASL, "train", "--config", "configs/demo.yaml", "--no-progress", "--runs", runs, "--data", data,
             "--set", f"name={name}", "--set", "device=cpu"]
    if launcher == "torchrun":
        return [TORCHRUN, "--standalone", "--nproc-per-node=2", "--no-python"] + train
    return train


def once(launcher, runs, data, name):
    state = os.path.join(runs, name, "checkpoints", "last", "state.json")
    process = subprocess.Popen(command(launcher, runs, data, name), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not os.path.exists(state):
        if process.poll() is not None:
            sys.exit(f"{launcher}: the run ended before its first checkpoint")
        time.sleep(0.01)
    time.sleep(2.0)
    signalled = time.time()
    process.send_signal(signal.SIGTERM)
    status = process.wait()
    exited = time.time()
    with open(state) as f:
        saved = json.load(f)
    written = os.path.getmtime(state)
    return {
        "launcher": launcher,
        "seconds_to_exit": exited - signalled,
        "checkpoint_after_signal": written >= signalled,
        "seconds_to_checkpoint": written - signalled,
        "epoch": saved["epoch"] + 1,
        "batch_in_epoch": saved["batch_in_epoch"],
        "exit_status": status,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(ROOT, "target", "bench", "preemption.json"))
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="asl-preemption-")
    try:
        data = os.path.join(work, "data")
        subprocess.run([ASL, "synth", "--out", data, "--train-images", "3000", "--val-images", "500"], check=True,
                       stdout=subprocess.DEVNULL)
        results = []
        for launcher in ["asl", "torchrun"]:
            for i in range(args.repeats):
                result = once(launcher, os.path.join(work, "runs"), data, f"{launcher}{i}")
                print(json.dumps(result), flush=True)
                results.append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
