"""ML-Decoder against global average pooling + linear, as heads of TResNet at 448.

    python bench/ml_decoder_head.py [--model tresnet_l] [--batch 8] [--classes 80] [--threads 2] [--with-backbone]

Both heads are built as models/export.py builds them and run through
TorchScript (torch.jit.script), as asl runs them; each is timed for forward
and backward on a random feature map of the backbone's shape at 448
(TResNet-L: [B, 2432, 14, 14]) in train mode, after a warm-up. Prints the
head's and the whole network's parameter counts, the mean time per batch and
ML-Decoder's cost relative to the linear head. --with-backbone also times
the backbone's forward and backward at the same batch (one warm-up, then at
least one timed pass: slow on a CPU), so that each head's share of a whole
training step shows.
"""

import argparse
import json
import os
import sys

import timm
import torch

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(BENCH, "..", "models"))
sys.path.insert(0, BENCH)
import ml_decoder  # noqa: E402
from loss_baseline import mean_ns  # noqa: E402


def parameters(module):
    return sum(p.numel() for p in module.parameters())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tresnet_l")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--with-backbone", action="store_true", help="also time the backbone's forward + backward")
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone = timm.create_model(args.model, num_classes=0)
    with torch.no_grad():
        shape = backbone.eval().forward_features(torch.zeros(1, 3, args.size, args.size)).shape[1:]
    linear = timm.create_model(args.model, num_classes=args.classes).head
    decoder = ml_decoder.MLDecoderHead(backbone.num_features, args.classes)
    features = torch.randn(args.batch, *shape, requires_grad=True)
    results = {"model": args.model, "size": args.size, "batch": args.batch, "feature_map": list(shape),
               "backbone_parameters": parameters(backbone)}
    for name, head in [("linear", linear), ("ml_decoder", decoder)]:
        scripted = torch.jit.script(head.train())

        def step():
            features.grad = None
            scripted(features).sum().backward()

        results[name] = {"head_parameters": parameters(head),
                         "trainable_head_parameters": sum(p.numel() for p in head.parameters() if p.requires_grad),
                         "seconds_per_batch": mean_ns(step, min_seconds=5.0) / 1e9}
    if args.with_backbone:
        scripted_backbone = torch.jit.script(backbone.train())
        images = torch.rand(args.batch, 3, args.size, args.size)

        def backbone_step():
            scripted_backbone.zero_grad()
            scripted_backbone.forward_features(images).sum().backward()

        results["backbone_seconds_per_batch"] = mean_ns(backbone_step, min_seconds=1.0, warmup=1) / 1e9
    ratio = results["ml_decoder"]["seconds_per_batch"] / results["linear"]["seconds_per_batch"]
    results["ml_decoder_over_linear"] = ratio
    print(f"{args.model} at {args.size}, batch {args.batch}, feature map {list(shape)}, {args.threads} threads, "
          f"forward + backward of the head alone:")
    for name in ["linear", "ml_decoder"]:
        r = results[name]
        total = r["head_parameters"] + results["backbone_parameters"]
        print(f"  {name:<10} head {r['head_parameters'] / 1e6:7.3f} M parameters "
              f"({r['trainable_head_parameters'] / 1e6:.3f} M trainable), network {total / 1e6:.2f} M, "
              f"{r['seconds_per_batch'] * 1e3:8.2f} ms per batch")
    print(f"  ML-Decoder / linear: {ratio:.1f}x the head's time")
    if args.with_backbone:
        backbone_time = results["backbone_seconds_per_batch"]
        print(f"  backbone forward + backward {backbone_time:.2f} s per batch: a training step with ML-Decoder "
              f"takes {(backbone_time + results['ml_decoder']['seconds_per_batch']) / (backbone_time + results['linear']['seconds_per_batch']):.3f}x "
              f"the step with the linear head")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
