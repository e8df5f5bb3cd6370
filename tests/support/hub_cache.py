"""Writes a Hugging Face hub cache entry, in the hub's real on-disk layout.

    python hub_cache.py CACHE MODEL.TAG SEED
    python hub_cache.py CACHE ORG/NAME SEED ARCHITECTURE MEAN STD SIZE

CACHE/models--ORG--NAME/ (ORG is timm in the first form)
    blobs/<sha256>                            the file's bytes (LFS blobs are named by their SHA-256)
    snapshots/<revision>/model.safetensors -> ../../blobs/<sha256>
    snapshots/<revision>/config.json          second form only: timm's hub config, naming the
                                              architecture and its pretrained config
    refs/main                                 <revision>

The tensors are timm's random initialisation of the model, seeded, so the test can compare an
export against them bit for bit. MEAN and STD are one number each, for all three channels. Prints
the revision and the SHA-256.
"""

import hashlib
import json
import os
import sys

import timm
import torch
from safetensors.torch import save_file


def main():
    cache, name, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    repo_id = name if "/" in name else f"timm/{name}"
    architecture = sys.argv[4] if len(sys.argv) > 4 else name
    torch.manual_seed(seed)
    model = timm.create_model(architecture, pretrained=False)
    # Non-zero statistics, so that a test notices if the buffers were not loaded.
    state = {k: (v + torch.rand_like(v) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    repo = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    staging = os.path.join(repo, "blobs", "staging.safetensors")
    save_file(state, staging)
    with open(staging, "rb") as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    os.replace(staging, os.path.join(repo, "blobs", sha256))
    revision = hashlib.sha1(f"{repo_id}:{seed}".encode()).hexdigest()
    snapshot = os.path.join(repo, "snapshots", revision)
    os.makedirs(snapshot, exist_ok=True)
    os.symlink(os.path.join("..", "..", "blobs", sha256), os.path.join(snapshot, "model.safetensors"))
    if len(sys.argv) > 4:
        mean, std, size = float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
        config = {"architecture": architecture, "num_classes": model.num_classes,
                  "pretrained_cfg": {"mean": [mean] * 3, "std": [std] * 3, "input_size": [3, size, size],
                                     "num_classes": model.num_classes, "classifier": model.default_cfg["classifier"]}}
        with open(os.path.join(snapshot, "config.json"), "w") as f:
            json.dump(config, f)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(revision)
    print(revision, sha256)


if __name__ == "__main__":
    main()
