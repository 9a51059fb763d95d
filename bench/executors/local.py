"""The local executor: long-lived worker processes, one per GPU slot (or ``--workers N`` on
the CPU), each importing torch once and running many runs.

A worker is pinned to its GPU with ``CUDA_VISIBLE_DEVICES`` before torch (and so CUDA) is
imported in it. A worker that dies mid-run (segfault, OOM kill) is replaced and its run
recorded as failed; a run that raises is recorded as failed by the worker itself and the
sweep goes on. On Ctrl-C only the sweep process acts: workers ignore SIGINT (they start with
it blocked), are ended at once, and their unfinished runs leave no folder and no claim, so
the same command resumes. Each worker claims the run it computes (``job.run_claimed``).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Iterator, Optional

from ..plan import ConfigError, RunSpec
from ..store import Store
from . import Executor, Outcome


def visible_gpus() -> list[str]:
    """GPU indices from ``CUDA_VISIBLE_DEVICES`` or ``nvidia-smi`` (without importing torch)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]


@dataclass
class Slot:
    """Where one worker runs: a GPU index (None = CPU) and its CPU thread budget."""

    gpu: Optional[str]
    threads: int

    @property
    def device(self) -> str:
        return "cpu" if self.gpu is None else "cuda"

    def describe(self) -> str:
        return "cpu" if self.gpu is None else f"gpu {self.gpu}"


def plan_slots(gpus: Optional[str], jobs_per_gpu: int, workers: Optional[int]) -> list[Slot]:
    """``--gpus`` (comma list of GPU indices, ``all`` or ``none``), ``--jobs-per-gpu``,
    ``--workers``. A GPU index that this machine does not show is an error here, before any
    worker starts (not one failed record per run)."""
    cores = os.cpu_count() or 1
    if gpus in (None, "all"):
        ids = visible_gpus()
    elif gpus in ("none", ""):
        ids = []
    else:
        ids = [g.strip() for g in gpus.split(",") if g.strip()]
        bad = [g for g in ids if not g.isdigit()]
        if bad:
            raise ConfigError(f"--gpus {gpus!r}: use all, none or a comma list of GPU indices "
                              f"(e.g. 0,1); {', '.join(bad)} is not an index")
        visible = visible_gpus()
        missing = [g for g in ids if g not in visible]
        if missing:
            raise ConfigError(f"--gpus {gpus}: no GPU {', '.join(missing)} on this machine "
                              f"(visible: {', '.join(visible) or 'none'}); use --gpus none to "
                              f"run on the CPU")
        ids = list(dict.fromkeys(ids))
    if ids:
        n = len(ids) * jobs_per_gpu
        return [Slot(g, max(1, cores // n)) for g in ids for _ in range(jobs_per_gpu)]
    # Small CPU runs are dominated by per-op overhead: several single-threaded workers beat
    # one multi-threaded worker, so the default is one worker per core (at most 8).
    n = workers or min(cores, 8)
    return [Slot(None, max(1, cores // n)) for _ in range(n)]


def slot_notes(slots: list[Slot], gpus: Optional[str], jobs_per_gpu: int,
               workers: Optional[int]) -> list[str]:
    """What of ``--gpus``/``--jobs-per-gpu``/``--workers`` the chosen slots do not use, said
    rather than silently ignored."""
    notes = []
    on_gpu = any(s.gpu is not None for s in slots)
    if gpus == "all" and not on_gpu:
        notes.append("--gpus all: no GPU is visible on this machine; running on the CPU")
    if on_gpu and workers is not None:
        notes.append(f"--workers {workers} applies to CPU runs; this sweep runs on GPUs "
                     f"({jobs_per_gpu} per GPU, set with --jobs-per-gpu)")
    if not on_gpu and jobs_per_gpu != 1:
        notes.append(f"--jobs-per-gpu {jobs_per_gpu} applies to GPU runs; this sweep runs on "
                     f"the CPU ({len(slots)} workers, set with --workers)")
    return notes


def _worker_main(conn, slot: Slot, results: str, sweep: str, save_models: bool,
                 deterministic: bool, rerun_failed: bool) -> None:
    """Worker process: pin the device, import torch once, then run specs until told to stop."""
    # Ctrl-C reaches the whole process group; the sweep process alone handles it (and stops
    # this worker), so a worker never prints a KeyboardInterrupt traceback. SIGINT arrives
    # blocked (see _Worker): ignoring it first discards one already pending.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with_parent()
    # before CUDA starts in this process
    os.environ["CUDA_VISIBLE_DEVICES"] = slot.gpu if slot.gpu is not None else ""
    from ..job import configure_torch, run_claimed

    configure_torch(slot.threads, deterministic)
    store = Store(results, sweep)
    while True:
        spec = conn.recv()
        if spec is None:
            break
        status, reason = run_claimed(spec, store, device=slot.device, save_model=save_models,
                                     rerun_failed=rerun_failed)
        conn.send((spec.run_id, status, reason))


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the sweep process dies (``kill -9``), so
    no orphan keeps computing a run the resumed sweep will redo."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _start_sigint_blocked(proc) -> None:
    """Start a worker with SIGINT blocked (the mask is inherited through fork and exec), so
    a Ctrl-C while it boots cannot raise a KeyboardInterrupt in it before it ignores SIGINT.
    A Ctrl-C meanwhile is kept for this process and raised once the worker has started."""
    if not hasattr(signal, "pthread_sigmask") or \
            threading.current_thread() is not threading.main_thread():
        proc.start()
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()  # it unblocks SIGINT when it first starts: start it now
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *a: caught.append(True))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        proc.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


class _Worker:
    def __init__(self, ctx, slot: Slot, args: tuple):
        self.slot = slot
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, slot, *args), daemon=True)
        self._child_conn = child
        self.task: Optional[RunSpec] = None

    def start(self) -> None:
        _start_sigint_blocked(self.proc)
        self._child_conn.close()


class LocalExecutor(Executor):
    """Long-lived worker processes on this machine, one per slot (``--gpus``,
    ``--jobs-per-gpu``, ``--workers``)."""

    name = "local"

    def __init__(self, store: Store, slots: list[Slot], *, save_models: bool = False,
                 deterministic: bool = False, rerun_failed: bool = False,
                 notes: Optional[list[str]] = None):
        self.store, self.slots = store, slots
        self.save_models, self.deterministic = save_models, deterministic
        self.rerun_failed = rerun_failed
        self._notes = list(notes or [])

    @classmethod
    def from_config(cls, store: Store, cfg) -> "LocalExecutor":
        slots = plan_slots(cfg.gpus, cfg.jobs_per_gpu, cfg.workers)
        return cls(store, slots, save_models=cfg.save_models, deterministic=cfg.deterministic,
                   rerun_failed=cfg.retry_failed,
                   notes=slot_notes(slots, cfg.gpus, cfg.jobs_per_gpu, cfg.workers))

    def notes(self) -> list[str]:
        return list(self._notes)

    def describe(self, n_runs: int) -> str:
        slots = self.slots[:n_runs] or self.slots[:1]
        return f"{len(slots)} worker(s): {', '.join(s.describe() for s in slots)}"

    def submit(self, specs: list[RunSpec]) -> Iterator[Outcome]:
        return run_local(specs, self.store, self.slots, save_models=self.save_models,
                         deterministic=self.deterministic, rerun_failed=self.rerun_failed)


def run_local(specs: list[RunSpec], store: Store, slots: list[Slot], *,
              save_models: bool = False, deterministic: bool = False,
              rerun_failed: bool = False) -> Iterator[Outcome]:
    """Run ``specs`` on worker processes, yielding each one's outcome as it ends."""
    from ..job import record_failure

    if not specs:
        return
    ctx = mp.get_context("spawn")  # fresh interpreters: no CUDA state inherited from the parent
    queue = list(specs)
    slots = slots[:len(specs)] or slots[:1]
    started: list[_Worker] = []  # every worker of this call, for the cleanup on Ctrl-C
    args = (str(store.dir.parent), store.sweep, save_models, deterministic, rerun_failed)

    def start(slot: Slot) -> _Worker:
        w = _Worker(ctx, slot, args)
        started.append(w)
        w.start()
        return w

    workers: list[_Worker] = []
    try:
        for s in slots:
            workers.append(start(s))
        while queue or any(w.task for w in workers):
            for w in workers:
                if w.task is None and queue:
                    w.task = queue.pop(0)
                    w.conn.send(w.task)
            ready = wait([w.conn for w in workers if w.task] +
                         [w.proc.sentinel for w in workers if w.task], timeout=5.0)
            for i, w in enumerate(list(workers)):
                if w.task is None:
                    continue
                if w.conn in ready:
                    try:
                        run_id, status, reason = w.conn.recv()
                    except (EOFError, OSError):
                        status = None
                    if status is not None:
                        w.task = None
                        yield Outcome(run_id, status, reason)
                        continue
                if not w.proc.is_alive():
                    spec = w.task
                    reason = (f"worker process died (exit code {w.proc.exitcode}) while "
                              f"running; see {store.log_path(spec.run_id)}")
                    record_failure(spec, store, reason)
                    store.release(spec.run_id)
                    w.task = None
                    workers[i] = start(w.slot)
                    yield Outcome(spec.run_id, "failed", reason)
    except BaseException:  # Ctrl-C, the consumer closing us, or a bug: stop now, re-raise
        _stop_now(started, store)
        raise
    _stop_when_idle(workers)


def _stop_when_idle(workers: list[_Worker]) -> None:
    """End idle workers after the last run: tell them to stop, wait, then terminate."""
    for w in workers:
        try:
            if w.proc.is_alive():
                w.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
    for w in workers:
        w.proc.join(timeout=10)
        if w.proc.is_alive():
            w.proc.terminate()


def _stop_now(workers: list[_Worker], store: Store) -> None:
    """Interrupted: end the workers at once (their runs are lost and rerun on resume), then
    remove what their unfinished runs left half-written and release those claims. Further
    Ctrl-C is ignored meanwhile, so the cleanup is never cut short."""
    main = threading.current_thread() is threading.main_thread()  # signal.signal needs it
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        for w in workers:
            if w.proc.is_alive():
                w.proc.terminate()
        for w in workers:
            w.proc.join(timeout=5)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)
            if w.task is not None:
                store.discard_partial(w.task.run_id)
                store.release(w.task.run_id)
                w.task = None
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
