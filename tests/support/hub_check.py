"""Checks a model exported from a hub snapshot against that snapshot's file.

    python hub_check.py MODEL.pt SNAPSHOT_FILE CLASSES

- Every tensor of the file except the classifier equals the exported module's tensor of the same
  name bit for bit (buffers included: export.py re-registers them as parameters).
- The classifier is [CLASSES, F] (the hub's 1000-class head was not loaded).
- The card names the file's SHA-256, computed here, and the snapshot's revision (its folder name).
Prints "ok" or exits non-zero with the reason.
"""

import hashlib
import json
import os
import sys

import torch
from safetensors.torch import load_file


def main():
    model_path, snapshot_file, classes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    card = json.load(open(os.path.splitext(model_path)[0] + ".json"))
    hub = load_file(snapshot_file)
    exported = dict(torch.jit.load(model_path).named_parameters())
    head = set(card["classifier"])
    compared = 0
    for name, tensor in hub.items():
        if name in head:
            continue
        assert name in exported, f"{name} of the snapshot is not in the export"
        theirs = exported[name].detach()
        assert theirs.dtype == tensor.dtype and torch.equal(theirs, tensor), f"{name} differs from the snapshot"
        compared += 1
    weight = exported[card["head"]["weight"]]
    assert weight.shape == (classes, card["num_features"]), f"head weight {tuple(weight.shape)}"
    assert card["num_classes"] == classes
    origin = card["weights"]
    with open(snapshot_file, "rb") as f:
        assert origin["sha256"] == hashlib.sha256(f.read()).hexdigest(), origin
    assert origin["revision"] == os.path.basename(os.path.dirname(snapshot_file)), origin
    print(f"ok {compared}")


if __name__ == "__main__":
    main()
