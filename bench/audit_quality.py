"""How well an audit's ranking finds known label corruptions, against the raw probability and cleanlab.

    python bench/audit_quality.py OUT NOISY_COCO_JSON TRUTH.csv [--in-sample PROBS.npy] [--json FILE]

OUT is an `asl audit` directory (probabilities.npy, images.txt, classes.txt, suspects.csv); NOISY_COCO_JSON
the annotations it audited; TRUTH.csv what bench/corrupt_coco.py changed. Prints, and writes with --json:

- missing-label AP: observed negatives ranked, the dropped positives to find;
- wrong-label AP: observed positives ranked, the added ones to find;
- per-image AP: images ranked, those with any corruption to find;

for the audit's ranking (the order of suspects.csv, and of image_suspicion.csv for images), the raw out-of-sample probability (p for a negative, 1 - p for a positive), cleanlab
(per class, `rank.get_label_quality_scores` on the class's two-column probabilities, for the two label APs;
`multilabel_classification.get_label_quality_scores` for images, the ranking `filter.find_label_issues`
uses), and, with --in-sample, the raw probability of a model that trained on every image.
"""

import argparse
import csv
import json
import os

import numpy as np
from sklearn.metrics import average_precision_score


def load(out, noisy, truth_path):
    probabilities = np.load(os.path.join(out, "probabilities.npy"))
    images = [os.path.basename(l.rstrip("\n")) for l in open(os.path.join(out, "images.txt"))]
    classes = [l.rstrip("\n") for l in open(os.path.join(out, "classes.txt"))]
    row = {name: i for i, name in enumerate(images)}
    column = {name: j for j, name in enumerate(classes)}
    coco = json.load(open(noisy))
    files = {i["id"]: i["file_name"] for i in coco["images"]}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    observed = np.zeros(probabilities.shape, dtype=np.int8)
    for a in coco["annotations"]:
        if files[a["image_id"]] in row:
            observed[row[files[a["image_id"]]], column[names[a["category_id"]]]] = 1
    truth = np.zeros(probabilities.shape, dtype=np.int8)
    for r in csv.DictReader(open(truth_path)):
        truth[row[r["image"]], column[r["class"]]] = 1 if r["kind"] == "missing" else 2
    # The audit's order, ties broken as it broke them: earlier rows of suspects.csv rank higher; unlisted
    # labels rank last.
    audit = np.full(probabilities.shape, -1.0)
    rows = list(csv.DictReader(open(os.path.join(out, "suspects.csv"))))
    for k, r in enumerate(rows):
        audit[row[os.path.basename(r["image"])], column[r["class"]]] = len(rows) - k
    images_audit = np.zeros(len(images))
    image_rows = list(csv.DictReader(open(os.path.join(out, "image_suspicion.csv"))))
    for k, r in enumerate(image_rows):
        images_audit[row[os.path.basename(r["image"])]] = len(image_rows) - k
    return probabilities, observed, truth, audit, images_audit


def label_aps(scores_missing, scores_wrong, observed, truth):
    negatives, positives = observed == 0, observed == 1
    missing = average_precision_score(truth[negatives] == 1, scores_missing[negatives])
    wrong = average_precision_score(truth[positives] == 2, scores_wrong[positives])
    return missing, wrong


def raw(probabilities, observed):
    """Suspicion from the probability alone: p for a negative, 1 - p for a positive."""
    return np.where(observed == 1, 1.0 - probabilities, probabilities)


def cleanlab_scores(probabilities, observed):
    from cleanlab.multilabel_classification.rank import get_label_quality_scores as image_quality
    from cleanlab.rank import get_label_quality_scores

    per_label = np.zeros(probabilities.shape)
    for c in range(probabilities.shape[1]):
        two = np.stack([1.0 - probabilities[:, c], probabilities[:, c]], axis=1)
        per_label[:, c] = 1.0 - get_label_quality_scores(observed[:, c].astype(int), two)
    labels = [list(np.flatnonzero(r)) for r in observed]
    per_image = 1.0 - image_quality(labels, probabilities)
    return per_label, per_image


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("noisy")
    parser.add_argument("truth")
    parser.add_argument("--in-sample")
    parser.add_argument("--json")
    args = parser.parse_args()
    probabilities, observed, truth, audit, images_audit = load(args.out, args.noisy, args.truth)
    corrupted_image = truth.any(axis=1)
    results = {}
    # The audit: its missing scores on negatives, its wrong scores on positives; unlisted labels rank last.
    results["audit"] = label_aps(audit, audit, observed, truth) + (
        average_precision_score(corrupted_image, images_audit),
    )
    suspicion = raw(probabilities, observed)
    results["raw probability"] = label_aps(suspicion, suspicion, observed, truth) + (
        average_precision_score(corrupted_image, suspicion.max(axis=1)),
    )
    per_label, per_image = cleanlab_scores(probabilities, observed)
    results["cleanlab"] = label_aps(per_label, per_label, observed, truth) + (
        average_precision_score(corrupted_image, per_image),
    )
    if args.in_sample:
        inside = raw(np.load(args.in_sample), observed)
        results["in-sample probability"] = label_aps(inside, inside, observed, truth) + (
            average_precision_score(corrupted_image, inside.max(axis=1)),
        )
    table = {k: {"missing_ap": v[0], "wrong_ap": v[1], "image_ap": v[2]} for k, v in results.items()}
    for name, row in table.items():
        print(f"{name:24s} missing AP {row['missing_ap']:.3f}  wrong AP {row['wrong_ap']:.3f}  image AP {row['image_ap']:.3f}")
    if args.json:
        json.dump(table, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
