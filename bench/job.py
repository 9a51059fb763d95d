"""Run one :class:`~bench.plan.RunSpec` inside a worker: data → split → fit → score →
metrics → an atomically written run folder. Any exception (out-of-memory included) becomes
a ``failed`` record with its traceback; an unsupported run becomes ``skipped`` with a reason.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import threading
import time
import traceback
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Optional

import numpy as np

from . import __version__
from .api import EMBEDDINGS_ARTEFACT, MODEL_ARTEFACT
from .plan import RunSpec
from .store import RunRecord, Store, now

if TYPE_CHECKING:
    from .protocol import Split

_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "pandas", "pillow",
             "anomalib")  # anomalib: the optional extra (None when not installed)


@lru_cache(maxsize=1)
def environment() -> dict:
    """Package versions, git commit and dirty flag of the harness, Python and host."""
    from importlib.metadata import PackageNotFoundError, version

    pkgs = {}
    for p in _PACKAGES:
        try:
            pkgs[p] = version(p)
        except PackageNotFoundError:
            pkgs[p] = None
    repo = Path(__file__).resolve().parent.parent
    commit, dirty = None, None
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], text=True,
                                capture_output=True, timeout=10).stdout.strip() or None
        if commit:
            dirty = bool(subprocess.run(["git", "-C", str(repo), "status", "--porcelain",
                                         "--untracked-files=no"], text=True,
                                        capture_output=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"harness_version": __version__, "git_commit": commit, "git_dirty": dirty,
            "python": platform.python_version(), "platform": platform.platform(),
            "host": platform.node(), "packages": pkgs}


def device_info(device: str) -> dict:
    import torch

    info = {"device": device, "cuda_version": torch.version.cuda,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(0)
    else:
        info["device_name"] = platform.processor() or "cpu"
    return info


def _scores_csv(split, scores: np.ndarray) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "anomaly_class", "seen", "score"])
    for p, y, c, s, v in zip(split.test, split.test_labels, split.test_classes,
                             split.test_seen, scores):
        w.writerow([p, y, c, int(s), repr(float(v))])
    return buf.getvalue()


def _check_scores_csv(split, scores: np.ndarray) -> str:
    """The hard setting's seen-class check set: every image is of the known class."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "anomaly_class", "seen", "score"])
    for p, v in zip(split.seen_check, scores):
        w.writerow([p, 1, split.known_class, 1, repr(float(v))])
    return buf.getvalue()


def _embeddings_npz(method, split, test: np.ndarray, seen_check) -> bytes:
    """The method's features of the test images (with their labels, classes and seen flags)
    and of the seen-class check set, as an .npz file (Fig. 1's t-SNE reads it)."""
    arrays = {"test": np.asarray(method.embed(test), dtype=np.float32),
              "test_labels": np.asarray(split.test_labels, dtype=np.int8),
              "test_seen": np.asarray(split.test_seen, dtype=np.int8),
              "test_classes": np.asarray(split.test_classes, dtype=str)}
    if seen_check is not None:
        arrays["seen_check"] = np.asarray(method.embed(seen_check), dtype=np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _subset_index(spec: RunSpec):
    """The subset of ``spec`` as on disk now; fails if it changed since planning."""
    from .datasets.layout import read_subset

    index = read_subset(Path(spec.dataset_root), spec.subset)
    if index.fingerprint != spec.subset_fingerprint:
        raise RuntimeError(f"the data of {spec.dataset_root}/{spec.subset} changed since the "
                           f"sweep was planned (fingerprint {index.fingerprint} != "
                           f"{spec.subset_fingerprint}); rerun `bench run` to re-plan")
    return index


def _outlier_pool(spec: RunSpec):
    """The outlier pool of ``spec`` (None without outliers); fails if it changed."""
    from .datasets.outliers import outlier_pool

    if not spec.outliers_root:
        return None
    pool = outlier_pool(Path(spec.outliers_root), exclude=spec.outliers_excluded)
    if pool.fingerprint != spec.outliers_fingerprint:
        raise RuntimeError(f"outlier source {spec.outliers_root} changed since planning")
    return pool


def prefetch_images(specs: list[RunSpec], cache_dir: Optional[Path] = None,
                    log=print) -> None:
    """Decode every image the runs of ``specs`` read into the decoded-image cache, once,
    before any worker starts: an undecodable file stops the sweep here with one message
    naming it (:class:`~bench.datasets.images.ImageDecodeError`) instead of failing every
    run that reads it; the workers then only map the cached arrays."""
    from .datasets.cache import decoded_array, is_cached, load_outliers

    done: set = set()
    for spec in specs:
        size = spec.img_size
        key = (spec.dataset_root, spec.subset, spec.subset_fingerprint, size)
        if key not in done:
            done.add(key)
            if not is_cached(spec.subset_fingerprint, size, cache_dir):
                index = _subset_index(spec)
                log(f"decoding {len(index.all_files)} images of {spec.dataset}/{spec.subset} "
                    f"at {size} px into the cache")
                decoded_array(index.root, index.all_files, index.fingerprint, size, cache_dir)
        okey = (spec.outliers_root, spec.outliers_fingerprint, size)
        if spec.outliers_root and okey not in done:
            done.add(okey)
            pool = _outlier_pool(spec)
            if not all(is_cached(fp, size, cache_dir) for _, _, fp in pool.groups):
                log(f"decoding the {len(pool.paths)} outlier images of {spec.outliers} for "
                    f"{spec.dataset}/{spec.subset} at {size} px into the cache")
            load_outliers(pool, size, cache_dir)


class RunData(NamedTuple):
    """What one run reads: its split and the decoded images of each part of it."""

    split: "Split"
    normal: np.ndarray
    anomalies: np.ndarray
    test: np.ndarray
    outliers: Optional[np.ndarray]
    size: int
    seen_check: Optional[np.ndarray]  # hard setting: the known class's unlabelled anomalies


def load_run_data(spec: RunSpec, cache_dir: Optional[Path] = None) -> RunData:
    """The split of ``spec`` (the one planning built, or drawn again for a spec read back
    from a file) and its images (decoded-image cache). Fails if the data changed since the
    sweep was planned."""
    from .datasets.cache import load_images, load_outliers
    from .protocol import make_split

    size = spec.img_size
    index = _subset_index(spec)
    split = spec.split or make_split(index, dataset=spec.dataset, setting=spec.setting,
                                     shots=spec.shots, seed=spec.split_seed,
                                     known_class=spec.known_class, train_cap=spec.train_cap)
    if split.manifest_hash != spec.split_hash:
        raise RuntimeError(f"split manifest {split.manifest_hash} differs from the planned "
                           f"{spec.split_hash}; the protocol code or the data changed")

    def imgs(paths):
        return load_images(index.root, index.all_files, index.fingerprint, size, paths,
                           cache_dir)

    pool = _outlier_pool(spec)
    outliers = load_outliers(pool, size, cache_dir) if pool is not None else None
    return RunData(split, imgs(split.train_normal), imgs(split.train_anomalies),
                   imgs(split.test), outliers, size,
                   imgs(split.seen_check) if split.seen_check else None)


def _jsonable(obj):
    try:
        json.dumps(obj)
        return obj
    except TypeError:
        return json.loads(json.dumps(obj, default=str))


OOM_ADVICE = ("lower the batch size (--set METHOD.batch_size=N) or the image size, or run "
              "fewer runs per GPU (--jobs-per-gpu 1)")


def describe_failure(exc: BaseException, step: Optional[int], total: Optional[int],
                     peak_mb: Optional[float]) -> tuple[str, dict]:
    """The reason line and the ``failure`` details of a run that raised ``exc`` after
    reporting training step ``step`` of ``total``: out of memory (with the peak memory and
    what to change), a non-finite loss (with the step), or any other error."""
    import torch

    text = f"{type(exc).__name__}: {exc}"
    details = {"kind": "error", "exception": type(exc).__name__, "step": step,
               "steps": total}
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc):
        details.update(kind="out_of_memory", peak_gpu_mem_mb=peak_mb, advice=OOM_ADVICE)
        peak = f"peak {peak_mb} MiB; " if peak_mb is not None else ""
        return f"out of memory ({peak}{OOM_ADVICE}): {text}", details
    if isinstance(exc, FloatingPointError):
        details["kind"] = "nan_loss"
        where = f" at step {step}/{total}" if step else ""
        return f"non-finite loss{where}: {text}", details
    return text, details


def execute(spec: RunSpec, store: Store, *, device: str = "cpu", save_model: bool = False,
            log=print, cache_dir: Optional[Path] = None) -> str:
    """Run ``spec`` and write its folder; returns the status."""
    from .api import RunContext, TrainData
    from .registry import create_method

    record = RunRecord.for_spec(spec, store.sweep, started=now())
    files: dict[str, str | bytes] = {}
    env = dict(environment())
    try:
        env.update(device_info(device))
    except Exception as exc:  # torch broken: still record what we can
        env["device_error"] = repr(exc)
    record.env = env
    import torch

    from .methods.common.training import seed_everything

    steps = [None, None]  # the last training step reported and the number of steps

    def progress(step: int, n: int) -> None:
        if n and (step == n or step % max(1, n // 10) == 0):
            log(f"  step {step}/{n}")
        steps[:] = [step, n]

    caught = warnings.catch_warnings(record=True)
    seen_warnings = caught.__enter__()  # method warnings go to the run's log and record
    warnings.simplefilter("always")
    try:
        seed_everything(spec.seed)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        split, normal, anomalies, test, outliers, size, seen_check = load_run_data(spec,
                                                                                 cache_dir)
        record.load_s = round(time.perf_counter() - t0, 3)
        files["split.json"] = split.manifest_json() + "\n"
        method = create_method(spec.method, **spec.params)
        reason = method.skip(split.info(outliers is not None))
        if reason:
            record.status, record.reason = "skipped", reason
        else:
            train = TrainData(normal=normal, anomalies=anomalies,
                              anomaly_classes=split.train_anomaly_classes, outliers=outliers)
            ctx = RunContext(device=device, seed=spec.seed, weights=spec.weights,
                             img_size=size, precision=spec.precision,
                             channels_last=device.startswith("cuda"),
                             inputs=stage_inputs(spec, store), progress=progress)
            log(f"fit {spec.label}: {len(normal)} normal, {len(anomalies)} labelled anomalies"
                f"{'' if outliers is None else f', {len(outliers)} outliers'}, {size}px, "
                f"{device}, {spec.precision}")
            t0 = time.perf_counter()
            method.fit(train, ctx)
            record.fit_s = round(time.perf_counter() - t0, 3)
            t0 = time.perf_counter()
            scores = np.asarray(method.score(test), dtype=np.float64).reshape(-1)
            record.score_s = round(time.perf_counter() - t0, 3)
            if scores.shape != (len(split.test),):
                raise ValueError(f"{spec.method}.score returned {scores.shape[0]} scores for "
                                 f"{len(split.test)} images")
            check_scores = None
            if split.seen_check:
                # Scored in a call of its own: the test set's scores stay exactly what a
                # run without the check set computes.
                check_scores = np.asarray(method.score(seen_check), dtype=np.float64).reshape(-1)
                if check_scores.shape != (len(split.seen_check),):
                    raise ValueError(f"{spec.method}.score returned {check_scores.shape[0]} "
                                     f"scores for {len(split.seen_check)} images")
                files["seen_check_scores.csv"] = _check_scores_csv(split, check_scores)
            from .metrics import run_metrics

            record.metrics = run_metrics(split.test_labels, scores, split.test_seen,
                                         spec.setting, check_scores)
            files["scores.csv"] = _scores_csv(split, scores)
            record.method_state = _jsonable({k: v for k, v in vars(method).items()
                                             if k.endswith("_") and not k.startswith("_")
                                             and isinstance(v, (bool, int, float, str,
                                                                dict, list, type(None)))})
            if EMBEDDINGS_ARTEFACT in spec.keep:
                files[EMBEDDINGS_ARTEFACT] = _embeddings_npz(method, split, test, seen_check)
            if save_model or MODEL_ARTEFACT in spec.keep:
                buf = io.BytesIO()
                torch.save(method.state_dict(), buf)
                files[MODEL_ARTEFACT] = buf.getvalue()
            record.status = "done"
            log(f"done: AUC-ROC {record.metrics['auroc']:.4f} AUC-PR "
                f"{record.metrics['auprc']:.4f} (fit {record.fit_s} s, score "
                f"{record.score_s} s)")
    except Exception as exc:
        from .protocol import SplitUnavailable

        if isinstance(exc, SplitUnavailable):
            record.status, record.reason = "skipped", str(exc)
        else:
            peak = (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                    if device.startswith("cuda") and torch.cuda.is_available() else None)
            record.status = "failed"
            record.reason, record.failure = describe_failure(exc, *steps, peak)
            record.traceback = traceback.format_exc()
            log(record.traceback)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    caught.__exit__(None, None, None)
    record.warnings = sorted({f"{w.category.__name__}: {w.message}" for w in seen_warnings})
    for w in record.warnings:
        log(f"warning: {w}")
    if device.startswith("cuda") and torch.cuda.is_available():
        record.peak_gpu_mem_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    record.finished = now()
    store.write(record, files)
    return record.status


class StageNotReady(RuntimeError):
    """A staged run's input artefact is not there (its source run is not finished)."""


def stage_inputs(spec: RunSpec, store: Store) -> dict[str, str]:
    """The artefacts ``spec`` needs (artefact name → path), each a file a finished run of
    this sweep kept; :class:`StageNotReady` naming the first one missing."""
    out = {}
    for run_id, name in spec.needs:
        path = store.artefact(run_id, name)
        if path is None:
            raise StageNotReady(f"needs {name} of run {run_id}, which "
                                + ("is not finished" if store.status(run_id) != "done" else
                                   "did not keep it") + f" (in {store.dir})")
        out[name] = str(path)
    return out


def record_failure(spec: RunSpec, store: Store, reason: str,
                   traceback_text: Optional[str] = None) -> None:
    """Record a run that could not report itself (its worker died) or whose planning
    failed."""
    store.write(RunRecord.for_spec(spec, store.sweep, "failed", reason=reason,
                                   traceback=traceback_text, finished=now(),
                                   env=environment()))


def record_skip(spec: RunSpec, store: Store, reason: str) -> None:
    """Record a run the planner already knows cannot be built (e.g. too few images)."""
    store.write(RunRecord.for_spec(spec, store.sweep, "skipped", reason=reason,
                                   finished=now()))


def configure_torch(threads: Optional[int] = None, deterministic: bool = False) -> None:
    """Set up torch in a worker process before its first run: its CPU thread budget and,
    with ``--deterministic``, deterministic kernels where torch has them (warn where it has
    none) and no cuDNN autotuning. ``CUBLAS_WORKSPACE_CONFIG`` must be set before CUDA
    starts, so call this before anything touches the GPU."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    if threads:
        torch.set_num_threads(threads)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def run_claimed(spec: RunSpec, store: Store, *, device: str = "cpu", save_model: bool = False,
                rerun_failed: bool = False) -> tuple[str, Optional[str]]:
    """Compute ``spec`` in this process under a claim on it, wherever this process runs
    (local worker, Ray task, Slurm array task): (status, reason). ``elsewhere`` when another
    live process holds the run or a record appeared since planning (only a ``failed`` one
    is redone, and only with ``rerun_failed``); ``waiting`` (nothing recorded) when a staged
    run's input artefact is not there yet. The claim is renewed while the run runs and
    released once its record is written; the run's log goes to ``store.log_path``."""
    from .store import CLAIM_HEARTBEAT_S

    try:
        stage_inputs(spec, store)
    except StageNotReady as exc:  # the sweep submits a staged run after its source; a race
        return "waiting", str(exc)
    token = store.claim(spec.run_id)
    if token is None:
        holder = store.claim_holder(spec.run_id) or {}
        return "elsewhere", (f"claimed by pid {holder.get('pid')} on {holder.get('host')}"
                             if holder else "claimed by another process")
    try:
        status = store.status(spec.run_id)
        if status is not None and not (status == "failed" and rerun_failed):
            return "elsewhere", f"recorded {status} by another process since planning"
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(CLAIM_HEARTBEAT_S):
                store.heartbeat(spec.run_id, token)

        beater = threading.Thread(target=beat, daemon=True, name=f"claim-{spec.run_id}")
        beater.start()
        log_path = store.log_path(spec.run_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(log_path, "a", buffering=1) as logf:
                def log(text: str) -> None:
                    logf.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")

                status = execute(spec, store, device=device, save_model=save_model, log=log)
        finally:
            stop.set()
        record = store.record(spec.run_id) or {}
        return status, record.get("reason")
    finally:
        store.release(spec.run_id, token)
