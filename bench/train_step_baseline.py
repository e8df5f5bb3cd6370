"""PyTorch eager baseline of benches/train_step.rs: timm tresnet_m with the
weights of the exported TorchScript file, batch 8 at 224 on CPU, timm's
AsymmetricLossMultiLabel (4, 0, 0.05, focusing weights without gradient,
sum), torch.optim.Adam with L2 1e-4. Two warm-up steps, then 10 timed
(as benches/train_step.rs).
Writes {id: nanoseconds per image}.

The default is plain PyTorch eager, as it comes. --same-settings
gives eager what `asl train` does for itself on a CPU, so the two steps
compare like for like: freed host memory kept for reuse (the same mallopt
calls as src/host_memory.rs), channels-last weights and an NHWC batch.
"""

import argparse
import ctypes
import json
import time

import timm
import torch
from timm_asl import reference_asl

BATCH, WARMUP, STEPS = 8, 2, 10
BENCH_ID = "train_step/tresnet_m_224_b8"


def keep_freed_memory():
    """asl's glibc settings (src/host_memory.rs), by the same calls."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    if libc.mallopt(m_mmap_threshold, 32 << 20) != 1 or libc.mallopt(m_trim_threshold, 2**31 - 1) != 1:
        raise SystemExit("glibc refused mallopt")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="TorchScript file from models/export.py")
    parser.add_argument("--out", required=True)
    parser.add_argument("--same-settings", action="store_true", help="as asl on a CPU (see above)")
    args = parser.parse_args()
    if args.same_settings:
        keep_freed_memory()
    scripted = torch.jit.load(args.model)
    model = timm.create_model("tresnet_m", num_classes=80)
    # The export keeps non-persistent buffers (blur filters) as parameters; eager timm rebuilds them.
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in scripted.state_dict().items() if k in own})
    model.train()
    if args.same_settings:
        model = model.to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith(".bias")]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or n.endswith(".bias")]
    optimizer = torch.optim.Adam([{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0}], lr=1e-4)
    loss_fn = reference_asl()
    torch.manual_seed(0)
    images = torch.rand(BATCH, 224, 224, 3).permute(0, 3, 1, 2) if args.same_settings else torch.rand(BATCH, 3, 224, 224)
    targets = (torch.rand(BATCH, 80) < 0.04).float()

    def step():
        optimizer.zero_grad()
        loss_fn(model(images), targets).backward()
        optimizer.step()

    for _ in range(WARMUP):
        step()
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    ns = (time.perf_counter() - start) / (STEPS * BATCH) * 1e9
    bench_id = BENCH_ID + ("+same_settings" if args.same_settings else "")
    print(f"baseline {bench_id}: {1e9 / ns:.2f} images/s ({torch.get_num_threads()} threads)")
    with open(args.out, "w") as f:
        json.dump({bench_id: ns}, f)


if __name__ == "__main__":
    main()
