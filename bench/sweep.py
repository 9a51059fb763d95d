"""One sweep from options to table: check the options → plan the runs → drop those already
finished → prefetch their images → hand the rest to an executor → print the table. This is
what ``bench run`` does; the CLI only builds the :class:`~bench.plan.SweepConfig` and calls
:func:`run_sweep`.
"""
from __future__ import annotations

import sys
import time
from contextlib import closing
from typing import Callable, Optional

from .plan import ConfigError, Plan, RunSpec, SweepConfig, effective_preset, expand, validate
from .store import FINISHED, Store


def run_sweep(cfg: SweepConfig, notes: Optional[list[str]] = None, *,
              planner: Callable[[SweepConfig], Plan] = expand, print_table: bool = True,
              out=print, err=None) -> int:
    """Run the sweep ``cfg`` (``--dry-run``: print its plan only); the exit status: 1 when a
    run of the plan is recorded failed, else 0. ``planner`` turns the configuration into
    runs (a named grid plugs in its own); ``cfg.executor`` names where they run; ``notes``
    are said before the plan's own."""
    from .executors import executor_notes, make_executor
    from .job import prefetch_images, record_failure, record_skip
    from .registry import missing_paper_methods

    err = err or (lambda text: print(text, file=sys.stderr))
    notes = list(notes or [])
    # Everything that can be checked without reading data is checked first, so a bad option
    # never costs a planning pass, and nothing starts (no worker, no folder) before it holds.
    validate(cfg)
    store = Store(cfg.results, cfg.name)
    store.check_writable()
    runner = make_executor(cfg.executor, store, cfg)
    notes += executor_notes(cfg) + runner.notes()
    if "all" in cfg.methods and missing_paper_methods():
        notes.append(f"--methods all: {', '.join(missing_paper_methods())} not available in "
                     f"this install; running the other paper methods")
    plan = planner(cfg)
    for note in notes + plan.notes:
        err(f"note: {note}")
    weights = check_weights(plan.specs, download=not cfg.dry_run)
    statuses = {s.run_id: store.status(s.run_id) for s in plan.specs}
    for s in plan.specs:
        problem = store.unreadable(s.run_id) if statuses[s.run_id] is None else None
        if problem:
            err(f"warning: {store.run_dir(s.run_id) / 'record.json'} is unreadable "
                f"({problem}); the run is redone")
    todo = [s for s in plan.specs
            if statuses[s.run_id] is None or (statuses[s.run_id] == "failed" and
                                              cfg.retry_failed)]
    n_fin = sum(1 for s in plan.specs if statuses[s.run_id] in FINISHED)
    n_failed = sum(1 for s in plan.specs if statuses[s.run_id] == "failed")
    n_planned = len(plan.specs) + len(plan.skipped) + len(plan.failed)
    out(f"sweep {cfg.name!r} (preset {effective_preset(cfg)}): {n_planned} runs "
        f"planned, {n_fin} already finished, {len(plan.skipped)} unavailable (skipped), "
        + (f"{len(plan.failed)} failed while planning, " if plan.failed else "")
        + f"{len(todo)} to run" + (f", {n_failed} failed kept (--retry-failed reruns them)"
                                   if n_failed and not cfg.retry_failed else ""))
    for line in (reason_lines([(s.label, r) for s, r in plan.skipped], "skipped") +
                 reason_lines([(s.label, r) for s, r in plan.failed], "failed")):
        err(line)
    where = runner.describe(len(todo))
    if cfg.dry_run:
        for s in plan.specs:
            st = statuses[s.run_id] or ("todo" if s in todo else "")
            out(f"  {s.run_id}  {st:8s} {s.label}")
        for s, reason in plan.skipped:
            out(f"  {s.run_id}  skipped  {s.label}: {reason}")
        for s, reason in plan.failed:
            out(f"  {s.run_id}  failed   {s.label}: {reason}")
        for line in weights:
            out(line)
        out(f"would run on {where}; results in {store.dir}" if todo else
            f"nothing to run; results in {store.dir}")
        out(f"{n_planned} runs ({len(todo)} to run)")
        return 0
    store.clean_temp()
    for s, reason in plan.skipped:
        if store.status(s.run_id) is None:
            record_skip(s, store, reason)
    for s, reason in plan.failed:
        if store.status(s.run_id) is None or cfg.retry_failed:
            record_failure(s, store, reason)
    if todo:
        prefetch_images(todo, log=out)  # every image decoded once now: a broken file stops here
        out(f"{where}; logs in {store.dir / 'logs'}")
        counts = execute_staged(runner, todo, store, out, err)
        out(f"finished in {counts.pop('seconds'):.0f} s: {counts['done']} done, "
            f"{counts['failed']} failed, {counts['skipped']} skipped"
            + (f", {counts['elsewhere']} left to another `bench run` on the same results "
               f"(running or finished there)" if counts["elsewhere"] else "")
            + (f", {counts['waiting']} waiting for runs another `bench run` is computing "
               f"(rerun to start them)" if counts.get("waiting") else ""))
    if print_table:
        print_plan_table(store, [s.run_id for s in plan.specs] +
                         [s.run_id for s, _ in plan.skipped + plan.failed], out)
    failed = sum(1 for s in plan.specs + [f for f, _ in plan.failed]
                 if store.status(s.run_id) == "failed")
    return 1 if failed else 0


def stages(todo: list[RunSpec]) -> list[list[RunSpec]]:
    """``todo`` in waves: a run whose ``needs`` name runs of ``todo`` comes in the wave after
    the last of them (staged runs, e.g. Table 9's fine-tuning after its source model)."""
    by_id = {s.run_id: s for s in todo}
    level: dict[str, int] = {}

    def depth(spec: RunSpec, seen: tuple = ()) -> int:
        if spec.run_id not in level:
            if spec.run_id in seen:
                raise ConfigError(f"staged runs form a cycle through {spec.label}")
            level[spec.run_id] = 1 + max([depth(by_id[r], seen + (spec.run_id,))
                                          for r, _ in spec.needs if r in by_id], default=-1)
        return level[spec.run_id]

    waves: list[list[RunSpec]] = []
    for spec in todo:
        d = depth(spec)
        waves += [[] for _ in range(d + 1 - len(waves))]
        waves[d].append(spec)
    return waves


def ready_runs(wave: list[RunSpec], store: Store) -> tuple[list[RunSpec], list[RunSpec]]:
    """(runs of ``wave`` whose input artefacts exist, runs whose source has no record yet:
    another process computes it). A run whose source failed, was skipped or kept no artefact
    is recorded failed naming it (``--retry-failed`` reruns both, source first)."""
    from .job import record_failure

    ready, waiting = [], []
    for spec in wave:
        problem, wait = None, False
        for run_id, name in spec.needs:
            if store.artefact(run_id, name) is not None:
                continue
            rec = store.record(run_id) or {}
            status = rec.get("status")
            if status is None:
                wait = True
            elif status == "done":
                problem = f"its source run {run_id} finished without keeping {name}"
            else:
                problem = (f"its source run {run_id} is {status}: "
                           f"{str(rec.get('reason') or 'no reason recorded').splitlines()[0]}")
            if problem:
                break
        if problem:
            record_failure(spec, store, f"not started: {problem}")
        elif wait:
            waiting.append(spec)
        else:
            ready.append(spec)
    return ready, waiting


def execute_staged(runner, todo: list[RunSpec], store: Store, out, err) -> dict:
    """Run ``todo`` wave by wave (:func:`stages`), each wave handed whole to the executor,
    so every executor starts a staged run only once its input artefact exists."""
    waves = stages(todo)
    total: dict = {"done": 0, "failed": 0, "skipped": 0, "elsewhere": 0, "waiting": 0,
                   "seconds": 0.0}
    for i, wave in enumerate(waves):
        ready, waiting = ready_runs(wave, store)
        total["failed"] += len(wave) - len(ready) - len(waiting)
        total["waiting"] += len(waiting)
        for s in waiting:
            err(f"waiting: {s.label}: its source {s.needs[0][0]} has no record yet (another "
                f"`bench run` is computing it?); rerun this sweep once it has finished")
        if not ready:
            continue
        if len(waves) > 1:
            out(f"stage {i + 1} of {len(waves)}: {len(ready)} runs")
        counts = execute_runs(runner, ready, store, err)
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v
    return total


def execute_runs(runner, todo: list[RunSpec], store: Store, err) -> dict:
    """Hand ``todo`` to the executor ``runner`` with a progress bar; counts by outcome (and
    the wall time in ``seconds``). Failures are said as they happen, all reasons at the
    end."""
    from tqdm import tqdm

    labels = {s.run_id: s.label for s in todo}
    # in a log file (no terminal), update rarely instead of flooding it
    bar = tqdm(total=len(todo), unit="run", dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30.0)
    counts = {"done": 0, "failed": 0, "skipped": 0, "elsewhere": 0}
    reasons: dict[str, list[tuple[str, str]]] = {"failed": [], "skipped": []}
    t0 = time.time()
    try:  # also on Ctrl-C: the executor stops its runs, the bar ends its line
        with closing(iter(runner.submit(todo))) as outcomes:
            for o in outcomes:
                counts[o.status] = counts.get(o.status, 0) + 1
                bar.set_postfix(done=counts["done"], failed=counts["failed"],
                                skipped=counts["skipped"],
                                left=len(todo) - sum(counts.values()), refresh=False)
                bar.update(1)
                if o.status in reasons:
                    reason = o.reason or "no reason recorded"
                    reasons[o.status].append((labels.get(o.run_id, o.run_id), reason))
                    if o.status == "failed":
                        bar.write(f"failed: {labels.get(o.run_id, o.run_id)}: "
                                  f"{reason.splitlines()[0][:200]} (see "
                                  f"{store.log_path(o.run_id)})")
    finally:
        bar.close()
    for line in reason_lines(reasons["skipped"], "skipped") + \
            reason_lines(reasons["failed"], "failed"):
        err(line)
    counts["seconds"] = time.time() - t0
    return counts


def check_weights(specs, *, download: bool = True) -> list[str]:
    """Pretrained weights the runs need, checked before the sweep starts. A real run fails
    at once naming the exact missing file (instead of failing every run); a dry run
    (``download=False``) never downloads and returns one line per checkpoint instead."""
    from .registry import create_method

    needed = set()
    for spec in specs:
        if spec.weights != "none":
            for arch in create_method(spec.method, **spec.params).backbones():
                needed.add((arch, spec.weights))
    if not needed:
        return []
    from .methods.common.backbones import WeightsUnavailable, resolve_weights_file

    lines = []
    for arch, weights in sorted(needed):
        try:
            path = resolve_weights_file(arch, weights, download=download)
        except WeightsUnavailable as exc:
            if download:
                raise ConfigError(str(exc)) from exc
            lines.append(f"weights for {arch} ({weights}) missing: {exc}")
        else:
            lines.append(f"weights for {arch} ({weights}): {path}")
    return lines


def print_plan_table(store: Store, run_ids: list[str], out=print) -> None:
    """The tables of exactly the runs of this sweep's plan, built as `bench report` builds
    them (one configuration per cell)."""
    from .report.tables import build_tables, frame_from_entries, seen_unseen_table

    runs = frame_from_entries(store.entries(run_ids))
    if runs.empty:
        return
    tables, _, _ = build_tables(runs)
    seen = seen_unseen_table(runs)
    for t in tables + ([seen] if seen is not None else []):
        out("\n" + t.markdown())


def reason_lines(items: list[tuple[str, str]], status: str, limit: int = 3) -> list[str]:
    """Console lines for (label, reason) pairs of skipped or failed runs: one per run, or
    one per reason shared by several runs (with a few of their labels)."""
    by_reason: dict[str, list[str]] = {}
    for label, reason in items:
        by_reason.setdefault(str(reason).strip().splitlines()[0] if reason else
                             "no reason recorded", []).append(label)
    lines = []
    for reason, labels in by_reason.items():
        if len(labels) == 1:
            lines.append(f"{status}: {labels[0]}: {reason}")
        else:
            shown = "; ".join(labels[:limit]) + (f"; and {len(labels) - limit} more"
                                                 if len(labels) > limit else "")
            lines.append(f"{status} {len(labels)} runs: {reason} ({shown})")
    return lines
