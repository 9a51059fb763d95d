"""The ``bench`` command line: argument parsing only; the work is done by the modules it calls.

    bench list methods|datasets [--long]
    bench run [--methods all] [--datasets synthetic] [--setting hard] ...
    bench status [--results DIR] [--name SWEEP]
    bench report [--results DIR] [--out DIR] [--format markdown,csv,latex]
    bench data prepare|check|info|download NAME ...
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="Benchmark harness for open-set "
                                "supervised anomaly detection (DRA, CVPR 2022, and baselines)")
    p.add_argument("--version", action="version", version=f"osad-bench {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="list registered methods or datasets")
    ls.add_argument("what", choices=["methods", "datasets"])
    ls.add_argument("pattern", nargs="?", default="*", help="wildcard, e.g. 'dra*'")
    ls.add_argument("--long", action="store_true", help="show method cards / dataset details")
    ls.add_argument("--data-root", default=None)
    ls.set_defaults(func=cmd_list)

    r = sub.add_parser("run", help="run a sweep (skips finished runs; resumes after a kill)")
    S = argparse.SUPPRESS  # unset flags stay absent so --config and presets can fill them
    r.add_argument("--config", type=Path, default=None, help="YAML file with the options below")
    r.add_argument("--methods", type=_csv, default=S,
                   help="'all' (the paper's eight), names or wildcards, e.g. 'dra*'")
    r.add_argument("--datasets", type=_csv, default=S,
                   help="registered names or MVTec-layout folders (default: synthetic)")
    r.add_argument("--subsets", type=_csv, default=S)
    r.add_argument("--setting", choices=["general", "hard", "both"], default=S)
    r.add_argument("--known-classes", type=_csv, default=S, dest="known_classes",
                   help="restrict the hard setting to these known classes")
    r.add_argument("--shots", type=_ints, default=S, help="e.g. 1,10")
    r.add_argument("--seeds", type=int, default=S, help="seeds 0..N-1")
    r.add_argument("--seed-list", type=_ints, default=S, dest="seed_list")
    r.add_argument("--split-seed", type=int, default=S, dest="split_seed",
                   help="fix the split, vary only training")
    r.add_argument("--preset", choices=["quick", "paper"], default=S)
    r.add_argument("--data-root", default=S, dest="data_root")
    r.add_argument("--weights", default=S, help="imagenet | none | DIR")
    r.add_argument("--outliers", default=S, help="outlier source: dataset name or folder")
    r.add_argument("--train-cap", type=int, default=S, dest="train_cap",
                   help="use at most N normal training images (seeded subset)")
    r.add_argument("--set", action="append", default=S, metavar="METHOD.PARAM=VALUE",
                   help="override a method parameter (repeatable; '*.PARAM' for all)")
    r.add_argument("--results", default=S)
    r.add_argument("--name", default=S, help="sweep name (folder under --results)")
    r.add_argument("--gpus", default=S, help="all | none | comma list of GPU indices")
    r.add_argument("--jobs-per-gpu", type=int, default=S, dest="jobs_per_gpu")
    r.add_argument("--workers", type=int, default=S,
                   help="CPU worker processes (default: one per core, at most 8)")
    r.add_argument("--retry-failed", action="store_true", default=S, dest="retry_failed")
    r.add_argument("--save-models", action="store_true", default=S, dest="save_models")
    r.add_argument("--deterministic", action="store_true", default=S,
                   help="deterministic GPU kernels: bitwise-repeatable GPU runs, slower")
    r.add_argument("--dry-run", action="store_true", default=S, dest="dry_run")
    r.add_argument("--no-table", action="store_true", help="do not print the table at the end")
    r.set_defaults(func=cmd_run)

    st = sub.add_parser("status", help="counts of done/failed/skipped runs per sweep")
    st.add_argument("--results", default="results")
    st.add_argument("--name", default=None)
    st.set_defaults(func=cmd_status)

    rp = sub.add_parser("report", help="mean±std tables from the run records (one "
                                       "configuration per cell)")
    rp.add_argument("--results", default="results")
    rp.add_argument("--name", type=_csv, default=None, help="only these sweeps")
    rp.add_argument("--where", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                    help="only the runs of METHOD (wildcards as in --set) whose parameter has "
                         "this value, or FIELD=VALUE for weights, outliers, preset, "
                         "split_policy, method_version (repeatable)")
    rp.add_argument("--preset", default=None, choices=["quick", "paper"],
                    help="only runs planned with this preset")
    rp.add_argument("--out", default=None,
                    help="output folder (default: reports/<results folder name>/<sweep>/)")
    rp.add_argument("--format", type=_csv, default=["markdown", "csv", "latex"])
    rp.add_argument("--metric", default="auroc", choices=["auroc", "auprc", "auroc_seen",
                                                           "auroc_unseen"])
    rp.add_argument("--compare-paper", action="store_true", dest="compare_paper",
                    help="put the paper's published AUC-ROC beside ours (paper_comparison.*)")
    rp.set_defaults(func=cmd_report)

    pf = sub.add_parser("perf", help="training/scoring throughput of methods on this device")
    pf.add_argument("--methods", type=_csv, default=["devnet"])
    pf.add_argument("--img-size", type=int, default=224, dest="img_size")
    pf.add_argument("--steps", type=int, default=10)
    pf.add_argument("--batch-size", type=int, default=None, dest="batch_size")
    pf.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    pf.add_argument("--out", default=None, help="also write the figures as CSV here")
    pf.set_defaults(func=cmd_perf)

    from .datasets.commands import add_data_parser

    add_data_parser(sub)
    return p


# -- list -------------------------------------------------------------------------------------
def cmd_list(args) -> int:
    from .registry import get_dataset, get_method_entry, list_datasets, list_methods

    if args.what == "methods":
        names = list_methods(args.pattern)
        for n in names:
            e = get_method_entry(n)
            kind = f"variant of {e.variant_of}" if e.variant_of else ""
            sup = "" if e.cls.uses_labeled_anomalies else "unsupervised (shots 0)"
            extra = ", ".join(x for x in (kind, sup, f"v{e.cls.version}") if x)
            print(f"{n:10s} {e.cls.card.paper[:70]:70s} [{extra}]")
            if args.long:
                c = e.cls.card
                for label, val in (("venue", c.venue), ("upstream", c.upstream),
                                   ("licence", c.upstream_license), ("notes", c.notes)):
                    if val:
                        print(f"    {label}: {val}")
                if e.defaults:
                    print(f"    variant defaults: {e.defaults}")
                print(f"    params: {e.cls.default_params()}")
        return 0
    from .datasets.base import default_data_root
    from .datasets.layout import dataset_fingerprint, list_subsets, read_subset

    root = Path(args.data_root) if args.data_root else default_data_root()
    for n in list_datasets(args.pattern):
        ds = get_dataset(n)
        if ds.is_prepared(root):
            try:
                droot = ds.root(root)
                subs = list_subsets(droot)
                fp = dataset_fingerprint([read_subset(droot, s) for s in subs])
                plural = "s" if len(subs) != 1 else ""
                state = f"prepared at {droot} ({len(subs)} subset{plural}, fingerprint {fp})"
            except Exception as exc:
                state = f"present but unreadable: {exc}"
        else:
            state = ("generated on first use" if n == "synthetic"
                     else f"not prepared under {root}")
        print(f"{n:13s} {ds.title}\n{'':13s} {state}")
        if args.long:
            print("    " + ds.info().replace("\n", "\n    "))
    return 0


# -- run --------------------------------------------------------------------------------------
def config_from_args(args):
    from .grid import SweepConfig, load_config_file

    values = load_config_file(args.config) if args.config else {}
    for k in SweepConfig.__dataclass_fields__:
        if k in vars(args):
            values[k] = getattr(args, k)
    return SweepConfig(**values)


def cmd_run(args) -> int:
    from .executors.local import plan_slots, run_local
    from .grid import effective_preset, expand
    from .registry import missing_paper_methods
    from .runner import prefetch_images, record_failure, record_skip
    from .store import FINISHED, Store

    cfg = config_from_args(args)
    if "all" in cfg.methods and missing_paper_methods():
        print(f"note: --methods all: {', '.join(missing_paper_methods())} not available in "
              f"this install; running the other paper methods", file=sys.stderr)
    plan = expand(cfg)
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    check_weights(plan.specs)
    store = Store(cfg.results, cfg.name)
    statuses = {s.run_id: store.status(s.run_id) for s in plan.specs}
    todo = [s for s in plan.specs
            if statuses[s.run_id] is None or (statuses[s.run_id] == "failed" and
                                              cfg.retry_failed)]
    n_fin = sum(1 for s in plan.specs if statuses[s.run_id] in FINISHED)
    n_failed = sum(1 for s in plan.specs if statuses[s.run_id] == "failed")
    preset = effective_preset(cfg)
    n_planned = len(plan.specs) + len(plan.skipped) + len(plan.failed)
    print(f"sweep {cfg.name!r} (preset {preset}): {n_planned} runs "
          f"planned, {n_fin} already finished, {len(plan.skipped)} unavailable (skipped), "
          + (f"{len(plan.failed)} failed while planning, " if plan.failed else "")
          + f"{len(todo)} to run" + (f", {n_failed} failed kept (--retry-failed reruns them)"
                                     if n_failed and not cfg.retry_failed else ""))
    for line in (reason_lines([(s.label, r) for s, r in plan.skipped], "skipped") +
                 reason_lines([(s.label, r) for s, r in plan.failed], "failed")):
        print(line, file=sys.stderr)
    if cfg.dry_run:
        for s in plan.specs:
            st = statuses[s.run_id] or ("todo" if s in todo else "")
            print(f"  {s.run_id}  {st:8s} {s.label}")
        for s, reason in plan.skipped:
            print(f"  {s.run_id}  skipped  {s.label}: {reason}")
        for s, reason in plan.failed:
            print(f"  {s.run_id}  failed   {s.label}: {reason}")
        print(f"{n_planned} runs ({len(todo)} to run)")
        return 0
    store.clean_temp()
    for s, reason in plan.skipped:
        if store.status(s.run_id) is None:
            record_skip(s, store, reason)
    for s, reason in plan.failed:
        if store.status(s.run_id) is None or cfg.retry_failed:
            record_failure(s, store, reason)
    if todo:
        prefetch_images(todo)  # every image decoded once now: a broken file stops us here
        slots = plan_slots(cfg.gpus, cfg.jobs_per_gpu, cfg.workers)
        print(f"{len(slots)} worker(s): {', '.join(sl.describe() for sl in slots)}; logs in "
              f"{store.dir / 'logs'}")
        from tqdm import tqdm

        # in a log file (no terminal), update rarely instead of flooding it
        bar = tqdm(total=len(todo), unit="run", dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)
        counts = {"done": 0, "failed": 0, "skipped": 0, "elsewhere": 0}
        reasons: dict[str, list[tuple[str, str]]] = {"failed": [], "skipped": []}

        def on_result(spec, status):
            counts[status] = counts.get(status, 0) + 1
            bar.set_postfix(done=counts["done"], failed=counts["failed"],
                            skipped=counts["skipped"], left=len(todo) - sum(counts.values()),
                            refresh=False)
            bar.update(1)
            if status in reasons:
                reason = _record_reason(store, spec.run_id)
                reasons[status].append((spec.label, reason))
                if status == "failed":
                    bar.write(f"failed: {spec.label}: {reason.splitlines()[0][:200]} (see "
                              f"{store.log_path(spec.run_id)})")

        t0 = time.time()
        run_local(todo, store, slots, save_models=cfg.save_models,
                  deterministic=cfg.deterministic, on_result=on_result)
        bar.close()
        print(f"finished in {time.time() - t0:.0f} s: {counts['done']} done, "
              f"{counts['failed']} failed, {counts['skipped']} skipped"
              + (f", {counts['elsewhere']} left to another `bench run` on the same results "
                 f"(running or finished there)" if counts["elsewhere"] else ""))
        for line in reason_lines(reasons["skipped"], "skipped") + \
                reason_lines(reasons["failed"], "failed"):
            print(line, file=sys.stderr)
    if not args.no_table:
        _print_plan_table(store, [s.run_id for s in plan.specs] +
                          [s.run_id for s, _ in plan.skipped + plan.failed])
    failed = sum(1 for s in plan.specs + [f for f, _ in plan.failed]
                 if store.status(s.run_id) == "failed")
    return 1 if failed else 0


def _record_reason(store, run_id: str) -> str:
    rec = store.record(run_id)
    return str(rec.get("reason") or "no reason recorded") if rec else "no record written"


def check_weights(specs) -> None:
    """Fail before the sweep starts when pretrained weights are needed but missing (offline),
    naming the exact file, instead of failing every run."""
    from .grid import ConfigError
    from .registry import create_method

    needed = set()
    for spec in specs:
        if spec.weights != "none":
            for arch in create_method(spec.method, **spec.params).backbones():
                needed.add((arch, spec.weights))
    if not needed:
        return
    from .methods.common.backbones import WeightsUnavailable, resolve_weights_file

    for arch, weights in sorted(needed):
        try:
            resolve_weights_file(arch, weights)
        except WeightsUnavailable as exc:
            raise ConfigError(str(exc)) from exc


def _print_plan_table(store, run_ids: list[str]) -> None:
    """The tables of exactly the runs of this sweep's plan, built as `bench report` builds
    them (one configuration per cell)."""
    from .report.tables import build_tables, frame_from_entries

    runs = frame_from_entries(store.entries(run_ids))
    if runs.empty:
        return
    tables, _, _ = build_tables(runs)
    for t in tables:
        print("\n" + t.markdown())


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


# -- status / report --------------------------------------------------------------------------
def cmd_status(args) -> int:
    from .store import sweep_stores

    stores = [s for s in sweep_stores(args.results) if not args.name or s.sweep == args.name]
    if not stores:
        print(f"no sweep under {args.results}")
        return 0
    for store in stores:
        recs = list(store.records())
        counts = {k: sum(1 for r in recs if r.get("status") == k)
                  for k in ("done", "failed", "skipped")}
        logs = store.dir / "logs"
        running = [p.stem for p in logs.glob("*.log")] if logs.is_dir() else []
        unfinished = [r for r in running if not (store.run_dir(r) / "record.json").is_file()]
        print(f"{store.sweep}: {counts['done']} done, {counts['failed']} failed, "
              f"{counts['skipped']} skipped, {len(unfinished)} started without a record "
              f"(running or interrupted)")
        for r in recs:
            if r.get("status") == "failed":
                print(f"  failed {r['run_id']} {r.get('method')} {r.get('dataset')}/"
                      f"{r.get('subset')} {r.get('setting')} {r.get('known_class') or ''} "
                      f"seed={r.get('seed')}: {str(r.get('reason'))[:120]}")
    return 0


def cmd_report(args) -> int:
    from .report.tables import ReportError, default_report_dir, write_report

    bad = [f for f in args.format if f not in ("markdown", "csv", "latex")]
    if bad:
        print(f"error: unknown --format {','.join(bad)}; use markdown, csv, latex",
              file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else default_report_dir(args.results, args.name)
    try:
        printed = write_report(args.results, out, args.format, args.name, args.metric,
                               compare_paper=args.compare_paper, where=args.where,
                               preset=args.preset)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in printed.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    for md in printed.get("markdown", []):
        print(md)
    if "paper" in printed:
        print(printed["paper"])
    c = printed["counts"]
    print(f"{c['done']} done, {c['failed']} failed, {c['skipped']} skipped runs; tables and "
          f"runs.csv written to {out}")
    return 0


def cmd_perf(args) -> int:
    import torch

    from .perf import run_perf
    from .registry import resolve_method_names

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    print(f"device: {name}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    rows = run_perf(resolve_method_names(args.methods), img_size=args.img_size,
                    steps=args.steps, batch_size=args.batch_size, device=device)
    if args.out:
        import pandas as pd

        pd.DataFrame(rows).assign(device=name).to_csv(args.out, index=False)
    return 0


def main(argv=None) -> int:
    from .datasets.base import DatasetNotPrepared
    from .datasets.images import ImageDecodeError
    from .datasets.layout import LayoutError
    from .grid import ConfigError
    from .registry import RegistryError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, RegistryError, LayoutError, DatasetNotPrepared, ImageDecodeError,
            FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept, rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
