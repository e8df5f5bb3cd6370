"""PyTorch eager baseline of benches/train_step.rs: timm tresnet_m with the
weights of the exported TorchScript file, batch 8 at 224 on CPU, timm's
AsymmetricLossMultiLabel (4, 0, 0.05, focusing weights without gradient,
sum), torch.optim.Adam with L2 1e-4. One warm-up step, then 3 timed.
Writes {id: nanoseconds per image}.
"""

import argparse
import json
import time

import timm
import torch
from timm_asl import reference_asl

BATCH, STEPS = 8, 3


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="TorchScript file from models/export.py")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    scripted = torch.jit.load(args.model)
    model = timm.create_model("tresnet_m", num_classes=80)
    # The export keeps non-persistent buffers (blur filters) as parameters; eager timm rebuilds them.
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in scripted.state_dict().items() if k in own})
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith(".bias")]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or n.endswith(".bias")]
    optimizer = torch.optim.Adam([{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0}], lr=1e-4)
    loss_fn = reference_asl()
    torch.manual_seed(0)
    images = torch.rand(BATCH, 3, 224, 224)
    targets = (torch.rand(BATCH, 80) < 0.04).float()

    def step():
        optimizer.zero_grad()
        loss_fn(model(images), targets).backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    ns = (time.perf_counter() - start) / (STEPS * BATCH) * 1e9
    print(f"baseline train_step/tresnet_m_224_b8: {1e9 / ns:.2f} images/s ({torch.get_num_threads()} threads)")
    with open(args.out, "w") as f:
        json.dump({"train_step/tresnet_m_224_b8": ns}, f)


if __name__ == "__main__":
    main()
