"""Runs a TorchScript model from Python on an input written by a Rust test.

    python torchscript_forward.py MODEL INPUT.f32 N C H W OUTPUT.f32

INPUT/OUTPUT are raw little-endian float32 arrays. The model runs in eval
mode under no_grad, as `asl` runs it for validation and inference.
"""

import sys

import numpy as np
import torch


def main():
    model_path, input_path, *shape, output_path = sys.argv[1:]
    model = torch.jit.load(model_path, map_location="cpu")
    model.eval()
    x = torch.from_numpy(np.fromfile(input_path, dtype="<f4").reshape([int(s) for s in shape]))
    with torch.no_grad():
        y = model(x)
    y.numpy().astype("<f4").tofile(output_path)


if __name__ == "__main__":
    main()
