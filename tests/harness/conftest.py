"""A third-party plugin package, installed into a temporary folder (never into the user's
environment) and made visible to `bench` subprocesses through PYTHONPATH."""
import os
import subprocess
import sys

import pytest

PLUGIN = '''
"""Test plugins: one that works, one that raises, one that kills its process, one slow."""
import os
import time
import numpy as np
from bench import Method, MethodCard, register_method


class _Base(Method):
    uses_labeled_anomalies = True
    card = MethodCard(paper="test plugin")

    def __init__(self, img_size: int = 32, sleep: float = 0.0):
        self.img_size = img_size
        self.sleep = sleep

    def fit(self, train, ctx=None):
        time.sleep(self.sleep)
        self.mean_ = train.normal.reshape(len(train.normal), -1).mean(0)
        return self

    def score(self, images):
        self._check_fitted("mean_")
        return np.abs(images.reshape(len(images), -1) - self.mean_).mean(1)


@register_method("epgood")
class Good(_Base):
    pass


class Boom(_Base):
    def fit(self, train, ctx=None):
        raise RuntimeError("boom: this plugin always fails")


class Crash(_Base):
    def fit(self, train, ctx=None):
        os._exit(3)


class NaNLoss(_Base):
    """Trains through the shared fit loop on a loss that is NaN from the first step."""
    def fit(self, train, ctx=None):
        import torch
        from bench.methods.common.training import fit_loop
        w = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([w], lr=0.1)
        fit_loop(lambda: (w * float("nan")).sum(), opt, modules=[], epochs=1,
                 steps_per_epoch=4, progress=ctx.progress)
        return self


class OutOfMemory(_Base):
    """Raises what CUDA raises when a GPU runs out of memory (simulated on the CPU)."""
    def fit(self, train, ctx=None):
        import torch
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class DieOnce(_Base):
    """Kills its own process the first time it runs (a worker lost mid-run), then works:
    ``marker`` is the file that remembers the first attempt."""
    def __init__(self, img_size: int = 32, sleep: float = 0.0, marker: str = ""):
        super().__init__(img_size, sleep)
        self.marker = marker

    def fit(self, train, ctx=None):
        if self.marker and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(9)
        return super().fit(train, ctx)
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"
[project]
name = "bench-test-plugin"
version = "0.0.1"
[project.entry-points."bench.methods"]
epgood = "bench_test_plugin"
epboom = "bench_test_plugin:Boom"
epcrash = "bench_test_plugin:Crash"
epnan = "bench_test_plugin:NaNLoss"
epoom = "bench_test_plugin:OutOfMemory"
epdieonce = "bench_test_plugin:DieOnce"
'''


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory):
    """Folder with the installed test plugin (dist-info + module) for PYTHONPATH."""
    src = tmp_path_factory.mktemp("plugin_src")
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "bench_test_plugin.py").write_text(PLUGIN)
    target = tmp_path_factory.mktemp("plugin_site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(src)], check=True,
                   capture_output=True)
    return target


@pytest.fixture
def bench_env(plugin_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(plugin_path) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_bench(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], env=env, text=True,
                          capture_output=True, **kw)


def execute_plan(plan, store):
    """Run a plan in this process through the real runner (no worker processes): skipped
    and failed planned runs recorded as `bench run` records them."""
    from bench.job import execute, record_failure, record_skip
    statuses = {}
    for spec in plan.specs:
        statuses[spec.run_id] = execute(spec, store, log=lambda text: None)
    for spec, reason in plan.skipped:
        record_skip(spec, store, reason)
        statuses[spec.run_id] = "skipped"
    for spec, reason in plan.failed:
        record_failure(spec, store, reason)
        statuses[spec.run_id] = "failed"
    return statuses


def prepared_toy(name, **layout):
    """A toy copy of the registered dataset ``name`` under $BENCH_DATA_ROOT (MVTec layout
    with the `.prepared` marker), so the registry treats it as prepared."""
    from bench.datasets.base import default_data_root
    from bench.registry import get_dataset
    from bench.testing import write_toy_layout
    root = get_dataset(name).root(default_data_root())
    write_toy_layout(root, **layout)
    (root / ".prepared").write_text("toy copy for a test\n")
    return root
