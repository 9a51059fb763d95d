"""Named grids: the exact runs of one table or figure of the paper, read from
``bench/data/grids.yaml`` (data, not code) and planned into ordinary runs.

A grid's columns are method configurations (method, ``--set`` overrides, outlier source);
its blocks say where they run (setting, shots, datasets with their subsets and known
classes). Planning a grid is planning one ordinary sweep per column and dataset entry
(:func:`bench.plan.expand`), so a run shared by two grids has the same run id and is
computed once per results folder and sweep. ``--datasets`` swaps the data and keeps the
methods, settings, shots and seeds. Datasets that are not prepared are not planned: each is
listed with its run count and the command that prepares it. A column (or grid) the harness
cannot run yet carries its reason in the YAML and is listed, never faked.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Optional

import yaml

from .plan import ConfigError, Plan, SweepConfig, expand

GRIDS_YAML = Path(__file__).resolve().parent / "data" / "grids.yaml"
ALL = "*"


@dataclass(frozen=True)
class Column:
    """One method configuration of a grid, shown as one column (per shot count)."""

    label: str
    method: Optional[str] = None
    set: tuple = ()                       # ((param, value), ...)
    outliers: Optional[str] = None
    panels: tuple = ()
    unavailable: Optional[str] = None     # why the harness cannot run it (listed, not run)
    adapt: Optional["Adapt"] = None       # a staged column: one column per source subset
    keep: tuple = ()                      # artefacts its runs keep (e.g. embeddings.npz)

    def overrides(self) -> list[str]:
        return [f"{self.method}.{k}={_yaml_text(v)}" for k, v in self.set]


@dataclass(frozen=True)
class Adapt:
    """A staged (cross-domain) column: the method is first trained on a source subset of the
    same dataset (general setting, ``shots`` labelled anomalies, the column's ``set``), keeps
    its model, and is then fine-tuned on each other target subset's normal images alone with
    ``set`` (e.g. 10 epochs) and tested there. It expands into one column per source
    (``sources``: "*" = every subset of the block's data), labelled by the source's name;
    the source's own row is left blank, as in the paper."""

    sources: object = ALL                 # "*" or (subset, ...)
    shots: int = 10
    set: tuple = ()                       # ((param, value), ...) of the fine-tuning stage


@dataclass(frozen=True)
class Block:
    """Where the columns run: one setting, its shots, datasets → subsets → known classes."""

    setting: str
    shots: tuple
    datasets: tuple                       # ((dataset, "*" | ((subset, "*" | (kc,...)),...)),)
    mean_only: tuple = ()                 # datasets shown by their Mean row alone (Table 3)


@dataclass(frozen=True)
class Grid:
    name: str
    title: str
    seeds: tuple
    columns: tuple
    blocks: tuple
    panels: dict = field(default_factory=dict, compare=False)
    unavailable: Optional[str] = None
    group_titles: dict = field(default_factory=dict, compare=False)  # shots → column header

    @property
    def runnable_columns(self) -> list[Column]:
        return [c for c in self.columns if not c.unavailable]

    @property
    def settings(self) -> list[str]:
        return list(dict.fromkeys(b.setting for b in self.blocks))


def _yaml_text(v) -> str:
    return "none" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _where(path: Path, name: str, what: str) -> str:
    return f"{path}: grid {name!r}: {what}"


def _parse_datasets(path: Path, name: str, raw) -> tuple:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(_where(path, name, "a block needs datasets: {dataset: '*' or "
                                             "{subset: '*' or [known classes]}}"))
    out = []
    for ds, sub in raw.items():
        if sub == ALL:
            out.append((str(ds), ALL))
            continue
        if not isinstance(sub, dict):
            raise ConfigError(_where(path, name, f"dataset {ds!r}: expected '*' or a mapping "
                                                 f"subset: '*' or [known classes], got {sub!r}"))
        subs = []
        for s, kc in sub.items():
            if kc != ALL and not (isinstance(kc, list) and kc):
                raise ConfigError(_where(path, name, f"{ds}/{s}: known classes must be '*' "
                                                     f"or a non-empty list, got {kc!r}"))
            subs.append((str(s), ALL if kc == ALL else tuple(map(str, kc))))
        out.append((str(ds), tuple(subs)))
    return tuple(out)


def _parse_grid(path: Path, name: str, raw: dict) -> Grid:
    if not isinstance(raw, dict):
        raise ConfigError(_where(path, name, "expected a mapping"))
    known = {"title", "seeds", "columns", "blocks", "panels", "unavailable", "group_titles"}
    extra = set(raw) - known
    if extra:
        raise ConfigError(_where(path, name, f"unknown keys {sorted(extra)}; valid: "
                                             f"{sorted(known)}"))
    cols = []
    for c in raw.get("columns") or []:
        if "label" not in c or not (c.get("method") or c.get("unavailable")):
            raise ConfigError(_where(path, name, f"column {c!r} needs a label and a method "
                                                 f"(or unavailable: REASON)"))
        cols.append(Column(str(c["label"]), c.get("method"),
                           tuple(sorted((c.get("set") or {}).items())), c.get("outliers"),
                           tuple(c.get("panels") or ()),
                           " ".join(str(c["unavailable"]).split()) if c.get("unavailable")
                           else None, _parse_adapt(path, name, c),
                           _parse_keep(path, name, c)))
    if not cols:
        raise ConfigError(_where(path, name, "no columns"))
    labels = [c.label for c in cols]
    if len(set(labels)) < len(labels):
        raise ConfigError(_where(path, name, f"column labels repeat: {labels}"))
    blocks = []
    for b in raw.get("blocks") or []:
        if b.get("setting") not in ("general", "hard"):
            raise ConfigError(_where(path, name, f"block setting must be general or hard, "
                                                 f"got {b.get('setting')!r}"))
        shots = b.get("shots") or []
        if not shots or not all(isinstance(k, int) for k in shots):
            raise ConfigError(_where(path, name, f"block shots must be a list of integers"))
        blocks.append(Block(b["setting"], tuple(shots),
                            _parse_datasets(path, name, b.get("datasets")),
                            tuple(b.get("mean_only") or ())))
    if not blocks:
        raise ConfigError(_where(path, name, "no blocks"))
    seeds = raw.get("seeds") or [0, 1, 2]
    return Grid(name, str(raw.get("title") or name), tuple(int(s) for s in seeds),
                tuple(cols), tuple(blocks), dict(raw.get("panels") or {}),
                " ".join(str(raw["unavailable"]).split()) if raw.get("unavailable") else None,
                {int(k): str(v) for k, v in (raw.get("group_titles") or {}).items()})


def _parse_keep(path: Path, name: str, c: dict) -> tuple:
    from .api import ARTEFACTS

    keep = c.get("keep") or []
    if not isinstance(keep, list) or any(k not in ARTEFACTS for k in keep):
        raise ConfigError(_where(path, name, f"column {c.get('label')!r}: keep must be a list "
                                             f"of {', '.join(ARTEFACTS)}, got {keep!r}"))
    return tuple(keep)


def _parse_adapt(path: Path, name: str, c: dict) -> Optional[Adapt]:
    raw = c.get("adapt")
    if raw is None:
        return None
    valid = {"from", "shots", "set"}
    if not isinstance(raw, dict) or set(raw) - valid:
        raise ConfigError(_where(path, name, f"column {c.get('label')!r}: adapt must be a "
                                             f"mapping with keys {sorted(valid)}, got {raw!r}"))
    src = raw.get("from", ALL)
    if src != ALL and not (isinstance(src, list) and src):
        raise ConfigError(_where(path, name, f"column {c.get('label')!r}: adapt.from must be "
                                             f"'*' or a list of subsets, got {src!r}"))
    shots = raw.get("shots", 10)
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 1:
        raise ConfigError(_where(path, name, f"column {c.get('label')!r}: adapt.shots must "
                                             f"be a positive integer, got {shots!r}"))
    return Adapt(ALL if src == ALL else tuple(map(str, src)), shots,
                 tuple(sorted((raw.get("set") or {}).items())))


@lru_cache(maxsize=4)
def load_grids(path: Path = GRIDS_YAML) -> dict[str, Grid]:
    """Every grid of the YAML file by name (keys starting with ``_`` are YAML anchors)."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the grids file {path}: {exc}") from exc
    return {k: _parse_grid(Path(path), k, v) for k, v in raw.items()
            if not str(k).startswith("_")}


def get_grid(name: str) -> Grid:
    grids = load_grids()
    if name not in grids:
        raise ConfigError(f"--grid {name!r}: no such grid; grids: {', '.join(grids)} "
                          f"(`bench list grids`)")
    return grids[name]


# -- planning ---------------------------------------------------------------------------------
@dataclass
class GridPlan:
    """The merged plan of a grid, which columns each run belongs to, and what is left out."""

    grid: Grid
    plan: Plan
    columns_of: dict[str, list[str]]      # run id → column labels (a run can serve several)
    missing: list[str]                    # data not prepared: one line each, with the command
    n_missing_runs: int
    unavailable: list[str]                # columns the harness cannot run, with the reason
    cells: list[tuple]                    # (dataset, subset, setting, known class) planned

    def manifest(self) -> dict:
        """What ``bench report --grid`` needs to lay the runs out (saved in the sweep)."""
        return {"grid": self.grid.name, "columns_of": self.columns_of,
                "missing": self.missing, "unavailable": self.unavailable,
                "layout": self.layout, "cells": [list(c) for c in self.cells],
                "seeds": list(self.seeds), "blanks": self.blanks}

    def summary_lines(self) -> list[str]:
        g = self.grid
        n = len(self.plan.specs) + len(self.plan.skipped) + len(self.plan.failed)
        lines = [f"grid {g.name}: {g.title}",
                 f"  columns: {', '.join(c.label for c in g.runnable_columns)}; seeds "
                 f"{','.join(map(str, self.seeds))}"]
        for setting in g.settings:
            rows = [c for c in self.cells if c[2] == setting]
            what = "known-class subsets" if setting == "hard" else "subsets"
            lines.append(f"  {setting} setting: {len(rows)} {what}")
            lines += [f"    {d}/{s}" + (f" known class {k}" if k else "")
                      for d, s, _, k in rows]
        lines += [f"  not runnable: {u}" for u in self.unavailable]
        lines += [f"  missing data: {m}" for m in self.missing]
        lines.append(f"grid {g.name}: {n + self.n_missing_runs} runs, {n} planned on the "
                     f"prepared data, {self.n_missing_runs} waiting for data")
        return lines

    seeds: tuple = ()
    layout: dict = field(default_factory=dict)   # setting → [[column label, shots], ...]
    blanks: list = field(default_factory=list)   # cells left blank on purpose, with why


def _entries(block: Block, swap: Optional[list[str]], user_subsets: Optional[list[str]]):
    """(dataset, subsets or None, known classes or None) of one block, one per distinct
    known-class list."""
    datasets = [(d, ALL) for d in swap] if swap else list(block.datasets)
    for ds, subs in datasets:
        if subs == ALL:
            yield ds, user_subsets, None
            continue
        if block.setting == "general":  # no known classes: one entry for all its subsets
            listed = [s for s, _ in subs if not user_subsets or s in user_subsets]
            if listed:
                yield ds, listed, None
            continue
        for s, kc in subs:
            if user_subsets and s not in user_subsets:
                continue
            yield ds, [s], None if kc == ALL else list(kc)


def _estimate_runs(ds_name: str, subsets: Optional[list[str]], known: Optional[list[str]],
                   setting: str, n_shots: int, n_seeds: int) -> tuple[int, list[tuple]]:
    """Runs (and cells) of an entry whose data is not prepared, from the catalog's facts."""
    from .plan import resolve_dataset

    ds = resolve_dataset(ds_name)
    subs = subsets or list(getattr(ds, "subsets", []) or [])
    cells = []
    for s in subs:
        if setting == "general":
            cells.append((ds_name, s, setting, ""))
        else:
            for k in known or ds.hard_known_classes.get(s, []):
                cells.append((ds_name, s, setting, k))
    return len(cells) * n_shots * n_seeds, cells


def _available(ds, data_root: Path) -> bool:
    """The dataset can be read (generated datasets are generated now)."""
    from .datasets.base import DatasetNotPrepared

    try:
        ds.locate(data_root)
    except DatasetNotPrepared:
        return False
    return True


def plan_grid(grid: Grid, cfg: SweepConfig, swap_datasets: Optional[list[str]] = None) -> GridPlan:
    """Plan every runnable column of ``grid`` on each block's data (or ``swap_datasets``);
    ``cfg`` supplies the rest (preset, weights, data root, seeds if given, ``--set``)."""
    from .datasets.base import default_data_root
    from .plan import method_class, resolve_dataset

    if grid.unavailable:
        raise ConfigError(f"grid {grid.name} is not yet runnable: {grid.unavailable}")
    from .plan import parse_overrides

    # --set is checked once against all the grid's methods (a typo is an error), then each
    # column gets the items that apply to its method
    parse_overrides(cfg.set, sorted({c.method for c in grid.runnable_columns}))
    seeds = list(cfg.seed_list) if cfg.seed_list else (
        list(range(cfg.seeds)) if cfg.seeds is not None else list(grid.seeds))
    data_root = Path(cfg.data_root).expanduser() if cfg.data_root else default_data_root()
    specs, skipped, failed, notes = {}, {}, {}, []
    columns_of: dict[str, list[str]] = {}
    blanks: list[list] = []                 # [dataset, subset, setting, known, label, why]
    layout_cols: dict[str, dict[str, list[str]]] = {}   # setting → grid column → labels
    missing, n_missing, cells = [], 0, {}
    missing_by_ds: dict[str, int] = {}
    for block in grid.blocks:
        for ds_name, subsets, known in _entries(block, swap_datasets, cfg.subsets):
            ds = resolve_dataset(ds_name)
            if not _available(ds, data_root):
                for col in grid.runnable_columns:
                    shots = block.shots if method_class(col.method).uses_labeled_anomalies \
                        else (0,)
                    n, c = _estimate_runs(ds_name, subsets, known, block.setting,
                                          len(shots), len(seeds))
                    if col.adapt:  # a source run per subset, a fine-tuning per other subset
                        n = len(c) * len(c) * len(seeds)
                    n_missing += n
                    missing_by_ds[ds_name] = missing_by_ds.get(ds_name, 0) + n
                    cells.update(dict.fromkeys(c))
                continue
            if any(c.adapt for c in grid.runnable_columns):  # rows in the data's order
                from .plan import dataset_subsets
                for t in dataset_subsets(ds, ds.locate(data_root), subsets):
                    cells.setdefault((ds.label, t, block.setting, ""))
            for col in grid.runnable_columns:
                sub_cfg = replace(cfg, methods=[col.method], datasets=[ds_name],
                                  subsets=subsets, setting=block.setting, known_classes=known,
                                  shots=list(block.shots), seeds=None, seed_list=seeds,
                                  set=_user_set(cfg.set, col.method) + col.overrides(),
                                  outliers=col.outliers if col.outliers else cfg.outliers)
                if col.adapt:
                    parts = _plan_adapted(col, sub_cfg, blanks)
                else:
                    parts = [(_kept(expand(sub_cfg), col), col.label)]
                for plan, label in parts:
                    notes += [n for n in plan.notes if n not in notes]
                    for spec in plan.specs:
                        specs.setdefault(spec.run_id, spec)
                    for spec, reason in plan.skipped:
                        skipped.setdefault(spec.run_id, (spec, reason))
                    for spec, reason in plan.failed:
                        failed.setdefault(spec.run_id, (spec, reason))
                    for spec in plan.specs + [s for s, _ in plan.skipped + plan.failed]:
                        labels = columns_of.setdefault(spec.run_id, [])
                        if label is None:  # a source run: in the grid, in no column
                            continue
                        if label not in labels:
                            labels.append(label)
                        cells.setdefault((spec.dataset, spec.subset, spec.setting,
                                         spec.known_class or ""))
                        layout_cols.setdefault(block.setting, {}).setdefault(
                            col.label, []).append(label)
    for ds_name, n in missing_by_ds.items():
        ds = resolve_dataset(ds_name)
        how = (f"bench data prepare {ds_name} --raw PATH --data-root {data_root}"
               if ds.has_converter() else f"place it under {ds.root(data_root)} in MVTec AD "
                                          f"layout")
        missing.append(f"{ds_name} ({n} runs): not prepared under {data_root}; prepare it "
                       f"with `{how}` (`bench data info {ds_name}` says where to get it)")
    unavailable = [f"{c.label}: {c.unavailable}" for c in grid.columns if c.unavailable]
    layout = {}
    for block in grid.blocks:
        cols = layout.setdefault(block.setting, [])
        for col in grid.runnable_columns:
            if col.adapt:  # one column per source, 0 labelled anomalies of the target
                labels = layout_cols.get(block.setting, {}).get(col.label, [])
                for label in dict.fromkeys(labels):
                    if [label, 0] not in cols:
                        cols.append([label, 0])
                continue
            uses = method_class(col.method).uses_labeled_anomalies
            for k in (block.shots if uses else (0,)):
                if [col.label, k] not in cols:
                    cols.append([col.label, k])
    merged = Plan(list(specs.values()), list(skipped.values()), notes, list(failed.values()))
    return GridPlan(grid, merged, columns_of, missing, n_missing, unavailable,
                    list(cells), seeds=tuple(seeds), layout=layout, blanks=blanks)


def _kept(plan: Plan, col: Column) -> Plan:
    """``plan`` with the column's ``keep`` artefacts asked of every run (part of the run
    id: a run that keeps its features is not the same record as one that does not)."""
    if not col.keep:
        return plan
    from .api import EMBEDDINGS_ARTEFACT
    from .plan import method_class

    if EMBEDDINGS_ARTEFACT in col.keep and not method_class(col.method).embeds:
        raise ConfigError(f"grid column {col.label!r}: {col.method} has no learned features "
                          f"to keep (it does not declare embeds = True)")
    return _keeping(plan, col.keep)


def _keeping(plan: Plan, artefacts: tuple) -> Plan:
    """``plan`` with every run (to run, skipped or failed) also keeping ``artefacts``."""
    def keep(s):
        return replace(s, keep=tuple(sorted(set(s.keep) | set(artefacts))))

    return Plan([keep(s) for s in plan.specs], [(keep(s), r) for s, r in plan.skipped],
                plan.notes, [(keep(s), r) for s, r in plan.failed])


def _user_set(items: list[str], method: str) -> list[str]:
    """The ``--set`` items that apply to ``method``: its own, and wildcard items naming one
    of its parameters (or the image size)."""
    import fnmatch

    from .plan import IMG_SIZE, method_class

    out = []
    for item in items:
        pattern, param = item.split("=", 1)[0].rsplit(".", 1)
        if fnmatch.fnmatchcase(method, pattern) and (
                pattern == method or param == IMG_SIZE or
                param in method_class(method).param_names()):
            out.append(item)
    return out


def _plan_adapted(col: Column, cfg: SweepConfig, blanks: list) -> list[tuple[Plan, Optional[str]]]:
    """The two stages of a staged column on one block entry: (plan, column label) pairs,
    the source runs with label None (each keeps its model), then per source the fine-tuning
    runs of every other subset, each naming the source run of its seed in ``needs``."""
    from .api import MODEL_ARTEFACT
    from .plan import dataset_subsets, method_class, resolve_dataset
    from .datasets.base import default_data_root

    cls = method_class(col.method)
    if not cls.adapts:
        raise ConfigError(f"grid column {col.label!r}: {col.method} cannot be fine-tuned from "
                          f"another run's model (it does not declare adapts = True)")
    if cfg.setting != "general":
        raise ConfigError(f"grid column {col.label!r}: a staged column runs in the general "
                          f"setting only, not {cfg.setting!r}")
    ds = resolve_dataset(cfg.datasets[0])
    root = ds.locate(Path(cfg.data_root).expanduser() if cfg.data_root
                     else default_data_root())
    targets = dataset_subsets(ds, root, cfg.subsets)
    sources = targets if col.adapt.sources == ALL else list(col.adapt.sources)
    unknown = [s for s in sources if s not in dataset_subsets(ds, root, None)]
    if unknown:
        raise ConfigError(f"grid column {col.label!r}: source subsets {unknown} are not in "
                          f"{ds.label}; its subsets: {', '.join(dataset_subsets(ds, root, None))}")
    # cfg.set holds the user's items and the column's own; the fine-tuning stage adds its own
    stage2_set = list(cfg.set) + [f"{col.method}.{k}={_yaml_text(v)}" for k, v in col.adapt.set]
    parts: list[tuple[Plan, Optional[str]]] = []
    for src in sources:
        src_plan = _keeping(expand(replace(cfg, subsets=[src], shots=[col.adapt.shots])),
                            (MODEL_ARTEFACT,))
        parts.append((src_plan, None))
        by_seed = {s.seed: (s, None) for s in src_plan.specs}
        by_seed.update({s.seed: (s, f"{status}: {r}") for status, items in
                        (("skipped", src_plan.skipped), ("failed", src_plan.failed))
                        for s, r in items})
        others = [t for t in targets if t != src]
        blanks += [[ds.label, src, "general", "", src,
                    "the source domain itself (blank in the paper)"]] if src in targets else []
        if not others:
            continue
        tgt = expand(replace(cfg, subsets=others, set=stage2_set, normal_only=True))
        specs, skipped = [], list(tgt.skipped)
        for spec in tgt.specs:
            source, problem = by_seed.get(spec.seed, (None, "no source run of this seed"))
            src_id = source.run_id if source else "no source run"
            # the fine-tuning budget is the paper's own for this stage (App. C.3)
            devs = tuple(d for d in spec.paper_deviations
                         if not any(d.startswith(f"{k}=") for k, _ in col.adapt.set))
            staged = replace(spec, paper_deviations=devs, needs=((source.run_id, MODEL_ARTEFACT),) if source else (),
                             needs_config=source.config_id if source else "",
                             stage=f"adapted from {src}",
                             notes=spec.notes + (f"fine-tuned from {src} ({src_id})",))
            if problem:
                skipped.append((staged, f"its source run on {src} was {problem}"))
            else:
                specs.append(staged)
        parts.append((Plan(specs, skipped, tgt.notes, list(tgt.failed)), src))
    return parts


def grid_lines() -> list[str]:
    """``bench list grids``: one line per grid, with why it cannot run where it cannot."""
    out = []
    for name, g in load_grids().items():
        out.append(f"{name:8s} {g.title}" + (f" [not yet runnable: {g.unavailable}]"
                                             if g.unavailable else ""))
    return out
