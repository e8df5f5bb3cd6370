"""PyTorch baselines for `make bench`, timed on this machine in the same run.

- loss_fwd_bwd/*: timm's AsymmetricLossMultiLabel with the settings of our
  default loss (gamma_neg=4, gamma_pos=0, clip=0.05, eps=1e-8, focusing
  weights without gradient, summed as the reference sums), forward + backward, on the same libtorch.
- metrics/map_40137x80: the ASL reference's numpy mAP (helper_functions.mAP).

With --device cuda only the loss runs, on the GPU and synchronised after
each iteration, under ids ending in `_cuda` (as benches/loss.rs names them).

Writes {benchmark id: mean nanoseconds per iteration} as JSON.
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "third_party"))
from asl_reference import mean_average_precision  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timm_asl import reference_asl  # noqa: E402


def mean_ns(fn, min_seconds=3.0, warmup=5):
    for _ in range(warmup):
        fn()
    iterations, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        fn()
        iterations += 1
    return (time.perf_counter() - start) / iterations * 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    cuda = args.device == "cuda"
    suffix = "_cuda" if cuda else ""
    results = {}
    loss = reference_asl()

    def step(logits, targets):
        loss(logits, targets).backward()
        if cuda:
            torch.cuda.synchronize()

    for batch, classes in [(128, 80), (64, 9605)]:
        torch.manual_seed(0)
        logits = (torch.randn(batch, classes, device=args.device) * 3.0).requires_grad_(True)
        targets = (torch.rand(batch, classes, device=args.device) < 0.04).float()
        results[f"loss_fwd_bwd/{batch}x{classes}{suffix}"] = mean_ns(lambda: step(logits, targets))
    if not cuda:
        targets = (torch.rand(40137, 80) < 0.036).float()
        scores = torch.sigmoid(torch.randn(40137, 80) + targets * 2.0 - 2.0)
        results["metrics/map_40137x80"] = mean_ns(lambda: mean_average_precision(targets.numpy(), scores.numpy()),
                                                  min_seconds=5.0)
        results["_threads"] = torch.get_num_threads()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    for name, ns in results.items():
        if not name.startswith("_"):
            print(f"baseline {name}: {ns / 1e6:.3f} ms")


if __name__ == "__main__":
    main()
