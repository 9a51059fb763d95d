"""Run one upstream training script (patched by ``prepare.sh``) under controlled conditions.

    python launch_upstream.py --seed S --threads T --scores OUT.json UPSTREAM_DIR/train.py ARGS…

Only the environment is controlled, not the upstream code: ``os.listdir`` returns sorted
names (so both sides see the same file order, which the protocol's splits assume), Python's,
numpy's and torch's global RNGs are seeded with S (the released code seeds nothing but its
anomaly shuffle, so without this a run cannot be repeated), torch uses T threads, and the
labels and scores passed to ``sklearn.metrics.roc_auc_score`` are written to OUT.json at
full precision (DevNet's script only prints a 4-decimal AUC).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import runpy
import sys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scores", required=True, help="JSON file for the test labels and scores")
    ap.add_argument("script", help="the upstream train.py")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    script = os.path.abspath(a.script)
    if not os.path.isfile(script):
        sys.exit(f"error: upstream script {script} not found; run benchmarks/upstream/prepare.sh")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import numpy as np
    import sklearn.metrics
    import torch

    real_listdir = os.listdir
    os.listdir = lambda path=".": sorted(real_listdir(path))
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    real_auc = sklearn.metrics.roc_auc_score

    def recording_auc(y_true, y_score, *args, **kwargs):
        with open(a.scores, "w") as f:
            json.dump({"labels": [float(v) for v in y_true],
                       "scores": [float(v) for v in y_score]}, f)
        return real_auc(y_true, y_score, *args, **kwargs)

    sklearn.metrics.roc_auc_score = recording_auc
    upstream_dir = os.path.dirname(script)
    os.chdir(upstream_dir)
    sys.path.insert(0, upstream_dir)
    sys.argv = [script] + a.args
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
