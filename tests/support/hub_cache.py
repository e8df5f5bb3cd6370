"""Writes a Hugging Face hub cache entry for a timm tag, in the hub's real on-disk layout.

    python hub_cache.py CACHE MODEL.TAG SEED

CACHE/models--timm--MODEL.TAG/
    blobs/<sha256>                            the file's bytes (LFS blobs are named by their SHA-256)
    snapshots/<revision>/model.safetensors -> ../../blobs/<sha256>
    refs/main                                 <revision>

The tensors are timm's random initialisation of MODEL for the tag's class count, seeded, so the
test can compare an export against them bit for bit. Prints the revision and the SHA-256.
"""

import hashlib
import os
import sys

import timm
import torch
from safetensors.torch import save_file


def main():
    cache, tag, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.manual_seed(seed)
    model = timm.create_model(tag, pretrained=False)
    # Non-zero statistics, so that a test notices if the buffers were not loaded.
    state = {k: (v + torch.rand_like(v) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    repo = os.path.join(cache, f"models--timm--{tag}")
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    staging = os.path.join(repo, "blobs", "staging.safetensors")
    save_file(state, staging)
    with open(staging, "rb") as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    os.replace(staging, os.path.join(repo, "blobs", sha256))
    revision = hashlib.sha1(f"{tag}:{seed}".encode()).hexdigest()
    snapshot = os.path.join(repo, "snapshots", revision)
    os.makedirs(snapshot, exist_ok=True)
    os.symlink(os.path.join("..", "..", "blobs", sha256), os.path.join(snapshot, "model.safetensors"))
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(revision)
    print(revision, sha256)


if __name__ == "__main__":
    main()
