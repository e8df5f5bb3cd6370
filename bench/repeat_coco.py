"""Makes a larger COCO-layout split out of a small one for GPU timing runs:
the images (and their annotations) of `instances_<split>.json` repeated
`--times` times under new ids, with the image folders linked, not copied.
Both asl and bench/train_gpu_baseline.py then read the same files.
"""

import argparse
import json
import os


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--split", default="train2017")
    parser.add_argument("--val-split", default="val2017")
    parser.add_argument("--times", type=int, default=6)
    args = parser.parse_args()
    with open(os.path.join(args.src, "annotations", f"instances_{args.split}.json")) as f:
        coco = json.load(f)
    images, annotations = [], []
    base = max(i["id"] for i in coco["images"]) + 1
    for copy in range(args.times):
        images += [dict(i, id=i["id"] + copy * base) for i in coco["images"]]
        annotations += [dict(a, id=n + len(annotations), image_id=a["image_id"] + copy * base)
                        for n, a in enumerate(coco["annotations"])]
    os.makedirs(os.path.join(args.dst, "annotations"), exist_ok=True)
    with open(os.path.join(args.dst, "annotations", f"instances_{args.split}.json"), "w") as f:
        json.dump(dict(coco, images=images, annotations=annotations), f)
    for split in (args.split, args.val_split):
        link = os.path.join(args.dst, split)
        if not os.path.exists(link):
            os.symlink(os.path.abspath(os.path.join(args.src, split)), link)
    val = os.path.join(args.dst, "annotations", f"instances_{args.val_split}.json")
    if not os.path.exists(val):
        os.symlink(os.path.abspath(os.path.join(args.src, "annotations", f"instances_{args.val_split}.json")), val)
    print(f"{len(images)} {args.split} images ({args.times} x {len(coco['images'])}) in {args.dst}")


if __name__ == "__main__":
    main()
