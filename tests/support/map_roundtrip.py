"""Recomputes `asl validate`'s mAP in Python from the exact inputs asl saw.

    python map_roundtrip.py MODEL INPUTS.u8 SIZE ANNOTATIONS.json

Runs MODEL (torch.jit.load) on the saved u8 NHWC inputs, scaled to [0, 1] and
normalised by torchvision with the mean and std of MODEL's card, and computes, in
numpy, asl's mAP definition: the reference's average precision, except that
tied scores form one group (the reference leaves their order to argsort).
Classes without positives are left out, as asl reports. Also gives the
reference's own AP and how many classes have tied scores, where the two can
differ. Prints JSON: {"map", "reference_map", "tied_classes", "probabilities"}.
"""

import json
import os
import sys

import numpy as np
import torch
from torchvision.transforms.functional import normalize

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "third_party"))
from asl_reference import average_precision  # noqa: E402


def grouped_average_precision(output, target):
    """AP with each run of tied scores taking the precision at its end."""
    order = np.argsort(-output, kind="stable")
    scores, hits = output[order], target[order]
    ends = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    positives_at_end = np.cumsum(hits)[ends]
    group_positives = np.diff(np.r_[0, positives_at_end])
    return np.sum(group_positives * positives_at_end / (ends + 1)) / positives_at_end[-1]


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
    with open(os.path.splitext(model_path)[0] + ".json") as f:
        card = json.load(f)
    x = normalize(torch.from_numpy(pixels).float().div(255).permute(0, 3, 1, 2), card["mean"], card["std"])
    # The same batches as `asl validate --batch-size 16`: a different batch size can pick other
    # convolution kernels, and near-tied scores would then rank differently.
    with torch.no_grad():
        probabilities = torch.cat([torch.sigmoid(model(x[i:i + 16])) for i in range(0, len(x), 16)])
    probabilities = probabilities.numpy()  # float32, as asl scores them
    targets = coco_targets(annotations)
    scored = [k for k in range(targets.shape[1]) if targets[:, k].sum() > 0]
    grouped = [100 * grouped_average_precision(probabilities[:, k], targets[:, k]) for k in scored]
    reference = [100 * average_precision(probabilities[:, k], targets[:, k]) for k in scored]
    tied = sum(len(np.unique(probabilities[:, k])) < len(probabilities) for k in scored)
    print(json.dumps({"map": float(np.mean(grouped)), "reference_map": float(np.mean(reference)),
                      "tied_classes": int(tied), "probabilities": probabilities.astype(np.float64).ravel().tolist()}))


if __name__ == "__main__":
    main()
