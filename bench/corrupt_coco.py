"""Corrupts a COCO-format training split's labels, as a dataset's own mistakes would, and records the truth.

    python bench/corrupt_coco.py DATA --drop 0.15 --add 0.05 --seed 0 --truth TRUTH.csv

In DATA/annotations/instances_train.json (rewritten in place; the original is kept beside it as
instances_train.clean.json), a fraction --drop of the (image, class) positives lose every annotation of
that class (missing labels), and --add as many (image, class) pairs as the split has positives, times that
fraction, gain an annotation of a class the image does not show (wrong labels). TRUTH.csv gets one row per
corruption: image (the file name), class, kind (missing or wrong). With --by-class, each class gets its
own rates, drawn uniformly between 0 and twice the given ones (their mean): in real datasets some
classes lose far more labels than others (small objects, unclear definitions).
"""

import argparse
import csv
import json
import os
import random
import shutil


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--drop", type=float, default=0.15)
    parser.add_argument("--add", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--truth", required=True)
    parser.add_argument("--by-class", action="store_true", help="a drop and add rate of its own for each class")
    parser.add_argument("--imbalance", type=float, default=0.0,
                        help="first thin the split so that class k keeps about (1 - imbalance)^k of its images, as "
                             "real datasets hold a few common classes and many rare ones (0: keep every image)")
    args = parser.parse_args()
    path = os.path.join(args.data, "annotations", "instances_train.json")
    clean = path.replace(".json", ".clean.json")
    if not os.path.exists(clean):
        shutil.copy(path, clean)
    coco = json.load(open(clean))
    rng = random.Random(args.seed)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    if args.imbalance > 0:
        keep = {c: (1 - args.imbalance) ** k for k, c in enumerate(sorted(names))}
        classes_of = {}
        for a in coco["annotations"]:
            classes_of.setdefault(a["image_id"], set()).add(a["category_id"])
        kept = {i["id"] for i in coco["images"] if rng.random() < min([keep[c] for c in classes_of.get(i["id"], [])] or [1])}
        coco["images"] = [i for i in coco["images"] if i["id"] in kept]
        coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in kept]
    files = {i["id"]: i["file_name"] for i in coco["images"]}
    present = sorted({(a["image_id"], a["category_id"]) for a in coco["annotations"]})
    scale = {c: (2 * rng.random() if args.by_class else 1.0) for c in sorted(names)}
    dropped = {pair for pair in present if rng.random() < args.drop * scale[pair[1]]}
    present_set = set(present)
    absent = [(i, c) for i in sorted(files) for c in sorted(names) if (i, c) not in present_set]
    # As many wrong labels as --add times the positives, spread over the classes by their scale.
    add_rate = args.add * len(present) / len(absent)
    added = sorted(pair for pair in absent if rng.random() < add_rate * scale[pair[1]])
    annotations = [a for a in coco["annotations"] if (a["image_id"], a["category_id"]) not in dropped]
    next_id = max(a["id"] for a in coco["annotations"]) + 1
    for k, (image, category) in enumerate(added):
        annotations.append({"id": next_id + k, "image_id": image, "category_id": category, "iscrowd": 0})
    coco["annotations"] = annotations
    with open(path + ".tmp", "w") as f:
        json.dump(coco, f)
    os.replace(path + ".tmp", path)
    with open(args.truth, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "class", "kind"])
        for kind, pairs in (("missing", sorted(dropped)), ("wrong", sorted(added))):
            for image, category in pairs:
                writer.writerow([files[image], names[category], kind])
    print(f"{len(dropped)} positives dropped, {len(added)} wrong positives added, of {len(present)}")


if __name__ == "__main__":
    main()
