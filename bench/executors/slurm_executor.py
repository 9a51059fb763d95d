"""The Slurm executor through submitit (``--executor slurm``, extra ``[slurm]``): the runs are
submitted as one Slurm job array, ``--slurm-runs-per-task`` runs per array task (so short runs
do not flood the scheduler with 30-second jobs), at most ``--slurm-array-parallelism`` tasks
at a time, each with ``--slurm-time`` minutes, ``--slurm-gpus-per-task`` GPUs and the
runs' CPU request. ``--slurm-local`` runs the same code path through submitit's
``LocalExecutor`` (subprocesses on this machine, no Slurm needed), which is what the tests and
a user without a cluster use.

An array task computes its runs one after another through :func:`bench.job.run_claimed`, in
the shared results folder (so the folder must be on a filesystem every node sees). submitit
keeps its job files under ``<results>/<sweep>/executors/slurm/``. A task that dies (time
limit, node failure, killed) leaves its finished runs recorded; its other runs are recorded
failed here with submitit's reason, and ``--retry-failed`` reruns them. Ctrl-C cancels the
array (``scancel``) and releases the claims of its unfinished runs.
"""
from __future__ import annotations

import os
import time
from typing import Iterator, Optional

from ..plan import ConfigError, RunSpec
from ..store import Store
from . import Executor, Outcome, resources_for

POLL_S = 1.0


def _slurm_task(specs: list[RunSpec], results: str, sweep: str, save_models: bool,
                deterministic: bool, rerun_failed: bool, threads: int,
                use_gpu: bool) -> list[tuple[str, str, Optional[str]]]:
    """One array task: its runs in order, each under its own claim."""
    if not use_gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from ..job import configure_torch, run_claimed

    configure_torch(threads, deterministic)
    store = Store(results, sweep)
    out = []
    for spec in specs:
        status, reason = run_claimed(spec, store, device="cuda" if use_gpu else "cpu",
                                     save_model=save_models, rerun_failed=rerun_failed)
        out.append((spec.run_id, status, reason))
    return out


def import_submitit():
    try:
        import submitit
    except ImportError as exc:
        raise ConfigError("--executor slurm needs submitit: pip install 'osad-bench[slurm]' "
                          "(or pip install submitit)") from exc
    return submitit


class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(self, store: Store, *, partition: Optional[str] = None, time_min: int = 60,
                 gpus_per_task: int = 0, array_parallelism: Optional[int] = None,
                 runs_per_task: Optional[int] = None, local: bool = False, save_models: bool = False,
                 deterministic: bool = False, rerun_failed: bool = False):
        import_submitit()  # missing submitit is an error before planning, not after
        self.store, self.partition, self.time_min = store, partition, time_min
        self.gpus_per_task, self.runs_per_task, self.local = gpus_per_task, runs_per_task, local
        self.array_parallelism = array_parallelism or (min(os.cpu_count() or 1, 8) if local
                                                       else 64)
        self.save_models, self.deterministic = save_models, deterministic
        self.rerun_failed = rerun_failed

    @classmethod
    def from_config(cls, store: Store, cfg) -> "SlurmExecutor":
        return cls(store, partition=cfg.slurm_partition, time_min=cfg.slurm_time,
                   gpus_per_task=cfg.slurm_gpus_per_task,
                   array_parallelism=cfg.slurm_array_parallelism,
                   runs_per_task=cfg.slurm_runs_per_task, local=cfg.slurm_local,
                   save_models=cfg.save_models, deterministic=cfg.deterministic,
                   rerun_failed=cfg.retry_failed)

    def per_task(self, n_runs: int) -> int:
        """Runs one array task computes one after another: ``--slurm-runs-per-task``, or by
        default about four tasks per parallel slot. A task pays a process start and the torch
        import (seconds), so one short run per task doubled the 96-run quick grid's wall time
        (benchmarks/results/executors.md); four waves still balance uneven runs and keep a
        lost task's retry small."""
        if self.runs_per_task:
            return self.runs_per_task
        return max(1, -(-n_runs // (4 * self.array_parallelism)))

    def describe(self, n_runs: int) -> str:
        per_task = self.per_task(n_runs)
        tasks = -(-n_runs // per_task) if n_runs else 0
        where = ("submitit's local executor (no Slurm)" if self.local else
                 f"Slurm partition {self.partition or '(default)'}")
        return (f"{tasks} array task(s) of up to {per_task} run(s), "
                f"{self.array_parallelism} at a time, on {where}")

    def _executor(self):
        submitit = import_submitit()
        folder = self.store.executor_dir("slurm") / "%j"
        if self.local:
            ex = submitit.LocalExecutor(folder=folder)
            ex.update_parameters(timeout_min=self.time_min, gpus_per_node=self.gpus_per_task,
                                 cpus_per_task=1)
        else:
            ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
            params = dict(timeout_min=self.time_min, gpus_per_node=self.gpus_per_task,
                          cpus_per_task=1, nodes=1, tasks_per_node=1,
                          slurm_array_parallelism=self.array_parallelism)
            if self.partition:
                params["slurm_partition"] = self.partition
            ex.update_parameters(**params)
        return ex

    def submit(self, specs: list[RunSpec]) -> Iterator[Outcome]:
        from ..job import record_failure

        if not specs:
            return
        ex = self._executor()
        use_gpu = self.gpus_per_task > 0
        threads = max(1, int(max(resources_for(s, use_gpu).cpus for s in specs)))
        per_task = self.per_task(len(specs))
        chunks = [specs[i:i + per_task] for i in range(0, len(specs), per_task)]
        args = (str(self.store.dir.parent), self.store.sweep, self.save_models,
                self.deterministic, self.rerun_failed, threads, use_gpu)
        waiting = list(chunks)
        running: list[tuple[object, list[RunSpec]]] = []

        def launch(batch: list[list[RunSpec]]) -> None:
            if not batch:
                return
            if self.local:  # subprocesses: submitted as slots free up
                running.extend((ex.submit(_slurm_task, c, *args), c) for c in batch)
            else:  # one job array; Slurm enforces the parallelism
                with ex.batch():
                    jobs = [ex.submit(_slurm_task, c, *args) for c in batch]
                running.extend(zip(jobs, batch))

        def taken(spec: RunSpec) -> Optional[str]:
            """Why another process has this run now (claimed live, or recorded since
            planning), so no task is started only to find that out."""
            status = self.store.status(spec.run_id)
            if status is not None and not (status == "failed" and self.rerun_failed):
                return f"recorded {status} by another process since planning"
            holder = self.store.claim_holder(spec.run_id)
            return f"claimed by pid {holder.get('pid')} on {holder.get('host')}" \
                if holder else None

        def next_chunk() -> Iterator[Outcome]:
            """Launch the next waiting chunk without the runs another process took."""
            while waiting:
                chunk, left = waiting.pop(0), []
                for spec in chunk:
                    reason = taken(spec)
                    if reason:
                        yield Outcome(spec.run_id, "elsewhere", reason)
                    else:
                        left.append(spec)
                if left:
                    launch([left])
                    return

        try:
            if self.local:  # subprocesses: at most array_parallelism at a time
                for _ in range(self.array_parallelism):
                    yield from next_chunk()
            else:
                launch(waiting)
                waiting = []
            while running:
                finished = [(j, c) for j, c in running if j.done()]
                if not finished:
                    time.sleep(POLL_S)
                    continue
                for job, chunk in finished:
                    running.remove((job, chunk))
                    try:
                        results = job.result()
                    except Exception as exc:  # the task died: its unrecorded runs failed
                        reason = (f"Slurm task {job.job_id} failed: {type(exc).__name__}: "
                                  f"{str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ''}")
                        results = []
                        for spec in chunk:
                            status = self.store.status(spec.run_id)
                            self.store.release_if_stale(spec.run_id)
                            if status is None:
                                record_failure(spec, self.store, reason)
                                results.append((spec.run_id, "failed", reason))
                            else:
                                rec = self.store.record(spec.run_id) or {}
                                results.append((spec.run_id, status, rec.get("reason")))
                    for run_id, status, reason in results:
                        yield Outcome(run_id, status, reason)
                    yield from next_chunk()
        except BaseException:  # Ctrl-C or the consumer stopped: cancel, then clean up
            for job, chunk in running:
                try:
                    job.cancel(check=False)
                except Exception:
                    pass
            for job, chunk in running:
                for spec in chunk:
                    if self.store.release_if_stale(spec.run_id):
                        self.store.discard_partial(spec.run_id)
            raise
