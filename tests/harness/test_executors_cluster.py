"""The same sweep through the local, Ray and submitit (local) executors: the same run ids,
records, metrics and per-image scores; two sweeps with different executors on one results
folder compute every run exactly once."""
import json
import os
import subprocess
import sys

import pytest

from .conftest import run_bench

pytest.importorskip("ray")
pytest.importorskip("submitit")

# what may differ between two computations of one run: when and where it ran
_VOLATILE = ("sweep", "started", "finished", "load_s", "fit_s", "score_s", "warnings")


def _grid(toy_root, res, name):
    return ["run", "--methods", "pixelknn,devnet", "--datasets", str(toy_root), "--subsets",
            "alpha", "--setting", "general", "--seeds", "2", "--preset", "quick",
            "--weights", "none", "--results", str(res), "--name", name, "--no-table"]


def _runs(folder):
    out = {}
    for rec_path in sorted(folder.glob("[!.]*/record.json")):
        rec = json.loads(rec_path.read_text())
        out[rec["run_id"]] = ({k: v for k, v in rec.items() if k not in _VOLATILE},
                              (rec_path.parent / "scores.csv").read_text())
    return out


def test_records_identical_across_local_ray_and_submitit(toy_root, tmp_path, bench_env):
    res = tmp_path / "res"
    cores = str(os.cpu_count() or 1)  # one torch thread per worker, as a Ray/submitit task
    variants = {"local": ["--executor", "local", "--workers", cores],
                "ray": ["--executor", "ray", "--workers", "2"],
                "slurm": ["--executor", "slurm", "--slurm-local", "--slurm-runs-per-task", "3",
                          "--slurm-array-parallelism", "2"]}
    runs = {}
    for name, extra in variants.items():
        out = run_bench(_grid(toy_root, res, name) + extra, bench_env, timeout=600)
        assert out.returncode == 0, name + out.stdout + out.stderr
        assert "4 done" in out.stdout, out.stdout
        runs[name] = _runs(res / name)
    assert len(runs["local"]) == 4
    assert all(r["status"] == "done" and r["auroc"] is not None
               for r, _ in runs["local"].values())
    for name in ("ray", "slurm"):
        assert runs[name].keys() == runs["local"].keys(), name
        for rid, (rec, scores) in runs["local"].items():
            assert runs[name][rid][0] == rec, (name, rid)
            assert runs[name][rid][1] == scores, (name, rid)
    # submitit's job files live in the sweep's executor folder, not among the runs
    assert (res / "slurm" / "executors" / "slurm").is_dir()


def test_two_sweeps_with_different_executors_compute_each_run_once(toy_root, tmp_path,
                                                                    bench_env):
    res = tmp_path / "res"
    args = ["run", "--methods", "epgood", "--set", "epgood.sleep=1.0", "--datasets",
            str(toy_root), "--setting", "general", "--shots", "1,2", "--seeds", "2",
            "--results", str(res), "--weights", "none", "--no-table"]
    procs = [subprocess.Popen([sys.executable, "-m", "bench.cli", *args, *extra],
                              env=bench_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for extra in (["--executor", "local", "--workers", "2"],
                           ["--executor", "slurm", "--slurm-local",
                            "--slurm-array-parallelism", "2"])]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    recs = [json.loads(p.read_text()) for p in (res / "main").glob("[!.]*/record.json")]
    planned = int(outs[0][0].split(" runs planned")[0].split()[-1])
    assert len(recs) == planned and all(r["status"] == "done" for r in recs)
    for r in recs:  # each run was fitted by exactly one process
        log = (res / "main" / "logs" / f"{r['run_id']}.log").read_text()
        assert log.count("] fit ") == 1, log
    assert not list((res / "main" / "claims").iterdir())
    done = [int(o[0].split(" done,")[0].split()[-1]) for o in outs]
    assert sum(done) == planned, outs  # the rest was "left to another bench run"


def test_slurm_packs_short_runs_into_few_array_tasks(tmp_path):
    """By default about four array tasks per parallel slot; an explicit count wins."""
    from bench.executors.slurm_executor import SlurmExecutor
    from bench.store import Store

    store = Store(tmp_path / "res", "main")
    auto = SlurmExecutor(store, local=True, array_parallelism=2)
    assert auto.per_task(96) == 12 and auto.per_task(3) == 1
    assert "8 array task(s) of up to 12 run(s), 2 at a time" in auto.describe(96)
    assert SlurmExecutor(store, local=True, array_parallelism=2, runs_per_task=3).per_task(96) == 3
    assert SlurmExecutor(store, array_parallelism=64).per_task(1750) == 7


def test_staged_runs_wait_for_their_source_in_every_executor(toy_root, tmp_path, bench_env):
    """Table 9's fine-tuning runs start only after the source model exists, through
    submitit's executor as through the local one, and give the same records."""
    res = tmp_path / "res"
    base = ["run", "--grid", "table9", "--datasets", str(toy_root), "--preset", "quick",
            "--seed-list", "0", "--set", "*.epochs=1", "--set", "dra.steps_per_epoch=1",
            "--set", "*.img_size=32", "--results", str(res), "--no-table"]
    runs = {}
    for name, extra in {"local": ["--executor", "local"],
                        "slurm": ["--executor", "slurm", "--slurm-local",
                                  "--slurm-array-parallelism", "2"]}.items():
        out = run_bench(base + ["--name", name] + extra, bench_env, timeout=600)
        assert out.returncode == 0, name + out.stdout + out.stderr
        assert "stage 2 of 2: 2 runs" in out.stdout and "6 done" in out.stdout, out.stdout
        runs[name] = _runs(res / name)
    assert runs["slurm"].keys() == runs["local"].keys()
    for rid, (rec, scores) in runs["local"].items():
        assert runs["slurm"][rid] == (rec, scores), rid
    staged = [r for r, _ in runs["local"].values() if r["method_state"].get("adapting_")]
    assert len(staged) == 2
