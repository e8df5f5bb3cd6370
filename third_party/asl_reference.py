"""Average precision exactly as the official ASL repository computes it
(src/helper_functions/helper_functions.py, MIT licence), shared by the
benchmark baseline and the round-trip test so both compare against the
same reference code.
"""

import numpy as np


def average_precision(output, target):
    epsilon = 1e-8
    indices = output.argsort()[::-1]
    total_count_ = np.cumsum(np.ones((len(output), 1)))
    target_ = target[indices]
    ind = target_ == 1
    pos_count_ = np.cumsum(ind)
    total = pos_count_[-1]
    pos_count_[np.logical_not(ind)] = 0
    pp = pos_count_ / total_count_
    precision_at_i_ = np.sum(pp)
    return precision_at_i_ / (total + epsilon)


def mean_average_precision(targs, preds):
    """The reference's mAP: every class counts, a class without positives as 0."""
    ap = np.zeros(preds.shape[1])
    for k in range(preds.shape[1]):
        ap[k] = average_precision(preds[:, k], targs[:, k])
    return 100 * ap.mean()
