"""Inference throughput: `asl infer` against a Python loop over
`torch.jit.load` with the same model, images, size and batch size (PIL
decode + bilinear resize + ToTensor, no_grad, batches of 32), on the
coco-mini validation JPEGs. Runs both here, in one process tree, and writes
target/bench/asl_infer.json and target/bench/infer_baseline.json
({id: nanoseconds per image}). Model loading is excluded on both sides.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import time

import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
COCO = os.path.join(ROOT, "..", "shared", "data", "coco-mini", "val2017")
KEY = "infer/tresnet_m_224_b32"


def python_loop(model_path, paths, size=224, batch=32):
    model = torch.jit.load(model_path)
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(paths), batch):
            x = torch.stack([to_tensor(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR))
                             for p in paths[i:i + batch]])
            torch.sigmoid(model(x))
    return (time.perf_counter() - start) / len(paths) * 1e9


def ours(model_path, binary):
    result = subprocess.run([binary, "infer", "--model", model_path, "--device", "cpu", "--batch-size", "32",
                             "--top-k", "3", "--out", os.devnull, COCO], check=True, capture_output=True, text=True)
    rate = float(re.search(r"([0-9.]+) images/s", result.stderr).group(1))
    return 1e9 / rate


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "asl"))
    parser.add_argument("--out-dir", default=os.path.join(ROOT, "target", "bench"))
    args = parser.parse_args()
    paths = sorted(glob.glob(os.path.join(COCO, "*.jpg")))
    if not paths:
        print(f"SKIPPED: inference bench needs {COCO}")
        return
    baseline, asl = python_loop(args.model, paths), ours(args.model, args.binary)
    print(f"baseline {KEY}: {1e9 / baseline:.1f} images/s; asl: {1e9 / asl:.1f} images/s")
    for name, ns in (("infer_baseline.json", baseline), ("asl_infer.json", asl)):
        with open(os.path.join(args.out_dir, name), "w") as f:
            json.dump({KEY: ns}, f)


if __name__ == "__main__":
    main()
