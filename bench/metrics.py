"""Metrics of one run from its per-image scores: AUC-ROC and AUC-PR (scikit-learn's
``roc_auc_score`` and ``average_precision_score``, anomaly = positive class, as the released
code), and AUC-ROC over the seen and over the unseen anomaly classes (each against all test
normals; None when a group has no image). In the hard setting every test anomaly is of an
unseen class (the known class is out of the test set), so ``auroc_unseen`` equals ``auroc``
there, and ``auroc_seen`` is the AUC-ROC of the seen-class check set (the known class's
anomalies not drawn as labelled, never in the test set) against the test normals; None when
the known class has no image left over."""
from __future__ import annotations

from typing import Optional

import numpy as np


def _auroc(labels: np.ndarray, scores: np.ndarray) -> Optional[float]:
    from sklearn.metrics import roc_auc_score

    if labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, scores))


def run_metrics(labels, scores, seen, setting: str, check_scores=None) -> dict:
    """``labels`` 0/1, ``scores`` higher = more anomalous, ``seen`` True for anomalies of a
    labelled class; ``check_scores`` the scores of the hard setting's seen-class check set."""
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    seen = np.asarray(seen, dtype=bool)
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} of {len(scores)} scores are not "
                         f"finite (NaN/inf); the method diverged")
    out = {"auroc": _auroc(labels, scores),
           "auprc": float(average_precision_score(labels, scores)),
           "n_test": int(len(labels)), "n_test_anomalies": int(labels.sum()),
           "auroc_seen": None, "auroc_unseen": None}
    if setting == "hard":
        out["auroc_unseen"] = out["auroc"]
        check = np.asarray([] if check_scores is None else check_scores, dtype=float)
        if not np.all(np.isfinite(check)):
            raise ValueError(f"{int((~np.isfinite(check)).sum())} of {len(check)} scores of "
                             f"the seen-class check set are not finite (NaN/inf)")
        out["n_seen_check"] = int(len(check))
        if len(check):
            normal = scores[labels == 0]
            out["auroc_seen"] = _auroc(
                np.r_[np.zeros(len(normal), dtype=int), np.ones(len(check), dtype=int)],
                np.r_[normal, check])
    elif setting == "general":
        normal = labels == 0
        for name, group in (("auroc_seen", seen), ("auroc_unseen", ~seen & (labels == 1))):
            sel = normal | (group & (labels == 1))
            if (group & (labels == 1)).any():
                out[name] = _auroc(labels[sel], scores[sel])
    return out
