"""End-to-end sweeps through the CLI and the worker processes: plugins from entry points,
failures recorded while the rest finish, resume after kill -9, report numbers = sklearn's."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from .conftest import run_bench


def _records(results: Path):
    # run folders only: a temporary folder a kill left half-written starts with "."
    return [json.loads(p.read_text()) for p in results.glob("*/[!.]*/record.json")]


def test_entry_point_plugin_listed_and_runs(toy_root, tmp_path, bench_env):
    out = run_bench(["list", "methods"], bench_env)
    assert out.returncode == 0, out.stderr
    for name in ("epgood", "epboom", "epcrash", "pixelknn"):
        assert name in out.stdout
    res = tmp_path / "res"
    # epboom raises, epcrash kills its worker: both recorded as failed, the rest finish
    out = run_bench(["run", "--methods", "epgood,epboom,epcrash,pixelknn", "--datasets",
                     str(toy_root), "--subsets", "alpha", "--setting", "general",
                     "--shots", "1", "--results", str(res), "--weights", "none", "--seeds", "1"], bench_env,
                    timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr  # failures → non-zero exit
    recs = {r["method"]: r for r in _records(res)}
    assert recs["epgood"]["status"] == "done" and recs["pixelknn"]["status"] == "done"
    assert recs["epboom"]["status"] == "failed" and "boom" in recs["epboom"]["reason"]
    assert "RuntimeError" in json.loads(
        (res / "main" / recs["epboom"]["run_id"] / "record.json").read_text())["traceback"]
    assert recs["epcrash"]["status"] == "failed" and "worker process died" in \
        recs["epcrash"]["reason"]
    # stored AUCs equal scikit-learn's on the stored scores
    for r in (recs["epgood"], recs["pixelknn"]):
        rows = list(csv.DictReader(open(res / "main" / r["run_id"] / "scores.csv")))
        y = np.array([int(x["label"]) for x in rows])
        s = np.array([float(x["score"]) for x in rows])
        assert r["auroc"] == roc_auc_score(y, s)
        assert r["auprc"] == average_precision_score(y, s)
        seen = np.array([x["seen"] == "1" for x in rows])
        if seen.any():
            sel = (y == 0) | seen
            assert abs(r["auroc_seen"] - roc_auc_score(y[sel], s[sel])) < 1e-12
    # a second identical command does no work; --retry-failed reruns only the failures
    again = run_bench(["run", "--methods", "epgood,pixelknn", "--datasets", str(toy_root),
                       "--subsets", "alpha", "--setting", "general", "--shots", "1",
                       "--results", str(res), "--weights", "none", "--seeds", "1"], bench_env, timeout=120)
    assert "0 to run" in again.stdout and again.returncode == 0
    retry = run_bench(["run", "--methods", "epboom", "--datasets", str(toy_root), "--subsets",
                       "alpha", "--setting", "general", "--shots", "1", "--results", str(res),
                       "--weights", "none", "--retry-failed", "--no-table", "--seeds", "1"], bench_env,
                      timeout=120)
    assert "1 to run" in retry.stdout and "1 failed" in retry.stdout


def test_resume_after_kill_minus_nine(toy_root, tmp_path, bench_env):
    res = tmp_path / "res"
    args = ["run", "--methods", "epgood", "--set", "epgood.sleep=0.4", "--datasets",
            str(toy_root), "--setting", "both", "--shots", "1,2", "--results", str(res),
            "--weights", "none", "--no-table"]
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", *args], env=bench_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(_records(res)) < 3:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r["run_id"]: (res / "main" / r["run_id"] / "record.json").stat().st_mtime_ns
              for r in _records(res)}
    assert 3 <= len(before)
    out = run_bench(args, bench_env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    recs = _records(res)
    ids = [r["run_id"] for r in recs]
    planned = int(out.stdout.split(" runs planned")[0].split()[-1])
    assert len(ids) == len(set(ids)) == planned  # every run once, none duplicated
    assert all(r["status"] == "done" for r in recs)
    for rid, mtime in before.items():  # runs finished before the kill were kept, not redone
        assert (res / "main" / rid / "record.json").stat().st_mtime_ns == mtime
    assert not list((res / "main").glob(".tmp-*"))


def test_claimed_runs_are_left_to_their_live_holder(toy_root, tmp_path, bench_env):
    """Two `bench run` on one results folder never compute the same run: a run claimed by a
    live process is left alone; a claim of a dead process is stale and taken over."""
    from bench.plan import SweepConfig, expand
    from bench.store import Store
    res = tmp_path / "res"
    cfg = dict(methods=["pixelknn"], datasets=[str(toy_root)], subsets=["alpha"],
               setting="general", seeds=2)
    ids = [s.run_id for s in expand(SweepConfig(**cfg)).specs]
    store = Store(res, "main")
    assert store.claim(ids[0])                       # held by this (live) test process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = store.dir / "claims" / ids[1]
    stale.write_text(json.dumps({"host": __import__("socket").gethostname(), "pid": int(dead)}))
    args = ["run", "--methods", "pixelknn", "--datasets", str(toy_root), "--subsets", "alpha",
            "--setting", "general", "--seeds", "2", "--results", str(res), "--no-table"]
    out = run_bench(args, bench_env, timeout=120)
    assert "1 done" in out.stdout and "1 left to another" in out.stdout, out.stdout
    assert store.status(ids[0]) is None and store.status(ids[1]) == "done"
    assert not stale.exists()                        # released after its record was written
    store.release(ids[0])
    out = run_bench(args, bench_env, timeout=120)
    assert "1 done" in out.stdout and store.status(ids[0]) == "done"
