"""The Ray executor (``--executor ray [--address auto|HOST:PORT]``, extra ``[ray]``): each
run is one Ray task with its resource request (CPUs, a whole or fractional GPU, memory) from
the method's resource hint, so small runs pack several per GPU. Without ``--address`` a
local Ray cluster is started for the sweep and stopped after it.

A task computes its run through :func:`bench.job.run_claimed`, like a local worker: it claims
the run in the shared results folder, writes the record there and releases the claim. A task
whose worker process dies (killed, out of host memory, node lost) is retried by Ray up to
``max_retries`` times; the retry takes over the dead worker's claim. Only a task that is
still lost after that is recorded failed here. Ctrl-C cancels every task (force-killing
running ones), removes their half-written folders and releases their claims.
"""
from __future__ import annotations

import os
from typing import Iterator, Optional

from ..plan import ConfigError, RunSpec
from ..store import Store
from . import Executor, Outcome, resources_for

MAX_RETRIES = 3


def _ray_task(spec: RunSpec, results: str, sweep: str, save_models: bool, deterministic: bool,
              rerun_failed: bool, threads: int, use_gpu: bool) -> tuple[str, str, Optional[str]]:
    """One run inside a Ray worker (Ray sets ``CUDA_VISIBLE_DEVICES`` to its GPU share)."""
    from ..job import configure_torch, run_claimed

    if not use_gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    configure_torch(threads, deterministic)
    status, reason = run_claimed(spec, Store(results, sweep), device="cuda" if use_gpu else "cpu",
                                 save_model=save_models, rerun_failed=rerun_failed)
    return spec.run_id, status, reason


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--executor ray needs Ray: pip install 'osad-bench[ray]' (or "
                          "pip install ray)") from exc
    return ray


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, store: Store, *, address: Optional[str] = None, gpus: Optional[str] = None,
                 save_models: bool = False, deterministic: bool = False,
                 rerun_failed: bool = False, max_retries: int = MAX_RETRIES,
                 local_cpus: Optional[int] = None):
        import_ray()  # missing Ray is an error before planning, not after
        self.store, self.address, self.gpus = store, address, gpus
        self.save_models, self.deterministic = save_models, deterministic
        self.rerun_failed, self.max_retries = rerun_failed, max_retries
        self.local_cpus = local_cpus

    @classmethod
    def from_config(cls, store: Store, cfg) -> "RayExecutor":
        return cls(store, address=cfg.address, gpus=cfg.gpus, save_models=cfg.save_models,
                   deterministic=cfg.deterministic, rerun_failed=cfg.retry_failed,
                   local_cpus=cfg.workers)

    def describe(self, n_runs: int) -> str:
        where = (f"the Ray cluster at {self.address}" if self.address else
                 "a local Ray cluster started for this sweep")
        return f"{n_runs} Ray task(s) on {where}"

    def submit(self, specs: list[RunSpec]) -> Iterator[Outcome]:
        from ..job import record_failure

        if not specs:
            return
        ray = import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            init = dict(include_dashboard=False, log_to_driver=False,
                        configure_logging=False)
            if self.address:
                ray.init(address=self.address, **init)
            else:
                ray.init(num_cpus=self.local_cpus, **init)
        try:
            cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
            use_gpu = cluster_gpus > 0 and self.gpus != "none"
            task = ray.remote(_ray_task)
            pending = {}
            for spec in specs:
                res = resources_for(spec, use_gpu)
                opts = dict(num_cpus=res.cpus, num_gpus=res.gpu_fraction if use_gpu else 0,
                            max_retries=self.max_retries, retry_exceptions=False)
                if use_gpu:  # host memory matters where GPU runs pack; CPU runs take 1 core
                    opts["memory"] = int(res.memory_gb * 2**30)
                ref = task.options(**opts).remote(
                    spec, str(self.store.dir.parent), self.store.sweep, self.save_models,
                    self.deterministic, self.rerun_failed, max(1, int(res.cpus)),
                    use_gpu and res.gpu_fraction > 0)  # a CPU-only method gets no device
                pending[ref] = spec
            try:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
                    for ref in ready:
                        spec = pending.pop(ref)
                        try:
                            run_id, status, reason = ray.get(ref)
                        except Exception as exc:  # lost after max_retries, or Ray itself failed
                            reason = (f"Ray task lost after {self.max_retries} retries: "
                                      f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                            if self.store.status(spec.run_id) is None:
                                record_failure(spec, self.store, reason)
                            self.store.release_if_stale(spec.run_id)
                            yield Outcome(spec.run_id, "failed", reason)
                            continue
                        yield Outcome(run_id, status, reason)
            except BaseException:  # Ctrl-C or the consumer stopped: end every task now
                for ref, spec in pending.items():
                    ray.cancel(ref, force=True)
                for ref, spec in pending.items():
                    try:
                        ray.get(ref, timeout=10)
                    except Exception:
                        pass
                    if self.store.release_if_stale(spec.run_id):  # its task is gone
                        self.store.discard_partial(spec.run_id)
                raise
        finally:
            if started_here:
                ray.shutdown()
