"""End to end: the upstream scripts and ours on the same data, seeds and budget (issue 16, 7).

    python benchmarks/upstream/run_e2e.py UPSTREAM_DIR --method dra --seeds 0,1,2 \
        --side upstream|ours|both   # rows in benchmarks/results/upstream_e2e_<data>.csv
    python benchmarks/upstream/run_e2e.py UPSTREAM_DIR --summary --csv …

UPSTREAM_DIR is the folder ``prepare.sh`` filled (with ``DRA/`` and ``devnet/``). Budget (the
issue's CPU budget): 64 px, 10 epochs × 20 steps, batch 48, random-init ResNet-18, 10 shots;
DRA in the hard setting (synthetic ``disc``, known class ``scratch``), DevNet in the general
setting (synthetic ``disc``). The upstream side runs through ``launch_upstream.py`` (sorted
file order, RNGs seeded with the seed, which is also its ``ramdn_seed``); our side is
``bench run`` with the same seed (split and training). With the same file order and seed both
sides label the same anomalies and test on the same images (``compare_dra.py`` check 6), so
runs are paired by seed.

Each finished run appends one row to the CSV (written and flushed line by line); a seed
already in the CSV for that side and method is not run again, so a killed sweep resumes.
``--summary`` prints mean ± sd per side, the paired t-test over the seeds both sides have
and Welch's t-test (scipy), and the wall time per run.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIELDS = ["method", "side", "seed", "setting", "subset", "known_class", "shots", "auroc",
          "auprc", "wall_s", "threads", "finished_utc"]
BUDGET = dict(img_size=64, epochs=10, steps_per_epoch=20, batch_size=48, shots=10)
EXPERIMENTS = {  # method → (setting, subset, known class, upstream folder, extra upstream args)
    "dra": ("hard", "disc", "scratch", "DRA", []),
    "devnet": ("general", "disc", None, "devnet", []),
    "flos": ("general", "disc", None, "devnet", ["--criterion", "focal"]),
}


DATA_ROOT: Path | None = None  # --data: an MVTec-layout folder instead of the synthetic set


def data_id() -> str:
    """Names the data in the default CSV's name: rows of two generator versions (or two
    folders) are never pooled or taken as already done."""
    if DATA_ROOT is not None:
        return DATA_ROOT.name
    from bench.datasets.catalog.synthetic import GENERATOR_VERSION

    return f"synthetic_v{GENERATOR_VERSION}"


def data_root() -> Path:
    if DATA_ROOT is not None:
        return DATA_ROOT
    from bench.datasets.catalog.synthetic import Synthetic

    return Synthetic().locate(Path("."))


def _auc(labels, scores) -> tuple[float, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    return float(roc_auc_score(labels, scores)), float(average_precision_score(labels, scores))


def run_upstream(upstream: Path, method: str, seed: int, threads: int, log) -> dict:
    setting, subset, known, folder, extra = EXPERIMENTS[method]
    script = upstream / folder / "train.py"
    if not script.is_file():
        raise SystemExit(f"error: {script} not found; run benchmarks/upstream/prepare.sh "
                         f"{upstream} first")
    b = BUDGET
    with tempfile.TemporaryDirectory(prefix=f"e2e_{method}_{seed}_") as tmp:
        scores = Path(tmp) / "scores.json"
        args = ["--dataset_root", str(data_root()), "--classname", subset,
                "--img_size", str(b["img_size"]), "--epochs", str(b["epochs"]),
                "--steps_per_epoch", str(b["steps_per_epoch"]),
                "--batch_size", str(b["batch_size"]), "--ramdn_seed", str(seed),
                "--workers", "0", "--experiment_dir", str(Path(tmp) / "exp")] + extra
        if method == "dra":
            args += ["--nAnomaly", str(b["shots"]), "--know_class", known]
        else:
            args += ["--n_anomaly", str(b["shots"]), "--no_cuda"]
        cmd = [sys.executable, str(HERE / "launch_upstream.py"), "--seed", str(seed),
               "--threads", str(threads), "--scores", str(scores), str(script)] + args
        env = dict(os.environ, UPSTREAM_WEIGHTS="none", OMP_NUM_THREADS=str(threads),
                   CUDA_VISIBLE_DEVICES="")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not scores.is_file():
            log(proc.stdout[-2000:] + proc.stderr[-4000:])
            raise RuntimeError(f"upstream {method} seed {seed} failed (exit {proc.returncode})")
        d = json.loads(scores.read_text())
    auroc, auprc = _auc(d["labels"], d["scores"])
    return dict(auroc=auroc, auprc=auprc, wall_s=wall)


def run_ours(method: str, seed: int, threads: int, log) -> dict:
    setting, subset, known, _, _ = EXPERIMENTS[method]
    b = BUDGET
    with tempfile.TemporaryDirectory(prefix=f"e2e_ours_{method}_{seed}_") as tmp:
        cmd = ["bench", "run", "--methods", method, "--datasets",
               "synthetic" if DATA_ROOT is None else str(DATA_ROOT),
               "--subsets", subset, "--setting", setting, "--shots", str(b["shots"]),
               "--seed-list", str(seed), "--preset", "quick", "--weights", "none",
               # the harness gives each CPU worker cores // workers torch threads
               "--workers", str(max(1, (os.cpu_count() or 1) // threads)),
               "--results", tmp, "--name", "e2e", "--no-table",
               "--set", f"{method}.img_size={b['img_size']}",
               "--set", f"{method}.epochs={b['epochs']}",
               "--set", f"{method}.steps_per_epoch={b['steps_per_epoch']}",
               "--set", f"{method}.batch_size={b['batch_size']}"]
        if known:
            cmd += ["--known-classes", known]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), CUDA_VISIBLE_DEVICES="")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - t0
        records = list(Path(tmp).glob("e2e/*/record.json"))
        if proc.returncode != 0 or len(records) != 1:
            log(proc.stdout[-2000:] + proc.stderr[-4000:])
            raise RuntimeError(f"our {method} seed {seed} failed (exit {proc.returncode}, "
                               f"{len(records)} records)")
        rec = json.loads(records[0].read_text())
        if rec["status"] != "done":
            raise RuntimeError(f"our {method} seed {seed}: {rec['status']}: {rec['reason']}")
    return dict(auroc=rec["auroc"], auprc=rec["auprc"], wall_s=wall,
                fit_s=rec["fit_s"], score_s=rec["score_s"])


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: dict) -> None:
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in FIELDS})
        f.flush()
        os.fsync(f.fileno())


def summary(rows: list[dict], method: str) -> str:
    import numpy as np
    from scipy import stats

    by = {s: {int(r["seed"]): r for r in rows if r["method"] == method and r["side"] == s}
          for s in ("upstream", "ours")}
    up = np.array([float(r["auroc"]) for r in by["upstream"].values()])
    ou = np.array([float(r["auroc"]) for r in by["ours"].values()])
    setting, subset, known, _, _ = EXPERIMENTS[method]
    where = DATA_ROOT.name if DATA_ROOT else "synthetic"
    lines = [f"{method}, {setting} setting, {where}/{subset}"
             + (f", known class {known}" if known else "")
             + f", {BUDGET['shots']} shots, 64 px, 10 epochs x 20 steps, batch 48, random init"]
    for side, a in (("upstream", up), ("ours", ou)):
        seeds = sorted(by[side])
        walls = [float(by[side][s]["wall_s"]) for s in seeds]
        lines.append(f"  {side:8s} n={len(a):2d}  AUC-ROC {a.mean():.3f} ± "
                     f"{a.std(ddof=1) if len(a) > 1 else float('nan'):.3f}  "
                     f"wall per run {np.mean(walls) if walls else float('nan'):.0f} s  "
                     f"seeds {','.join(map(str, seeds))}")
    if len(up) and len(ou):
        lines.append(f"  ours − upstream: Δ mean = {ou.mean() - up.mean():+.3f}")
    common = sorted(set(by["upstream"]) & set(by["ours"]))
    if len(common) >= 2:
        d = np.array([float(by["ours"][s]["auroc"]) - float(by["upstream"][s]["auroc"])
                      for s in common])
        t = stats.ttest_rel([float(by["ours"][s]["auroc"]) for s in common],
                            [float(by["upstream"][s]["auroc"]) for s in common])
        lines.append(f"  paired (n={len(common)}): mean diff {d.mean():+.3f} ± "
                     f"{d.std(ddof=1):.3f}, t = {t.statistic:.2f}, p = {t.pvalue:.3f}")
    if len(up) >= 2 and len(ou) >= 2:
        w = stats.ttest_ind(ou, up, equal_var=False)
        lines.append(f"  Welch: t = {w.statistic:.2f}, p = {w.pvalue:.3f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("upstream", type=Path, help="folder prepared by prepare.sh")
    ap.add_argument("--method", choices=sorted(EXPERIMENTS), default="dra")
    ap.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9",
                    help="comma-separated seeds, run in this order")
    ap.add_argument("--side", choices=("upstream", "ours", "both"), default="both")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--csv", type=Path, default=None,
                    help="results CSV (default: benchmarks/results/upstream_e2e_<data>.csv, "
                         "e.g. upstream_e2e_synthetic_v2.csv)")
    ap.add_argument("--summary", action="store_true", help="only print the statistics")
    ap.add_argument("--data", type=Path, default=None,
                    help="an MVTec-layout dataset root (default: the synthetic dataset)")
    ap.add_argument("--subset", default=None, help="subset folder (default: disc)")
    ap.add_argument("--known-class", default=None,
                    help="DRA's known class in the hard setting (default: scratch)")
    a = ap.parse_args()
    global DATA_ROOT
    if a.data is not None:
        if not a.data.is_dir():
            raise SystemExit(f"error: --data {a.data} is not a folder")
        DATA_ROOT = a.data.resolve()
    if a.csv is None:
        a.csv = REPO / "benchmarks" / "results" / f"upstream_e2e_{data_id()}.csv"
    if a.subset or a.known_class:
        setting, subset, known, folder, extra = EXPERIMENTS[a.method]
        EXPERIMENTS[a.method] = (setting, a.subset or subset,
                                 (a.known_class or known) if known else None, folder, extra)
    if a.summary:
        rows = read_rows(a.csv)
        for m, subset, known in sorted({(r["method"], r["subset"], r["known_class"])
                                        for r in rows}):
            setting, _, _, folder, extra = EXPERIMENTS[m]
            EXPERIMENTS[m] = (setting, subset, known or None, folder, extra)
            print(summary([r for r in rows if (r["subset"], r["known_class"]) ==
                           (subset, known)], m))
        return
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"error: --seeds {a.seeds!r} must be comma-separated integers")
    sides = ("upstream", "ours") if a.side == "both" else (a.side,)
    setting, subset, known, _, _ = EXPERIMENTS[a.method]

    def log(msg: str) -> None:
        print(msg, flush=True)

    for seed in seeds:
        for side in sides:
            done = {(r["method"], r["side"], int(r["seed"]), r["subset"], r["known_class"])
                    for r in read_rows(a.csv)}
            if (a.method, side, seed, subset, known or "") in done:
                continue
            log(f"{time.strftime('%H:%M:%S')} {a.method} {side} seed {seed} …")
            try:
                res = (run_upstream(a.upstream, a.method, seed, a.threads, log)
                       if side == "upstream" else run_ours(a.method, seed, a.threads, log))
            except RuntimeError as exc:  # one failed run never ends the sweep
                log(f"  failed: {exc}")
                continue
            append_row(a.csv, dict(method=a.method, side=side, seed=seed, setting=setting,
                                   subset=subset, known_class=known or "",
                                   shots=BUDGET["shots"], threads=a.threads,
                                   finished_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                              time.gmtime()),
                                   **{k: (round(v, 6) if k != "wall_s" else round(v, 1))
                                      for k, v in res.items() if k in FIELDS}))
            log(f"  AUC-ROC {res['auroc']:.4f}  wall {res['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
