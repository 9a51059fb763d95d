"""Issue 11 measurement (not part of the harness): the demo's hard-setting runs with each
method's ResNet-18 trunk replaced by a small plain CNN trained from scratch, to see whether
the from-scratch methods learn when they can afford ~10x more optimiser steps.

    python benchmarks/demo_small_trunk.py METHODS STEPS SEEDS [WIDTHS] [resnet]

METHODS comma-separated (e.g. devnet,dra), STEPS optimiser steps (epochs = STEPS // 10 of
10 steps, batch 12, the demo's other settings), SEEDS e.g. 0,1,2, WIDTHS of the 3x3
conv+BN+ReLU stages (max-pool between them; default 32,64,128,256: stride 8, an 8x8 map at
64 px); "resnet" as the fifth argument keeps ResNet-18 (the baseline). KDAD keeps its own
networks and demo budget. Prints one JSON line per method: mean hard-setting AUC-ROC
(unseen classes), seen-class check-set AUC, per-seed means, mean fit seconds.
Results: benchmarks/results/demo_designs.md (designs G and H)."""
import sys, time, json
import numpy as np, torch
from torch import nn
import bench.methods.common.backbones as B
from bench.plan import SweepConfig, expand
from bench.job import load_run_data
from bench.api import RunContext, TrainData
from bench.registry import create_method
from bench.metrics import run_metrics

orig_init = B.ResNetTrunk.__init__
def small(ch):
    layers, c_in = [], 3
    for i, c in enumerate(ch):
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        if i < len(ch) - 1:
            layers.append(nn.MaxPool2d(2))
        c_in = c
    return nn.Sequential(*layers)
WIDTH = [int(x) for x in (sys.argv[4] if len(sys.argv) > 4 else "32,64,128,256").split(",")]
def init(self, arch="resnet18", weights="none"):
    if arch != "cnn":
        return orig_init(self, arch, weights)
    nn.Module.__init__(self)
    self.body = small(WIDTH)
    self.out_channels = WIDTH[-1]
B.ResNetTrunk.__init__ = init
B.RESNET_ARCHS = B.RESNET_ARCHS + ("cnn",)
import bench.methods.common.backbones
methods = sys.argv[1].split(",")
steps = int(sys.argv[2]); seeds = [int(s) for s in sys.argv[3].split(",")]
torch.set_num_threads(1)
for m in methods:
    res = []
    for seed in seeds:
        plan = expand(SweepConfig(methods=[m], setting="hard", seed_list=[seed]))
        for spec in plan.specs:
            d = load_run_data(spec)
            params = dict(spec.params)
            if "backbone" in params and sys.argv[5:6] != ["resnet"]:
                params["backbone"] = "cnn"
            if "steps_per_epoch" in params:
                params.update(epochs=max(1, steps // 10), steps_per_epoch=10)
            meth = create_method(m, **params)
            t0 = time.time()
            meth.fit(TrainData(d.normal, d.anomalies, d.split.train_anomaly_classes, d.outliers),
                     RunContext(seed=seed, img_size=d.size))
            s = meth.score(d.test); c = meth.score(d.seen_check)
            mt = run_metrics(d.split.test_labels, s, d.split.test_seen, "hard", c)
            res.append((spec.subset, seed, mt["auroc"], mt.get("auroc_seen"), time.time() - t0))
    arr = np.array([r[2] for r in res]); seen = np.array([r[3] for r in res])
    per_seed = [np.mean([r[2] for r in res if r[1] == s]) for s in seeds]
    print(json.dumps({"method": m, "steps": steps, "mean": round(arr.mean(), 3),
                      "seen": round(seen.mean(), 3), "per_seed_means": [round(x, 3) for x in per_seed],
                      "fit_s": round(np.mean([r[4] for r in res]), 1),
                      "runs": [(r[0], r[1], round(r[2], 3)) for r in res]}), flush=True)
