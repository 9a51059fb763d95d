"""The results store: one folder per run, written atomically, read back into one table.

``<results>/<sweep>/<run id>/`` holds ``record.json`` (status, reason or traceback, metrics,
timings, peak GPU memory, the effective method state the method chose to expose),
``spec.json``, ``env.json``, ``split.json`` (the split manifest), ``scores.csv`` (one row per
test image) and, with ``--save-models``, ``model.pt``. The folder is built under a temporary
name and renamed into place, so a killed sweep never leaves a half-written run that looks
finished. Per-run logs live in ``<results>/<sweep>/logs/<run id>.log`` (written while the run
runs). ``done`` and ``skipped`` count as finished; ``failed`` runs are rerun with
``--retry-failed``.

Claims (``<results>/<sweep>/claims/<run id>``) stop two ``bench run`` processes sharing a
results folder, with any executors on any machines, from computing the same run: the
process that computes a run claims it first (host, pid, an owner token), renews the claim
while it runs (heartbeat) and releases it when its record is written. A claim whose process
is gone (same host) or whose heartbeat is older than ``CLAIM_TTL_S`` (another host) is
stale and taken over, so a killed sweep resumes.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from .util import atomic_write, dump_json, pid_alive, replace_dir, write_files

FINISHED = ("done", "skipped")
# A claim's owner renews it every CLAIM_HEARTBEAT_S; one not renewed for CLAIM_TTL_S (an
# owner on another host that died) is stale and taken over.
CLAIM_HEARTBEAT_S = 30.0
CLAIM_TTL_S = 600.0
STATUSES = ("done", "failed", "skipped")
METRIC_FIELDS = ("auroc", "auprc", "n_test", "n_test_anomalies", "auroc_seen", "auroc_unseen")


MIN_FREE_MB = 64


def probe_write(folder: Path) -> None:
    """Create and remove a small file in ``folder``: the one test that catches a read-only
    filesystem or a full disk (permission bits do not, e.g. for root)."""
    path = folder / f".bench-write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(path, "wb") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class RunRecord:
    """What ``record.json`` holds for one run, whatever its status: the cell it belongs to,
    the outcome (status, reason, traceback, failure details), the metrics, the timings and
    what the method chose to expose. Built by :meth:`for_spec` (the one place that knows
    which spec fields a record repeats) and written by :meth:`Store.write` alone."""

    run_id: str
    config_id: str
    sweep: str
    status: Optional[str]
    method: str
    dataset: str
    subset: str
    setting: str
    known_class: Optional[str]
    shots: int
    seed: int
    split_seed: int
    split_policy: str
    preset: str
    notes: list
    reason: Optional[str] = None
    traceback: Optional[str] = None
    failure: Optional[dict] = None          # kind (nan_loss, out_of_memory, ...), step, loss…
    metrics: dict = field(default_factory=dict)
    load_s: Optional[float] = None
    fit_s: Optional[float] = None
    score_s: Optional[float] = None
    peak_gpu_mem_mb: Optional[float] = None
    started: Optional[str] = None
    finished: Optional[str] = None
    method_state: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    spec: dict = field(default_factory=dict, repr=False)   # written as spec.json
    env: Optional[dict] = field(default=None, repr=False)  # written as env.json

    @classmethod
    def for_spec(cls, spec, sweep: str, status: Optional[str] = None, **fields) -> "RunRecord":
        """A record of ``spec`` (a :class:`~bench.plan.RunSpec`) with ``fields`` set."""
        return cls(run_id=spec.run_id, config_id=spec.config_id, sweep=sweep, status=status,
                   method=spec.method, dataset=spec.dataset, subset=spec.subset,
                   setting=spec.setting, known_class=spec.known_class, shots=spec.shots,
                   seed=spec.seed, split_seed=spec.split_seed, split_policy=spec.split_policy,
                   preset=spec.preset, notes=list(spec.notes), spec=spec.to_dict(), **fields)

    def to_dict(self) -> dict:
        """The ``record.json`` content: metrics at the top level (as reports read them)."""
        d = asdict(self)
        for k in ("spec", "env", "metrics"):
            d.pop(k)
        d.update({k: None for k in METRIC_FIELDS})
        d.update(self.metrics)
        return d


class StoreError(ValueError):
    """A results folder or sweep name that cannot be used; the message names it and says
    what to do."""


class Store:
    """Run folders of one sweep."""

    def __init__(self, results: Path | str, sweep: str):
        if (not sweep or sweep.strip() != sweep or sweep.startswith(".")
                or any(c in sweep for c in "/\\\0") or len(sweep) > 200):
            raise StoreError(f"sweep name {sweep!r} must be a plain folder name (no '/' or "
                             f"'\\', not starting with '.', no surrounding spaces), e.g. main")
        self.dir = Path(results).expanduser() / sweep
        self.sweep = sweep

    def check_writable(self) -> None:
        """Fail before any work, writing nothing, when the sweep folder cannot be created or
        written: the results path (or a folder above it) is a file, no write permission, a
        read-only filesystem, or under ``MIN_FREE_MB`` free on its disk."""
        existing = next(p for p in (self.dir, *self.dir.parents) if p.exists())
        if not existing.is_dir():
            raise StoreError(f"{existing} is a file, not a folder, so {self.dir} cannot be "
                             f"created; pass --results DIR with a folder (created if missing)")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise StoreError(f"cannot write under {existing} (permission denied); pass "
                             f"--results DIR with a folder you can write to")
        try:
            probe_write(existing)
        except OSError as exc:
            raise StoreError(f"cannot write under {existing}: {exc.strerror or exc}; pass "
                             f"--results DIR with a writable folder") from exc
        free_mb = shutil.disk_usage(existing).free / 2**20
        if free_mb < MIN_FREE_MB:
            raise StoreError(f"the disk of {existing} has {free_mb:.1f} MiB free (a sweep "
                             f"needs at least {MIN_FREE_MB} MiB); free some space or pass "
                             f"--results DIR on another disk")

    def unreadable(self, run_id: str) -> Optional[str]:
        """Why the run's ``record.json`` exists but cannot be used (half-written or corrupt,
        e.g. left by a crash of an older harness), or None."""
        path = self.run_dir(run_id) / "record.json"
        if not path.exists():
            return None
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        if not isinstance(rec, dict) or rec.get("status") not in STATUSES:
            return "no valid status in it"
        return None

    def run_dir(self, run_id: str) -> Path:
        return self.dir / run_id

    def executor_dir(self, name: str) -> Path:
        """Where executor ``name`` keeps its own files for this sweep (submitit's job
        files)."""
        return self.dir / "executors" / name

    def artefact(self, run_id: str, name: str) -> Optional[Path]:
        """The file ``name`` (e.g. ``model.pt``) a finished run kept, or None when the run
        has no ``done`` record or did not keep it (what a staged run waits for)."""
        path = self.run_dir(run_id) / name
        return path if self.status(run_id) == "done" and path.is_file() else None

    def log_path(self, run_id: str) -> Path:
        return self.dir / "logs" / f"{run_id}.log"

    def record(self, run_id: str) -> Optional[dict]:
        """The run's record, or None when it has none (or an unreadable one)."""
        try:
            return json.loads((self.run_dir(run_id) / "record.json").read_text())
        except (OSError, ValueError):
            return None

    def status(self, run_id: str) -> Optional[str]:
        rec = self.record(run_id)
        return rec.get("status") if isinstance(rec, dict) else None  # unreadable: not run

    def write(self, record: RunRecord, files: Optional[dict[str, bytes | str]] = None) -> Path:
        """Write the folder of one run: ``record.json``, ``spec.json``, ``env.json`` (when
        the record has them) and the run's other ``files`` (split, scores, model)."""
        out = dict(files or {})
        if record.spec:
            out["spec.json"] = dump_json(record.spec)
        if record.env is not None:
            out["env.json"] = dump_json(record.env)
        out["record.json"] = dump_json(record.to_dict())  # last: a folder with it is whole
        return self.write_run(record.run_id, out)

    def write_run(self, run_id: str, files: dict[str, bytes | str]) -> Path:
        """Write a run folder atomically (temp folder, then rename); replaces an older record
        of the same run (a failure being retried). Use :meth:`write` for a record."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".tmp-{run_id}-{uuid.uuid4().hex[:8]}"
        try:
            write_files(tmp, files)
            # the old folder goes aside as .<id>.old-*: clean_temp removes it if we die here
            return replace_dir(tmp, self.run_dir(run_id))
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    # -- claims ---------------------------------------------------------------------------
    def _claim_path(self, run_id: str) -> Path:
        return self.dir / "claims" / run_id

    def _read_claim(self, run_id: str) -> Optional[tuple[dict, float]]:
        path = self._claim_path(run_id)
        try:
            info = json.loads(path.read_text())
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            return None
        return (info, age) if isinstance(info, dict) else ({}, age)

    @staticmethod
    def _live(info: dict, age: float) -> bool:
        """A claim is live while its owner beats: on this host, while its process runs;
        on another host, while its heartbeat is younger than ``CLAIM_TTL_S``."""
        if info.get("host") == socket.gethostname() and "pid" in info:
            return pid_alive(info.get("pid"))
        return age < CLAIM_TTL_S

    def claim_holder(self, run_id: str) -> Optional[dict]:
        """Who holds a live claim on ``run_id`` (None if unclaimed or stale)."""
        read = self._read_claim(run_id)
        return read[0] if read and self._live(*read) else None

    def claims(self) -> tuple[dict[str, dict], list[str]]:
        """The claims of this sweep: live ones (run id -> holder: host, pid, owner token,
        time) and the run ids of stale ones (owner gone; taken over by the next run)."""
        folder = self.dir / "claims"
        live, stale = {}, []
        for p in (sorted(folder.iterdir()) if folder.is_dir() else []):
            if not p.name.startswith("."):
                holder = self.claim_holder(p.name)
                if holder is not None:
                    live[p.name] = holder
                else:
                    stale.append(p.name)
        return live, stale

    def started_without_record(self) -> list[str]:
        """Runs with a log but no record: running now, or interrupted."""
        logs = self.dir / "logs"
        return sorted(p.stem for p in (logs.glob("*.log") if logs.is_dir() else [])
                      if not (self.run_dir(p.stem) / "record.json").is_file())

    def claim(self, run_id: str) -> Optional[str]:
        """Claim ``run_id``: the owner token of the new claim, or None if another live
        owner holds it. A stale claim (owner gone, or no heartbeat for ``CLAIM_TTL_S``) is
        taken over; of two processes taking one over at once, one wins."""
        path = self._claim_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        me = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": token,
                         "time": now()})
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                read = self._read_claim(run_id)
                if read is None:
                    continue  # released meanwhile
                if self._live(*read):
                    return None
                self._take_over(path, read[0])
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(me)
            return token
        return None

    @staticmethod
    def _take_over(path: Path, stale: dict) -> None:
        """Move the stale claim ``stale`` out of the way: renamed aside (atomic, so only one
        taker gets it), then put back if what was moved is not the claim judged stale (a
        new owner claimed it in between)."""
        aside = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = stale
        if moved != stale:
            try:
                os.link(aside, path)  # never over a claim made meanwhile
            except OSError:
                pass
        aside.unlink(missing_ok=True)

    def heartbeat(self, run_id: str, token: str) -> bool:
        """Renew the claim ``token`` holds (its file's time); False if it is no longer ours
        (taken over after a stall longer than ``CLAIM_TTL_S``)."""
        read = self._read_claim(run_id)
        if read is None or read[0].get("token") != token:
            return False
        try:
            os.utime(self._claim_path(run_id))
        except OSError:
            return False
        return True

    def release_if_stale(self, run_id: str) -> bool:
        """Remove the claim on ``run_id`` unless a live owner holds it (an executor cleaning
        up after a task it cancelled or lost); True when no live owner holds it."""
        read = self._read_claim(run_id)
        if read is not None and self._live(*read):
            return False
        if read is not None:
            self._take_over(self._claim_path(run_id), read[0])
        return True

    def release(self, run_id: str, token: Optional[str] = None) -> None:
        """Drop the claim on ``run_id``: the one ``token`` holds, or (no token: the sweep
        cleaning up after a worker it stopped or lost) whichever is there."""
        if token is not None:
            read = self._read_claim(run_id)
            if read is None or read[0].get("token") != token:
                return
        try:
            self._claim_path(run_id).unlink()
        except FileNotFoundError:
            pass

    def run_ids(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name for p in self.dir.iterdir()
                      if p.is_dir() and not p.name.startswith(".")
                      and p.name not in ("logs", "claims", "executors", "grids")
                      and (p / "record.json").is_file())

    def records(self) -> Iterator[dict]:
        for rid in self.run_ids():
            try:
                yield json.loads((self.run_dir(rid) / "record.json").read_text())
            except (OSError, ValueError):
                continue

    def entries(self, run_ids: Optional[list[str]] = None) -> Iterator[tuple[dict, dict]]:
        """(record, spec) of each run with a readable record: every run of the sweep, or the
        given ids (those without a record are left out). The spec is ``{}`` when its file
        is missing or unreadable."""
        for rid in (self.run_ids() if run_ids is None else run_ids):
            record = self.record(rid)
            if not isinstance(record, dict):
                continue
            try:
                spec = json.loads((self.run_dir(rid) / "spec.json").read_text())
            except (OSError, ValueError):
                spec = {}
            yield record, spec

    def discard_partial(self, run_id: str) -> None:
        """Remove what a run interrupted while writing its folder left behind (its temporary
        folder); only this process may be writing it (it holds the claim)."""
        if self.dir.is_dir():
            for p in self.dir.glob(f".tmp-{run_id}-*"):
                shutil.rmtree(p, ignore_errors=True)

    def clean_temp(self) -> None:
        """Remove leftovers of runs killed while writing (never a finished run)."""
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                if p.name.startswith(".tmp-") or (p.name.startswith(".") and ".old-" in p.name):
                    shutil.rmtree(p, ignore_errors=True)

    # -- named grids (bench/grids.py): which runs make which column of a table ----------
    def save_grid_manifest(self, grid: str, manifest: dict) -> None:
        """Write ``grids/<grid>.json`` atomically (the runs of the grid and their columns)."""
        folder = self.dir / "grids"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / f"{grid}.json", dump_json(manifest))

    def grid_manifest(self, grid: str) -> Optional[dict]:
        try:
            return json.loads((self.dir / "grids" / f"{grid}.json").read_text())
        except (OSError, ValueError):
            return None


def sweep_stores(results: Path | str, names: Optional[list[str]] = None) -> list[Store]:
    """Every sweep under a results folder, or the ``names`` ones; a name that is not there
    is an error listing the sweeps that are. A missing folder holds no sweep."""
    root = Path(results).expanduser()
    if root.exists() and not root.is_dir():
        raise StoreError(f"--results {results} is a file, not a results folder")
    stores = ([Store(root, p.name) for p in sorted(root.iterdir())
               if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else [])
    if names:
        present = [s.sweep for s in stores]
        unknown = [n for n in names if n not in present]
        if unknown and stores:
            raise StoreError(f"no sweep {', '.join(map(repr, unknown))} under {results}; the "
                             f"sweeps there: {', '.join(present)}")
        stores = [s for s in stores if s.sweep in names]
    return stores


def load_model(run_dir: Path | str) -> dict:
    """The state saved with ``--save-models``, loaded with ``weights_only=True`` (tensors and
    plain containers only; never arbitrary pickled objects)."""
    import torch

    from .api import MODEL_ARTEFACT

    path = Path(run_dir) / MODEL_ARTEFACT
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; rerun the sweep with --save-models")
    return torch.load(path, map_location="cpu", weights_only=True)
