"""Checks models/export.py's --weights handling with real timm checkpoints.

    python export_weights_check.py WORKDIR

1. A timm state dict (.pth): the exported module reproduces the original
   eager model's outputs.
2. The ASL model-zoo format {'model', 'num_classes', 'idx_to_class'}: the
   card carries the class names.
3. A checkpoint with another class count: the classifier is left out and the
   backbone still loads (features unchanged).
Prints "ok" or exits non-zero with the reason.
"""

import json
import os
import subprocess
import sys

import timm
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def export(work, weights, classes, name):
    out = os.path.join(work, name + ".pt")
    subprocess.run([sys.executable, os.path.join(ROOT, "models", "export.py"), "--model", "test_resnet",
                    "--num-classes", str(classes), "--img-size", "64", "--weights", weights, "--out", out,
                    "--seed", "123"], check=True, capture_output=True)
    return out


def main():
    work = sys.argv[1]
    torch.manual_seed(5)
    original = timm.create_model("test_resnet", num_classes=10).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected, features = original(x), original.forward_features(x)
    plain = os.path.join(work, "weights.pth")
    torch.save(original.state_dict(), plain)
    zoo = os.path.join(work, "zoo.pth")
    names = {i: f"class{i}" for i in range(10)}
    torch.save({"model": original.state_dict(), "num_classes": 10, "idx_to_class": names}, zoo)

    scripted = torch.jit.load(export(work, plain, 10, "plain"))
    with torch.no_grad():
        assert torch.allclose(scripted(x), expected, atol=1e-6), "timm state dict not applied"

    export(work, zoo, 10, "zoo")
    card = json.load(open(os.path.join(work, "zoo.json")))
    assert card["class_names"] == [f"class{i}" for i in range(10)], card["class_names"]
    assert card["pretrained"] is True

    other = torch.jit.load(export(work, plain, 5, "other"))
    with torch.no_grad():
        assert other(x).shape == (2, 5)
        assert torch.allclose(other.forward_features(x), features, atol=1e-6), "backbone not loaded"
    print("ok")


if __name__ == "__main__":
    main()
