"""examples/plugin_template, installed as a user would (pip, into a temporary folder, never
into this environment): its entry point registers `tinycnn`, `bench check-method` passes on
it, it runs in a sweep, and its own one-line contract test passes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.testing import write_toy_layout

TEMPLATE = Path(__file__).resolve().parents[2] / "examples" / "plugin_template"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    target = tmp_path_factory.mktemp("template_site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(TEMPLATE)],
                   check=True, capture_output=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(target) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def bench(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], env=env, text=True,
                          capture_output=True, **kw)


def test_template_is_listed_checked_and_runs_in_a_sweep(env, tmp_path):
    listed = bench(["list", "methods", "tinycnn"], env)
    assert listed.returncode == 0 and "tinycnn" in listed.stdout, listed.stderr
    checked = bench(["check-method", "tinycnn"], env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASS") >= 10 and "FAIL" not in checked.stdout
    data = write_toy_layout(tmp_path / "toy", subsets=("alpha",), n_per_class=5)
    res = tmp_path / "res"
    run = bench(["run", "--methods", "tinycnn", "--datasets", str(data), "--preset", "quick",
                 "--setting", "general", "--results", str(res), "--no-table"], env)
    assert run.returncode == 0, run.stdout + run.stderr
    records = [json.loads(p.read_text()) for p in res.rglob("record.json")]
    assert records and all(r["status"] == "done" for r in records)
    specs = [json.loads(p.read_text()) for p in res.rglob("spec.json")]
    assert {s["img_size"] for s in specs} == {64}  # the quick preset's size


def test_template_own_contract_test_passes(env):
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--rootdir", str(TEMPLATE), str(TEMPLATE / "tests")], env=env,
                         text=True, capture_output=True, cwd=TEMPLATE)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "13 passed" in out.stdout
