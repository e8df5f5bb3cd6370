"""The Open Images protocol's mAP with scikit-learn, as an independent reference.

    python sparse_map_check.py INPUT.json

INPUT holds {"classes": K, "scores": [images*K], "targets": [images*K]} row-major, targets 1, 0 or -1
(not verified). Per class, average_precision_score over the verified labels only, for the classes with
at least one verified positive; mAP is their mean. Prints {"per_class": [AP or null], "map": mAP}.
"""

import json
import sys

import numpy as np
from sklearn.metrics import average_precision_score


def main():
    data = json.load(open(sys.argv[1]))
    k = data["classes"]
    scores = np.array(data["scores"], dtype=np.float32).reshape(-1, k)
    targets = np.array(data["targets"], dtype=np.float32).reshape(-1, k)
    per_class = []
    for c in range(k):
        verified = targets[:, c] >= 0
        truth = targets[verified, c] == 1
        per_class.append(float(average_precision_score(truth, scores[verified, c])) if truth.any() else None)
    present = [ap for ap in per_class if ap is not None]
    print(json.dumps({"per_class": per_class, "map": sum(present) / len(present)}))


if __name__ == "__main__":
    main()
