"""Recomputes `asl validate`'s mAP in Python from the exact inputs asl saw.

    python map_roundtrip.py MODEL INPUTS.u8 SIZE ANNOTATIONS.json

Runs MODEL (torch.jit.load) on the saved u8 NHWC inputs, then the ASL
reference's numpy average precision per class (classes without positives
left out, as asl reports). Prints JSON: {"map": ..., "probabilities": [...]}.
"""

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "third_party"))
from asl_reference import average_precision  # noqa: E402


def coco_targets(path):
    with open(path) as f:
        coco = json.load(f)
    ids = sorted(c["id"] for c in coco["categories"])
    column = {cid: i for i, cid in enumerate(ids)}
    row = {img["id"]: i for i, img in enumerate(coco["images"])}
    targets = np.zeros((len(coco["images"]), len(ids)))
    for a in coco["annotations"]:
        targets[row[a["image_id"]], column[a["category_id"]]] = 1
    return targets


def main():
    model_path, inputs_path, size, annotations = sys.argv[1:]
    size = int(size)
    pixels = np.fromfile(inputs_path, dtype=np.uint8).reshape(-1, size, size, 3)
    model = torch.jit.load(model_path, map_location="cpu")
    model.eval()
    x = torch.from_numpy(pixels).float().div(255).permute(0, 3, 1, 2)
    with torch.no_grad():
        probabilities = torch.sigmoid(model(x)).numpy().astype(np.float64)
    targets = coco_targets(annotations)
    aps = [100 * average_precision(probabilities[:, k], targets[:, k])
           for k in range(targets.shape[1]) if targets[:, k].sum() > 0]
    print(json.dumps({"map": float(np.mean(aps)), "probabilities": probabilities.ravel().tolist()}))


if __name__ == "__main__":
    main()
