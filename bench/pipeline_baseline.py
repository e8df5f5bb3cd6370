"""The PyTorch baseline of benches/pipeline.rs: a torchvision/PIL DataLoader
with the same transforms (squish Resize, CutoutPIL(0.5), RandAugment with
the same 13 ops, 2 ops at magnitude 9/30, each with p=0.5, ToTensor), the
same number of workers as asl's threads, batch 32, over the coco-mini
training JPEGs for 3 epochs. Writes {id: nanoseconds per image}.
"""

import argparse
import glob
import json
import os
import random
import time

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from torchvision import transforms

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "coco-mini")
FILL = (128, 128, 128)


class CutoutPIL:
    """The ASL reference's Cutout."""

    def __init__(self, cutout_factor=0.5):
        self.cutout_factor = cutout_factor

    def __call__(self, x):
        img_draw = ImageDraw.Draw(x)
        h, w = x.size[0], x.size[1]
        h_cutout = int(self.cutout_factor * h + 0.5)
        w_cutout = int(self.cutout_factor * w + 0.5)
        y_c = np.random.randint(h)
        x_c = np.random.randint(w)
        y1 = np.clip(y_c - h_cutout // 2, 0, h)
        y2 = np.clip(y_c + h_cutout // 2, 0, h)
        x1 = np.clip(x_c - w_cutout // 2, 0, w)
        x2 = np.clip(x_c + w_cutout // 2, 0, w)
        fill_color = (random.randint(0, 255), random.randint(0, 255), random.randint(0, 255))
        img_draw.rectangle([x1, y1, x2, y2], fill=fill_color)
        return x


def _ops(f, size):
    s = lambda: random.choice([-1, 1])
    e = lambda: 1 + 0.9 * f * s()
    affine = lambda m: (lambda img: img.transform(img.size, Image.AFFINE, m, fillcolor=FILL))
    return [
        ImageOps.autocontrast,
        ImageOps.equalize,
        lambda img: img.rotate(30 * f * s(), fillcolor=FILL),
        lambda img: ImageOps.solarize(img, int(255 * (1 - f))),
        lambda img: ImageEnhance.Color(img).enhance(e()),
        lambda img: ImageOps.posterize(img, 8 - round(4 * f)),
        lambda img: ImageEnhance.Contrast(img).enhance(e()),
        lambda img: ImageEnhance.Brightness(img).enhance(e()),
        lambda img: ImageEnhance.Sharpness(img).enhance(e()),
        lambda img: affine((1, 0.3 * f * s(), 0, 0, 1, 0))(img),
        lambda img: affine((1, 0, 0, 0.3 * f * s(), 1, 0))(img),
        lambda img: affine((1, 0, 0.45 * f * s() * size, 0, 1, 0))(img),
        lambda img: affine((1, 0, 0, 0, 1, 0.45 * f * s() * size))(img),
    ]


class RandAugment:
    def __init__(self, size, num_ops=2, magnitude=9, p=0.5):
        self.ops = _ops(magnitude / 30, size)
        self.num_ops, self.p = num_ops, p

    def __call__(self, img):
        for op in random.choices(self.ops, k=self.num_ops):
            if random.random() < self.p:
                img = op(img)
        return img


class Files(torch.utils.data.Dataset):
    def __init__(self, paths, size):
        self.paths = paths
        self.transform = transforms.Compose([
            transforms.Resize((size, size)), CutoutPIL(0.5), RandAugment(size), transforms.ToTensor()])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(Image.open(self.paths[i]).convert("RGB"))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    paths = sorted(glob.glob(os.path.join(ROOT, "train2017", "*.jpg")))
    if not paths:
        print(f"SKIPPED: pipeline baseline needs {ROOT}")
        return
    results = {}
    for size in (224, 448):
        loader = torch.utils.data.DataLoader(Files(paths, size), batch_size=32, shuffle=True,
                                             num_workers=args.workers, persistent_workers=True)
        next(iter(loader))  # start the workers before timing, as asl's pool exists before its epoch
        images, start = 0, time.perf_counter()
        for _ in range(3):
            for batch in loader:
                images += batch.shape[0]
        ns = (time.perf_counter() - start) / images * 1e9
        results[f"pipeline/{size}"] = ns
        print(f"baseline pipeline/{size}: {1e9 / ns:.1f} images/s ({args.workers} workers)")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
