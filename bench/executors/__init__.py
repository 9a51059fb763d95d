"""Executors: where the runs of a sweep are computed. Each takes the specs still to run and
yields one :class:`Outcome` per spec as its run ends, in any order; the run's record is in
the store by then (written by the job wherever it ran). ``local`` runs worker processes on
this machine; ``ray`` and ``slurm`` (through submitit) run the same job on a cluster.

Whatever the executor, a run is claimed in the store by the process that computes it
(:func:`bench.job.run_claimed`), so two sweeps on one results folder, with any executors,
compute each run once.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Iterator, Optional

from ..api import Resources
from ..plan import RunSpec

EXECUTORS = ("local", "ray", "slurm")
# "elsewhere": another process holds the run's claim or finished it since planning;
# "waiting": a staged run whose input artefact is not there yet (nothing recorded)
OUTCOMES = ("done", "failed", "skipped", "elsewhere", "waiting")


@dataclass(frozen=True)
class Outcome:
    """How one submitted run ended."""

    run_id: str
    status: str                   # one of OUTCOMES
    reason: Optional[str] = None  # why it failed, was skipped or was left to another process


class Executor(ABC):
    """Runs specs somewhere and reports each one's outcome."""

    name: ClassVar[str] = ""

    def notes(self) -> list[str]:
        """Options of this executor that do not apply to this sweep, said, not ignored."""
        return []

    @abstractmethod
    def describe(self, n_runs: int) -> str:
        """Where ``n_runs`` runs would go, in one line (dry runs and the sweep's header)."""

    @abstractmethod
    def submit(self, specs: list[RunSpec]) -> Iterator[Outcome]:
        """Run ``specs``; yield an :class:`Outcome` for each as it ends. Stopping early
        (Ctrl-C, closing the iterator) leaves no half-written record and no claim held."""


def make_executor(name: str, store, cfg) -> Executor:
    """The executor ``--executor NAME`` selects, built from the sweep options ``cfg``."""
    from ..plan import ConfigError

    if name == "local":
        from .local import LocalExecutor

        return LocalExecutor.from_config(store, cfg)
    if name == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor.from_config(store, cfg)
    if name == "slurm":
        from .slurm_executor import SlurmExecutor

        return SlurmExecutor.from_config(store, cfg)
    raise ConfigError(f"--executor {name!r}: use one of {', '.join(EXECUTORS)}")


def resources_for(spec: RunSpec, use_gpu: bool) -> Resources:
    """What ``spec``'s run asks a cluster for: its method's declared
    :class:`~bench.api.Resources` on GPUs (a GPU share, so small runs pack; cores; host
    memory); on CPU-only placement one core and no GPU, as the local executor's
    single-threaded workers (small CPU runs are dominated by per-op overhead)."""
    from ..registry import method_class

    declared = method_class(spec.method).resources
    if use_gpu:
        return declared
    return Resources(gpu_fraction=0.0, cpus=1, memory_gb=declared.memory_gb)


# options that only one executor reads: (field, flag, the executor that reads it)
_EXECUTOR_OPTIONS = (("address", "--address", "ray"),
                     ("slurm_partition", "--slurm-partition", "slurm"),
                     ("slurm_time", "--slurm-time", "slurm"),
                     ("slurm_gpus_per_task", "--slurm-gpus-per-task", "slurm"),
                     ("slurm_array_parallelism", "--slurm-array-parallelism", "slurm"),
                     ("slurm_runs_per_task", "--slurm-runs-per-task", "slurm"),
                     ("slurm_local", "--slurm-local", "slurm"))


def executor_notes(cfg) -> list[str]:
    """A note for each option given for an executor other than ``cfg.executor`` (said,
    not silently ignored)."""
    from dataclasses import fields

    defaults = {f.name: f.default for f in fields(cfg)}
    return [f"{flag} applies to --executor {owner}; this sweep runs with --executor "
            f"{cfg.executor}" for name, flag, owner in _EXECUTOR_OPTIONS
            if owner != cfg.executor and getattr(cfg, name) != defaults[name]]
