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
import textwrap
from pathlib import Path

from . import __version__


DATA_ROOT_HELP = "data root folder (default: $BENCH_DATA_ROOT or ./data)"


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str) -> list[int]:
    try:
        out = [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}")
    if not out:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}")
    return out


def _run_default(option: str) -> str:
    """The default of a ``bench run`` option as its help shows it (from SweepConfig, the
    one home of those defaults)."""
    from dataclasses import MISSING

    from .plan import SweepConfig

    f = SweepConfig.__dataclass_fields__[option]
    value = f.default if f.default is not MISSING else f.default_factory()
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line naming the subcommand's help, not the whole usage block
    (subcommand parsers inherit this class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from .plan import PRESETS

    p = _Parser(prog="bench", description="Benchmark harness for open-set "
                                "supervised anomaly detection (DRA, CVPR 2022, and baselines)")
    p.add_argument("--version", action="version", version=f"osad-bench {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ls = sub.add_parser("list", help="list registered methods or datasets",
                        description="List the registered methods (with their papers) or "
                                    "datasets (prepared or not, with fingerprints).")
    ls.add_argument("what", choices=["methods", "datasets", "grids"],
                    help="methods, datasets or grids (the paper's tables and figures)")
    ls.add_argument("pattern", nargs="?", default="*",
                    help="wildcard on the names, e.g. 'dra*' (default: every name)")
    ls.add_argument("--long", action="store_true",
                    help="show method cards (paper, venue, upstream code, licence, "
                         "parameters) or dataset details")
    ls.add_argument("--data-root", default=None, metavar="DIR",
                    help="datasets: where to look for prepared copies; " + DATA_ROOT_HELP)
    ls.set_defaults(func=cmd_list)

    d = _run_default
    r = sub.add_parser("run", help="run a sweep (skips finished runs; resumes after a kill)",
                       description="Plan the runs of a sweep (methods x datasets x subsets x "
                                   "settings x known classes x shots x seeds) and run those "
                                   "not finished yet. Options given on the command line "
                                   "override those of --config.")
    S = argparse.SUPPRESS  # unset flags stay absent so --config and presets can fill them
    r.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="YAML file with any of these options (keys as the long option "
                        "names, e.g. 'seed-list: [0, 1]') (default: none)")
    r.add_argument("--methods", type=_csv, default=S, metavar="LIST",
                   help="'all' (the paper's eight), 'recent' (AHL, BGAD, PReNet, anomalib:* with "
                        "DRA), names or wildcards, comma-separated, e.g. "
                        f"'dra*,devnet' (default: {d('methods')})")
    r.add_argument("--datasets", type=_csv, default=S, metavar="LIST",
                   help="registered dataset names or folders in MVTec AD layout, "
                        f"comma-separated (default: {d('datasets')})")
    r.add_argument("--subsets", type=_csv, default=S, metavar="LIST",
                   help="only these subsets (categories) of each dataset, comma-separated "
                        "(default: all of the dataset's subsets)")
    r.add_argument("--setting", choices=["general", "hard", "both"], default=S,
                   help="general: labelled anomalies from any class; hard: from one known "
                        "class, tested on the unseen classes only; both "
                        f"(default: {d('setting')})")
    r.add_argument("--known-classes", type=_csv, default=S, dest="known_classes",
                   metavar="LIST",
                   help="hard setting only: these known classes (default: the paper's known "
                        "classes, or every class where the paper names none)")
    r.add_argument("--shots", type=_ints, default=S, metavar="LIST",
                   help="labelled anomalies per run, comma-separated, at most 10 in the "
                        "general setting; methods that use none run once with 0 "
                        "(default: 10 with --preset demo or quick, 1,10 with paper)")
    r.add_argument("--seeds", type=int, default=S, metavar="N",
                   help="run seeds 0..N-1; not together with --seed-list (default: 1 with "
                        "--preset demo or quick, 3 with paper)")
    r.add_argument("--seed-list", type=_ints, default=S, dest="seed_list", metavar="LIST",
                   help="these run seeds, e.g. 0,5,7, instead of --seeds (default: none)")
    r.add_argument("--split-seed", type=int, default=S, dest="split_seed", metavar="S",
                   help="draw every split with seed S: labelled anomalies and test set stay "
                        "fixed, only training varies with the run seed; 42 is the released "
                        "code's policy (default: each run's seed draws its split)")
    r.add_argument("--preset", choices=list(PRESETS), default=S,
                   help="demo: 64 px, the demo budget (30 training steps), no pretrained "
                        "weights, one known class per synthetic subset, under two minutes "
                        "on two CPU cores; quick: 64 px, a smoke-test budget, no pretrained "
                        "weights, every known class; paper: the paper's image size, ImageNet "
                        "weights and full training budget (a 448-px DRA run takes about a "
                        "minute on one H200 GPU, far longer on a CPU) (default: demo on the "
                        "synthetic dataset, paper on any other)")
    r.add_argument("--data-root", default=S, dest="data_root", metavar="DIR",
                   help=DATA_ROOT_HELP)
    r.add_argument("--weights", default=S, metavar="imagenet|none|DIR",
                   help="imagenet: torchvision's ImageNet checkpoints (downloaded once into "
                        "torch's cache); none: random initialisation; DIR: a folder holding "
                        "the checkpoint files (default: none with --preset demo or quick, "
                        "imagenet with paper)")
    r.add_argument("--outliers", default=S, metavar="NAME|DIR|none",
                   help="external outlier images for every method that uses them: a dataset "
                        "name (e.g. lag, mvtec_ad), a folder of <X>/train/good/ images, or "
                        "none; the target's own category is excluded (default: each method's "
                        "own source, in both presets: SAOE the other MVTec AD categories, LAG "
                        "on medical data; DRA LAG on medical data, CutMix elsewhere; a run "
                        "whose source is not prepared is skipped)")
    r.add_argument("--train-cap", type=int, default=S, dest="train_cap", metavar="N",
                   help="use at most N normal training images, a seeded subset "
                        "(default: all of them)")
    r.add_argument("--set", action="append", default=S, metavar="METHOD.PARAM=VALUE",
                   help="override a method parameter, repeatable; '*.PARAM' sets it for "
                        "every method that has it, e.g. --set dra.epochs=10 (default: none)")
    r.add_argument("--results", default=S, metavar="DIR",
                   help=f"results folder, one folder per sweep in it (default: "
                        f"./{d('results')})")
    r.add_argument("--name", default=S, metavar="SWEEP",
                   help=f"sweep name: the folder under --results that holds its runs "
                        f"(default: {d('name')})")
    r.add_argument("--gpus", default=S, metavar="all|none|LIST",
                   help="all: every visible GPU (the CPU if there is none); none: the CPU; "
                        "or GPU indices, e.g. 0,1 (default: all)")
    r.add_argument("--jobs-per-gpu", type=int, default=S, dest="jobs_per_gpu", metavar="N",
                   help="runs at a time on each GPU; small runs pack well, 448-px runs do not "
                        f"(default: {d('jobs_per_gpu')})")
    r.add_argument("--workers", type=int, default=S, metavar="N",
                   help="worker processes for CPU runs (default: one per core, at most 8)")
    r.add_argument("--executor", choices=["local", "ray", "slurm"], default=S,
                   help="where the runs are computed: local worker processes, a Ray cluster "
                        "(extra [ray]) or Slurm job arrays through submitit (extra [slurm]); "
                        f"results are identical (default: {d('executor')})")
    r.add_argument("--address", default=S, metavar="auto|HOST:PORT",
                   help="--executor ray: the Ray cluster to join (default: start a local one "
                        "for the sweep)")
    r.add_argument("--slurm-partition", default=S, dest="slurm_partition", metavar="NAME",
                   help="--executor slurm: the partition (default: the cluster's default)")
    r.add_argument("--slurm-time", type=int, default=S, dest="slurm_time", metavar="MIN",
                   help="--executor slurm: time limit of one array task in minutes "
                        f"(default: {d('slurm_time')})")
    r.add_argument("--slurm-gpus-per-task", type=int, default=S, dest="slurm_gpus_per_task",
                   metavar="N", help="--executor slurm: GPUs of one array task; 0 runs on its "
                                     f"CPU (default: {d('slurm_gpus_per_task')})")
    r.add_argument("--slurm-array-parallelism", type=int, default=S,
                   dest="slurm_array_parallelism", metavar="N",
                   help="--executor slurm: array tasks running at a time (default: 64 on "
                        "Slurm, one per core up to 8 with --slurm-local)")
    r.add_argument("--slurm-runs-per-task", type=int, default=S, dest="slurm_runs_per_task",
                   metavar="N", help="--executor slurm: runs computed one after another by one "
                                     "array task, so short runs do not flood the scheduler "
                                     "(default: about four tasks per parallel slot, e.g. 12 "
                                     "runs per task for 96 runs on 2 slots)")
    r.add_argument("--slurm-local", action="store_true", default=S, dest="slurm_local",
                   help="--executor slurm: run the array tasks on this machine through "
                        "submitit's local executor, no Slurm needed (default: off)")
    r.add_argument("--retry-failed", action="store_true", default=S, dest="retry_failed",
                   help="rerun the runs recorded as failed (default: keep their records)")
    r.add_argument("--save-models", action="store_true", default=S, dest="save_models",
                   help="store each trained model as model.pt in its run folder "
                        "(default: off)")
    r.add_argument("--precision", default=S, choices=("auto", "fp32", "bf16"),
                   help="arithmetic of the forward passes: bf16 autocasts them to bfloat16 "
                        "(weights and optimiser state stay fp32), part of the run id; auto: "
                        "bf16 when the runs go to GPUs with bf16 tensor cores, else fp32 "
                        "(default: auto)")
    r.add_argument("--deterministic", action="store_true", default=S,
                   help="deterministic GPU kernels: bitwise-repeatable GPU runs, slower "
                        "(default: off; CPU runs repeat exactly anyway)")
    r.add_argument("--dry-run", action="store_true", default=S, dest="dry_run",
                   help="print the planned runs, the workers and the weight checks, then "
                        "stop: runs nothing, records nothing, downloads nothing (default: "
                        "off)")
    r.add_argument("--grid", default=None, metavar="NAME",
                   help="run a named grid: the exact runs of one table or figure of the paper "
                        "(`bench list grids`); it fixes methods, settings, shots and seeds, "
                        "--datasets swaps its data (default: none)")
    r.add_argument("--no-table", action="store_true",
                   help="do not print the AUC-ROC table at the end (default: print it)")
    r.set_defaults(func=cmd_run)

    st = sub.add_parser("status", help="counts of done/failed/skipped runs per sweep",
                        description="Per sweep: done, failed and skipped runs, runs started "
                                    "without a record, and each failure's reason.")
    st.add_argument("--results", default="results", metavar="DIR",
                    help="results folder (default: ./results)")
    st.add_argument("--name", type=_csv, default=None, metavar="LIST",
                    help="only these sweeps, comma-separated (default: every sweep)")
    st.set_defaults(func=cmd_status)

    rp = sub.add_parser("report", help="mean±std tables from the run records (one "
                                       "configuration per cell)")
    rp.add_argument("--results", default="results", metavar="DIR",
                    help="results folder to read (default: ./results)")
    rp.add_argument("--name", type=_csv, default=None, metavar="LIST",
                    help="only these sweeps, comma-separated (default: every sweep)")
    rp.add_argument("--where", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                    help="only the runs of METHOD (wildcards as in --set) whose parameter has "
                         "this value, or FIELD=VALUE for weights, outliers, preset, "
                         "split_policy, method_version; repeatable (default: every run)")
    rp.add_argument("--preset", default=None, choices=list(PRESETS),
                    help="only the runs planned with this preset (default: any preset)")
    rp.add_argument("--out", default=None, metavar="DIR",
                    help="folder the tables and runs.csv are written to; a rewrite removes "
                         "the report files it no longer produces (default: "
                         "reports/<results folder name>/<sweep>/)")
    rp.add_argument("--format", type=_csv, default=["markdown", "csv", "latex"],
                    metavar="LIST",
                    help="table formats, comma-separated: markdown, csv, latex; with --grid "
                         "also html (one self-contained page with figures and statistics) "
                         "(default: markdown, csv and latex)")
    rp.add_argument("--metric", default="auroc", choices=["auroc", "auprc", "auroc_seen",
                                                           "auroc_unseen"],
                    help="the number in the cells (default: auroc)")
    rp.add_argument("--grid", default=None, metavar="NAME",
                    help="lay out the runs of a named grid (`bench run --grid NAME`) as the "
                         "paper's table, with a macro file per table cell; reads the sweep "
                         "named by --name (default: none; with --grid the sweep main)")
    rp.add_argument("--style", default="plain", choices=["plain", "paper"],
                    help="--grid: best per row and shot group bold and second underlined "
                         "(plain), or red and blue as the paper (default: plain)")
    rp.add_argument("--compare-paper", action="store_true", dest="compare_paper",
                    help="put the paper's published AUC-ROC beside ours (paper_comparison.*)")
    rp.set_defaults(func=cmd_report)

    vf = sub.add_parser("verify", help="check our AUC-ROC against the paper's, cell by cell",
                        description="Print every cell the paper reports whose value differs "
                                    "from ours by more than --tol (or the paper's std, "
                                    "whichever is larger); exit 0 when all hold, 1 when some "
                                    "miss, 2 on a usage problem.")
    vf.add_argument("--results", default="results", metavar="DIR",
                    help="results folder to read (default: ./results)")
    vf.add_argument("--name", type=_csv, default=None, metavar="LIST",
                    help="sweeps to read; with --grid one sweep (default: every sweep; with "
                         "--grid main)")
    vf.add_argument("--grid", default=None, metavar="NAME",
                    help="compare the cells of this grid's tables, Mean rows included "
                         "(default: every run of the sweeps)")
    vf.add_argument("--tol", type=float, default=0.02, metavar="X",
                    help="allowed |ours - paper| in AUC-ROC; the paper's std counts when "
                         "larger (default: 0.02)")
    vf.set_defaults(func=cmd_verify)

    pf = sub.add_parser("perf", help="training/scoring throughput of methods on this device",
                        description="Time a short training run and a scoring pass of each "
                                    "method on toy images (no dataset needed) and print "
                                    "ms/step, images/s and peak GPU memory.")
    pf.add_argument("--methods", type=_csv, default=None, metavar="LIST",
                    help="methods to measure: names or wildcards, comma-separated "
                         "(default: devnet; dra,devnet with --full)")
    pf.add_argument("--img-size", type=int, default=224, dest="img_size", metavar="N",
                    help="image side in pixels (default: 224)")
    pf.add_argument("--steps", type=int, default=10, metavar="N",
                    help="timed training steps, one epoch (default: 10)")
    pf.add_argument("--batch-size", type=int, default=None, dest="batch_size", metavar="N",
                    help="training batch size (default: each method's own)")
    pf.add_argument("--device", default=None, metavar="cpu|cuda|cuda:N",
                    help="where to measure (default: cuda when torch sees a GPU, else cpu)")
    pf.add_argument("--csv", "--out", default=None, dest="csv", metavar="FILE",
                    help="also write the figures to this CSV file; --out is its old, "
                         "deprecated name (default: print only)")
    pf.add_argument("--full", action="store_true",
                    help="time one complete paper-preset run of each method (default: dra,"
                         "devnet) on the synthetic data through the harness, beside the "
                         "compute floor of the same steps on random tensors; on the CPU a "
                         "smaller run (64 px, 10 steps)")
    pf.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                    help="with --full: the runs' precision (default: auto, bf16 on GPUs "
                         "with bf16 tensor cores)")
    pf.add_argument("--weights", default=None, metavar="imagenet|none|DIR",
                    help="with --full: the runs' weights (default: the paper preset's, "
                         "imagenet)")
    pf.set_defaults(func=cmd_perf)

    add_check_method_parser(sub)

    from .datasets.commands import add_data_parser

    add_gallery_parser(add_data_parser(sub))
    return p


def add_gallery_parser(data: argparse.ArgumentParser) -> None:
    """``bench data gallery``: the paper's Fig. 4 for prepared datasets."""
    action = next(a for a in data._actions if isinstance(a, argparse._SubParsersAction))
    g = action.add_parser("gallery", help="figure of normal and anomalous example images "
                                          "per subset (the paper's Fig. 4)",
                          description="Draw the first normal test images and one anomaly "
                                      "per class of every subset of the named datasets.")
    g.add_argument("names", nargs="+", metavar="NAME",
                   help="dataset names or MVTec-layout folders")
    g.add_argument("--data-root", default=None, dest="data_root", metavar="DIR",
                   help=DATA_ROOT_HELP)
    g.add_argument("--subsets", type=_csv, default=None, metavar="LIST",
                   help="only these subsets (default: every subset)")
    g.add_argument("--per-row", type=int, default=4, dest="per_row", metavar="N",
                   help="images per row, normal and anomalous (default: 4)")
    g.add_argument("--size", type=int, default=96, metavar="PX",
                   help="image side in pixels (default: 96)")
    g.add_argument("--out", default="reports/gallery", metavar="STEM",
                   help="output path without extension; .png and .pdf are written "
                        "(default: reports/gallery)")
    g.set_defaults(func=cmd_data_gallery)


def cmd_data_gallery(args) -> int:
    from .report.gallery import write_gallery

    if args.per_row < 1 or args.size < 8:
        print(f"error: --per-row {args.per_row} / --size {args.size}: use at least 1 image "
              f"per row and 8 pixels", file=sys.stderr)
        return 2
    paths = write_gallery(args.names, args.out, args.data_root, per_row=args.per_row,
                          size=args.size, subsets=args.subsets)
    print("gallery written to " + ", ".join(map(str, paths)))
    return 0


def subcommands(parser: argparse.ArgumentParser, path: tuple = ()):
    """(command words, parser) of every subcommand, depth first (``data prepare`` too)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sp in action.choices.items():
                yield path + (name,), sp
                yield from subcommands(sp, path + (name,))


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def options_markdown() -> str:
    """The README's option summary, generated from the parser so the two cannot drift
    (tests/harness/test_cli_usage.py compares them)."""
    out = []
    for path, sp in subcommands(build_parser()):
        actions = [a for a in sp._actions if not isinstance(
            a, (argparse._HelpAction, argparse._SubParsersAction))]
        if not actions:
            continue
        out += [f"**`bench {' '.join(path)}`**", "", "| option | meaning |", "|---|---|"]
        for a in actions:
            if a.option_strings:
                arg = "" if a.nargs == 0 else " " + (a.metavar or (
                    "{" + ",".join(a.choices) + "}" if a.choices else a.dest.upper()))
                name = a.option_strings[0] + arg
                if len(a.option_strings) > 1:
                    name += f" (also {', '.join(a.option_strings[1:])})"
            else:
                name = a.metavar or ("|".join(a.choices) if a.choices else a.dest.upper())
            text = " ".join((a.help or "").split())
            out.append(f"| `{_md_escape(name)}` | {_md_escape(text)} |")
        out.append("")
    return "\n".join(out)


# -- list -------------------------------------------------------------------------------------
def cmd_list(args) -> int:
    from .registry import get_dataset, get_method_entry, list_datasets, list_methods

    if args.what == "grids":
        from .grids import grid_lines

        for line in grid_lines():
            print(line)
        return 0
    names = (list_methods if args.what == "methods" else list_datasets)(args.pattern)
    if not names:
        every = (list_methods if args.what == "methods" else list_datasets)()
        print(f"no {args.what[:-1]} matches {args.pattern!r}; registered: {', '.join(every)}",
              file=sys.stderr)
        return 1
    if args.what == "methods":
        for n in names:
            e = get_method_entry(n)
            kind = f"variant of {e.variant_of}" if e.variant_of else ""
            sup = "" if e.cls.uses_labeled_anomalies else "unsupervised (shots 0)"
            extra = ", ".join(x for x in (kind, sup, f"v{e.cls.version}") if x)
            # cut at a word boundary; --long shows the whole title
            title = textwrap.shorten(e.cls.card.paper, 70, placeholder=" …",
                                    break_on_hyphens=False)
            print(f"{n:10s} {title:70s} [{extra}]")
            if args.long:
                c = e.cls.card
                for label, val in (("paper", c.paper), ("venue", c.venue),
                                   ("upstream", c.upstream),
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
    for n in names:
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
# Two spellings of one choice: the command line's one replaces the config file's other.
_EXCLUSIVE = {"seeds": "seed_list", "seed_list": "seeds"}


def config_from_args(args):
    """The sweep configuration (command line over --config file) and notes naming each file
    value the command line replaced."""
    from .plan import SweepConfig, load_config_file

    from_file = load_config_file(args.config) if args.config else {}
    given = {k: getattr(args, k) for k in SweepConfig.__dataclass_fields__ if k in vars(args)}
    values, notes = dict(from_file), []
    for k, v in given.items():
        for key in (k, _EXCLUSIVE.get(k)):
            if key in from_file and (key != k or from_file[key] != v):
                notes.append(f"--{k.replace('_', '-')} on the command line replaces "
                             f"{key.replace('_', '-')}: {from_file[key]} of {args.config}")
            if key in from_file and key not in given:
                del values[key]
        values[k] = v
    return SweepConfig(**values), notes


def cmd_run(args) -> int:
    from .store import Store
    from .sweep import run_sweep

    cfg, notes = config_from_args(args)

    def planner(cfg):  # a named grid (--grid) plans its own runs
        return plan_for_run(cfg, args, Store(cfg.results, cfg.name))

    return run_sweep(cfg, notes, planner=planner, print_table=not args.no_table)


_GRID_FIXES = ("methods", "setting", "shots", "known_classes")


def plan_for_run(cfg, args, store):
    """The plan of ``bench run``: the sweep's, or with ``--grid`` the grid's (its summary
    printed, its column manifest saved in the sweep unless this is a dry run)."""
    from .plan import ConfigError, expand

    if not getattr(args, "grid", None):
        return expand(cfg)
    from .grids import get_grid, plan_grid

    fixed = [k for k in _GRID_FIXES if k in vars(args)]
    if fixed:
        raise ConfigError(f"--grid {args.grid} fixes the methods, settings, shots and known "
                          f"classes; drop --{', --'.join(f.replace('_', '-') for f in fixed)}")
    swap = cfg.datasets if "datasets" in vars(args) else None
    if swap is None and cfg.preset is None:
        cfg.preset = "paper"  # the grid's own data is real data: the paper preset
    gp = plan_grid(get_grid(args.grid), cfg, swap_datasets=swap)
    for line in gp.summary_lines():
        print(line)
    if not cfg.dry_run:
        store.save_grid_manifest(args.grid, gp.manifest())
    return gp.plan


# -- status / report --------------------------------------------------------------------------
def cmd_status(args) -> int:
    from .store import StoreError, sweep_stores

    if not Path(args.results).expanduser().exists():
        raise StoreError(f"no results folder {args.results}; pass --results DIR with the "
                         f"folder `bench run --results` wrote")
    stores = sweep_stores(args.results, args.name)
    if not stores:
        raise StoreError(f"no sweep under {args.results} yet (`bench run` creates one)")
    for store in stores:
        recs = list(store.records())
        counts = {k: sum(1 for r in recs if r.get("status") == k)
                  for k in ("done", "failed", "skipped")}
        live, stale = store.claims()
        running = [r for r in live if store.status(r) is None]
        interrupted = [r for r in store.started_without_record() if r not in live]
        hosts = sorted({str(h.get("host")) for h in live.values()})
        print(f"{store.sweep}: {counts['done']} done, {counts['failed']} failed, "
              f"{counts['skipped']} skipped, {len(running)} running (claimed"
              + (f" on {', '.join(hosts)}" if hosts else "") + f"), {len(stale)} stale "
              f"claim(s) (owner gone; taken over by the next run), {len(interrupted)} "
              f"started without a record (interrupted)")
        for r in recs:
            if r.get("status") == "failed":
                print(f"  failed {r['run_id']} {r.get('method')} {r.get('dataset')}/"
                      f"{r.get('subset')} {r.get('setting')} {r.get('known_class') or ''} "
                      f"seed={r.get('seed')}: {str(r.get('reason'))[:120]}")
    return 0


def cmd_report(args) -> int:
    from .report.tables import ReportError, default_report_dir, write_report

    valid = ("markdown", "csv", "latex") + (("html",) if args.grid else ())
    bad = [f for f in args.format if f not in valid]
    if bad:
        print(f"error: unknown --format {','.join(bad)}; use {', '.join(valid)}"
              + ("" if args.grid else " (html with --grid)"), file=sys.stderr)
        return 2
    if args.grid:
        return cmd_report_grid(args)
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


def cmd_report_grid(args) -> int:
    """``bench report --grid NAME``: the paper-layout tables of one grid's runs."""
    from .report.grid_tables import write_grid_report
    from .report.tables import ReportError

    if args.name and len(args.name) > 1:
        print(f"error: --grid reads one sweep; got --name {','.join(args.name)}",
              file=sys.stderr)
        return 2
    sweep = args.name[0] if args.name else "main"
    out = Path(args.out) if args.out else \
        Path("reports") / Path(args.results).expanduser().resolve().name / args.grid
    try:
        printed = write_grid_report(args.results, sweep, args.grid, out, args.format,
                                    style=args.style, metric=args.metric)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for md in printed["markdown"]:
        print(md)
    print(f"grid {args.grid}: {', '.join(printed['files'])} written to {out}")
    return 0


def cmd_verify(args) -> int:
    """``bench verify``: exit 0 (every compared cell holds), 1 (some miss), 2 (usage)."""
    from .report.tables import ReportError
    from .report.verify import check, grid_comparison, misses, summary_comparison, \
        verify_lines

    if not args.tol >= 0:
        print(f"error: --tol {args.tol}: use a non-negative AUC-ROC difference, e.g. 0.02",
              file=sys.stderr)
        return 2
    try:
        if args.grid:
            from .report.grid_tables import deviations_text, load_grid_tables, paper_number

            if args.name and len(args.name) > 1:
                raise ReportError(f"--grid reads one sweep; got --name {','.join(args.name)}")
            _, _, runs, tables = load_grid_tables(args.results,
                                                  args.name[0] if args.name else "main",
                                                  args.grid)
            comp = grid_comparison(tables, paper_number(args.grid), deviations_text(runs))
        else:
            from .report.tables import assign_variants, load_runs, summarize

            runs = load_runs(args.results, args.name)
            if runs.empty:
                raise ReportError(f"no run records under {args.results}; run `bench run` "
                                  f"first")
            comp = summary_comparison(summarize(assign_variants(runs)))
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if comp.empty:
        print("error: no cell of these results is in the paper's tables (Tables 1, 2 and 7 "
              "on the paper's datasets); nothing to verify", file=sys.stderr)
        return 2
    comp = check(comp, args.tol)
    if comp["holds"].map(lambda h: h is None).all():
        print(f"error: none of the {len(comp)} cells of the paper found here has a finished "
              f"run; nothing to verify", file=sys.stderr)
        return 2
    for line in verify_lines(comp, args.tol):
        print(line)
    return 1 if len(misses(comp)) else 0


def cmd_perf(args) -> int:
    from .perf import check_args, resolve_device, run_perf
    from .registry import resolve_method_names

    check_args(img_size=args.img_size, steps=args.steps, batch_size=args.batch_size,
               csv=args.csv)
    if args.methods is None:
        args.methods = ["dra", "devnet"] if args.full else ["devnet"]
    methods = resolve_method_names(args.methods)
    import torch

    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    print(f"device: {name}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    if args.full:
        from .perf import run_full

        rows = run_full(methods, device=device, precision=args.precision,
                        weights=args.weights, small=not device.startswith("cuda"))
    else:
        rows = run_perf(methods, img_size=args.img_size, steps=args.steps,
                        batch_size=args.batch_size, device=device)
    if args.csv:
        import pandas as pd

        from .util import atomic_write_with

        path = Path(args.csv).expanduser()
        frame = pd.DataFrame(rows).assign(device=name)
        atomic_write_with(path, lambda tmp: frame.to_csv(tmp, index=False))
        print(f"figures written to {path}")
    return 1 if any("error" in r for r in rows) else 0


# -- check-method -------------------------------------------------------------------------------
def add_check_method_parser(sub) -> None:
    cm = sub.add_parser("check-method", help="run the named contract checks on a method",
                        description="Fit the method on tiny toy data with its declared "
                                    "test_params() and print every contract check (see "
                                    "bench/contract.py) as PASS or FAIL with the reason; "
                                    "exit 1 if any fails.")
    cm.add_argument("target", nargs="?", default=None, metavar="NAME|module:Class",
                    help="a registered method name, or module:Class of a Method subclass")
    cm.add_argument("--all", action="store_true",
                    help="check every registered method")
    cm.set_defaults(func=cmd_check_method)


def cmd_check_method(args) -> int:
    from .contract import check_method
    from .plan import ConfigError
    from .registry import list_methods

    if bool(args.all) == bool(args.target):
        raise ConfigError("check-method: give one method NAME (or module:Class), or --all")
    targets = list_methods() if args.all else [args.target]
    failed = 0
    for target in targets:
        try:
            results = list(check_method(target))
        except ValueError as exc:  # an unknown name or an unimportable module:Class
            raise ConfigError(str(exc)) from None
        for name, result in results:
            print(f"{'PASS' if result.passed else 'FAIL'} {target} {name}"
                  + ("" if result.passed else f": {result.reason}"), flush=True)
        failed += sum(not r.passed for _, r in results)
    print(f"{failed} check(s) failed" if failed else "all checks passed")
    return 1 if failed else 0


def main(argv=None) -> int:
    """Parse, call the subcommand; a usage or data problem is one ``error:`` line (exit 2),
    Ctrl-C one line (exit 130), never a traceback."""
    try:
        from .datasets.base import DatasetNotPrepared
        from .datasets.images import ImageDecodeError
        from .datasets.layout import LayoutError
        from .plan import ConfigError
        from .registry import RegistryError
        from .store import StoreError

        args = build_parser().parse_args(argv)
        try:
            return int(args.func(args) or 0)
        except (ConfigError, RegistryError, LayoutError, DatasetNotPrepared, ImageDecodeError,
                StoreError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        # on a terminal the line starts after the echoed ^C
        print(("\n" if sys.stderr.isatty() else "") + "interrupted; finished runs are kept, "
              "rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
