"""The PyTorch baseline of `asl train` on a GPU, after the ASL reference's
train.py: timm's model with the weights of the TorchScript file asl trains,
a torchvision/PIL DataLoader (squish Resize, CutoutPIL(0.5), RandAugment,
ToTensor; pin_memory, shuffled) over a COCO-layout split, fp16 autocast with
a GradScaler, timm's AsymmetricLossMultiLabel(4, 0, 0.05, summed), Adam with L2 1e-4
(none on biases and 1-D parameters), OneCycleLR(max_lr 2e-4, 80 epochs,
pct_start 0.2), and the reference's per-tensor model EMA (0.9997).

Epoch 1 warms up (cuDNN autotuning, allocator); each later epoch is timed
like asl's epoch meter: images / (time blocked on the loader + step time),
the step ending when its loss is read back. Prints and writes JSON.
"""

import argparse
import copy
import json
import os
import sys
import time

import timm
import torch
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pipeline_baseline import CutoutPIL, RandAugment  # noqa: E402
from timm_asl import reference_asl  # noqa: E402


class CocoSplit(torch.utils.data.Dataset):
    """Images of instances_<split>.json as multi-hot targets (ids sorted to 0..K-1, unannotated kept)."""

    def __init__(self, root, split, size):
        with open(os.path.join(root, "annotations", f"instances_{split}.json")) as f:
            coco = json.load(f)
        index = {c["id"]: i for i, c in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}
        self.classes = len(index)
        labels = {image["id"]: set() for image in coco["images"]}
        for a in coco["annotations"]:
            labels[a["image_id"]].add(index[a["category_id"]])
        self.items = [(os.path.join(root, split, i["file_name"]), sorted(labels[i["id"]])) for i in coco["images"]]
        self.transform = transforms.Compose([
            transforms.Resize((size, size)), CutoutPIL(0.5), RandAugment(size), transforms.ToTensor()])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, positives = self.items[i]
        target = torch.zeros(self.classes)
        target[positives] = 1.0
        return self.transform(Image.open(path).convert("RGB")), target


class ReferenceEma:
    """helper_functions.ModelEma of the ASL reference: a per-tensor lerp over the state dict."""

    def __init__(self, model, decay):
        self.module = copy.deepcopy(model).eval()
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
            ema_v.copy_(self.decay * ema_v + (1.0 - self.decay) * model_v)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="TorchScript file from models/export.py (weights source)")
    parser.add_argument("--timm", default="tresnet_l")
    parser.add_argument("--data", required=True, help="COCO-layout root")
    parser.add_argument("--split", default="train2017")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--batch", type=int, default=56)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cuda", help="cpu only for a smoke test of this script")
    parser.add_argument("--out", required=True)
    parser.add_argument("--best", action="store_true",
                        help="PyTorch at its own best: channels_last, fused Adam, TF32, no per-step .item()")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    torch.backends.cudnn.benchmark = True
    if args.best:
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = True
    memory_format = torch.channels_last if args.best else torch.contiguous_format
    torch.manual_seed(0)
    dataset = CocoSplit(args.data, args.split, args.size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, drop_last=True,
                                         num_workers=args.workers, pin_memory=cuda)
    scripted = torch.jit.load(args.model, map_location="cpu")
    model = timm.create_model(args.timm, num_classes=dataset.classes)
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in scripted.state_dict().items() if k in own})
    model = model.to(args.device, memory_format=memory_format).train()
    ema = ReferenceEma(model, 0.9997)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith(".bias")]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or n.endswith(".bias")]
    optimizer = torch.optim.Adam([{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0}],
                                 lr=2e-4, fused=args.best or None)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-4, steps_per_epoch=len(loader), epochs=80,
                                                    pct_start=0.2)
    criterion = reference_asl()
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    epochs = []
    for epoch in range(args.epochs):
        images, wait, compute = 0, 0.0, 0.0
        loss_sum = torch.zeros((), device=args.device)
        waited = time.perf_counter()
        for inputs, targets in loader:
            started = time.perf_counter()
            wait += started - waited
            inputs = inputs.to(args.device, non_blocking=True, memory_format=memory_format)
            targets = targets.to(args.device, non_blocking=True)
            with torch.amp.autocast("cuda", enabled=cuda):
                output = model(inputs).float()
            loss = criterion(output, targets)
            model.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            ema.update(model)
            loss_sum += loss.detach()
            images += inputs.shape[0]
            waited = time.perf_counter()
            compute += waited - started
        if cuda:
            torch.cuda.synchronize()
        loss_sum = loss_sum.item()
        record = {"epoch": epoch + 1, "images": images, "images_per_second": images / (wait + compute),
                  "data_wait_fraction": wait / (wait + compute), "loss": loss_sum / max(len(loader), 1)}
        epochs.append(record)
        print(f"baseline epoch {epoch + 1}: {record['images_per_second']:.1f} img/s, "
              f"data-wait {100 * record['data_wait_fraction']:.1f}%, loss {record['loss']:.2f}", flush=True)
    result = {"epochs": epochs, "workers": args.workers, "batch": args.batch, "size": args.size,
              "device": torch.cuda.get_device_name() if cuda else "cpu"}
    if cuda:
        result["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["max_memory_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
