"""Fingerprints of every registered method's scores on fixed toy data at a fixed seed.

Run by hand before and after a refactoring of the methods (``python
benchmarks/method_fingerprints.py [PATTERN ...]``, e.g. ``'dra*'``); identical lines mean bit-identical scores on this CPU.
Not a test: the hashes depend on the torch build and thread count.

Each line: the method (and parameter profile), the sha256 of its float64 scores, and the
first score for a quick look. At 32 px the ResNet layer4 map is 1×1, so profiles that only
change a pooling over patches (MINNS pooling) give the same hash.
"""
from __future__ import annotations

import hashlib
import sys
import numpy as np
import torch

from bench.contract import MethodUnderTest
from bench.registry import create_method, get_method_entry, list_methods
from bench.testing import toy_problem

SIZE = 32
SEED = 3

# Parameter profiles beyond each method's defaults: the options that switch code paths.
PROFILES = {
    "deepsad": [{"balanced": False}, {"ae_pretrain_epochs": 1}, {"rep_dim": 8}],
    "kdad": [{"cache_teacher": False}, {"direction_only": True}],
    "saoe": [{"aggregate": "gap", "score_fn": "msp"}, {"double_softmax": True}],
    "mlep": [{"embedding": "map"}],
    "devnet": [{"criterion": "bce"}, {"criterion": "focal"}],
    "flos": [{"nonneg_logits": False}],
    "minns": [{"pooling": "mean"}, {"pooling": "lse"}],
    "dra": [{"profile": "paper"}, {"loss": "bce"}, {"pseudo": "cutpaste_scar"}],
    "dra1a": [{"pseudo_prob": 0.0}],
}


def fingerprint(name: str, overrides: dict) -> str:
    cls = get_method_entry(name).cls
    params = MethodUnderTest(name, overrides).params  # test_params() + overrides
    problem = toy_problem(size=SIZE, n_normal=10, shots=2 if cls.uses_labeled_anomalies else 0,
                          n_test=4, seed=SEED, n_outliers=6 if cls.uses_outliers else 0)
    method = create_method(name, **params)
    scores = np.asarray(_fit_and_score(method, problem), dtype=np.float64)
    return f"{hashlib.sha256(scores.tobytes()).hexdigest()[:16]} {scores[0]:+.6e}"


def _fit_and_score(method, problem):
    method.fit(problem.train, problem.context)
    return method.score(problem.test_images)


def main(patterns: list[str]) -> None:
    torch.set_num_threads(1)
    for name in sorted({n for p in patterns or ["*"] for n in list_methods(p)}):
        for overrides in [{}] + PROFILES.get(name, []):
            label = name + "".join(f" {k}={v}" for k, v in overrides.items())
            try:
                line = fingerprint(name, overrides)
            except Exception as exc:  # a failing method is a line too, not the end
                line = f"failed: {type(exc).__name__}: {exc}"
            print(f"{label:32s} {line}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
