"""Sweep configuration and grid expansion: methods × datasets × subsets × settings × known
classes × shots × seeds → one :class:`RunSpec` per run, each with a content-hash id.

Presets:

* ``quick``: the synthetic dataset, 64 px, each method's ``quick_params`` (a few dozen
  training steps), weights ``none``, one seed, 10 shots — a sweep that finishes in minutes on
  a laptop CPU;
* ``paper``: the methods' defaults (the paper's settings, methods.md), the dataset's paper
  image size, ImageNet weights, three seeds, 1 and 10 shots, the dataset's paper outlier
  source (LAG for the medical datasets).

Parameter precedence: ``--set`` over the preset (per-dataset image size, quick budget) over
the method's (variant's) default.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .api import MAX_SHOTS
from .protocol import SplitUnavailable, make_split
from .registry import get_dataset, list_datasets, method_class, method_defaults, \
    resolve_method_names
from .datasets.base import Dataset, FolderDataset, default_data_root
from .datasets.layout import LayoutError, SubsetIndex, list_subsets, read_subset
from .datasets.outliers import OutlierPool, outlier_pool

PRESETS = ("quick", "paper")
QUICK_IMG_SIZE = 64


class ConfigError(ValueError):
    """A sweep option is invalid; the message names it and says what to do."""


@dataclass
class SweepConfig:
    """Every option of ``bench run`` (CLI flags and ``--config`` YAML use these names)."""

    methods: list[str] = field(default_factory=lambda: ["all"])
    datasets: list[str] = field(default_factory=lambda: ["synthetic"])
    subsets: Optional[list[str]] = None
    setting: str = "both"
    known_classes: Optional[list[str]] = None
    shots: Optional[list[int]] = None
    seeds: Optional[int] = None
    seed_list: Optional[list[int]] = None
    split_seed: Optional[int] = None
    preset: Optional[str] = None
    data_root: Optional[str] = None
    weights: Optional[str] = None
    outliers: Optional[str] = None
    train_cap: Optional[int] = None
    set: list[str] = field(default_factory=list)
    results: str = "results"
    name: str = "main"
    gpus: Optional[str] = None
    jobs_per_gpu: int = 1
    workers: Optional[int] = None
    retry_failed: bool = False
    save_models: bool = False
    deterministic: bool = False
    dry_run: bool = False

    @classmethod
    def from_yaml(cls, path: Path) -> "SweepConfig":
        return cls(**load_config_file(path))


def load_config_file(path: Path) -> dict:
    """Options from a YAML file (keys as the CLI flags, dashes or underscores)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    valid = set(SweepConfig.__dataclass_fields__)
    out = {}
    for k, v in raw.items():
        key = str(k).replace("-", "_")
        if key not in valid:
            raise ConfigError(f"config file {path}: unknown option {k!r}; valid: "
                              f"{', '.join(sorted(valid))}")
        if key in ("methods", "datasets", "subsets", "known_classes") and isinstance(v, str):
            v = [s.strip() for s in v.split(",") if s.strip()]
        if key in ("shots", "seed_list") and isinstance(v, (int, str)):
            v = [int(s) for s in str(v).split(",")]
        if key == "set" and isinstance(v, dict):
            v = [f"{a}={b}" for a, b in v.items()]
        out[key] = v
    return out


@dataclass(frozen=True)
class RunSpec:
    """One run. Its id hashes exactly the fields that define the result (not paths, not the
    harness version)."""

    method: str
    method_version: str
    params: dict
    dataset: str
    subset: str
    subset_fingerprint: str
    setting: str
    known_class: Optional[str]
    shots: int
    seed: int
    split_seed: int
    split_hash: str
    train_cap: Optional[int]
    weights: str
    outliers: Optional[str]
    outliers_fingerprint: Optional[str]
    dataset_root: str = field(default="", compare=False)   # where to read it (not hashed)
    outliers_root: Optional[str] = field(default=None, compare=False)
    outliers_excluded: tuple = field(default=(), compare=False)

    HASHED = ("method", "method_version", "params", "dataset", "subset", "subset_fingerprint",
              "setting", "known_class", "shots", "seed", "split_seed", "split_hash",
              "train_cap", "weights", "outliers", "outliers_fingerprint")

    def identity(self) -> dict:
        return {k: getattr(self, k) for k in self.HASHED}

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["outliers_excluded"] = list(self.outliers_excluded)
        d["run_id"] = self.run_id
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["outliers_excluded"] = tuple(d.get("outliers_excluded") or ())
        return cls(**d)

    @property
    def label(self) -> str:
        kc = f"/{self.known_class}" if self.known_class else ""
        return (f"{self.method} {self.dataset}/{self.subset} {self.setting}{kc} "
                f"shots={self.shots} seed={self.seed}")


# -- --set METHOD.PARAM=VALUE ---------------------------------------------------------------
@dataclass(frozen=True)
class Override:
    pattern: str   # method name or wildcard
    param: str
    value: Any


def parse_overrides(items: list[str], methods: list[str]) -> list[Override]:
    """Parse ``--set`` items; values are YAML scalars (``10``, ``1e-3``, ``true``, ``a,b``)."""
    out = []
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set {item!r}: expected METHOD.PARAM=VALUE, e.g. "
                              f"dra.epochs=10 or '*.img_size=64'")
        lhs, raw = item.split("=", 1)
        pattern, param = lhs.rsplit(".", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        targets = [m for m in methods if fnmatch.fnmatchcase(m, pattern)]
        if not targets:
            raise ConfigError(f"--set {item!r}: {pattern!r} matches none of the selected "
                              f"methods ({', '.join(methods)})")
        having = [m for m in targets if param in method_class(m).param_names()]
        if not having:
            valid = sorted({p for m in targets for p in method_class(m).param_names()})
            raise ConfigError(f"--set {item!r}: no selected method matching {pattern!r} has "
                              f"a parameter {param!r}; valid: {', '.join(valid)}")
        if not any(c in pattern for c in "*?[") and len(having) < len(targets):
            raise ConfigError(f"--set {item!r}: method {pattern!r} has no parameter {param!r}")
        out.append(Override(pattern, param, value))
    return out


def method_params(method: str, preset: str, dataset: Dataset, subset: str,
                  overrides: list[Override]) -> dict:
    """Resolve one method's parameters for one dataset subset (see module docstring)."""
    cls = method_class(method)
    params = method_defaults(method)
    if preset == "quick":
        params.update({k: v for k, v in cls.quick_params.items() if k in params})
        if "img_size" in params:
            params["img_size"] = QUICK_IMG_SIZE
    elif preset == "paper" and "img_size" in params and cls.dataset_img_size:
        params["img_size"] = dataset.img_size_for(subset)
    for o in overrides:
        if fnmatch.fnmatchcase(method, o.pattern) and o.param in params:
            params[o.param] = o.value
    return params


# -- datasets -------------------------------------------------------------------------------
def resolve_dataset(spec: str) -> Dataset:
    """A registered dataset name, or a path to a folder in MVTec AD layout."""
    if spec in list_datasets():
        return get_dataset(spec)
    p = Path(spec).expanduser()
    if p.exists() or "/" in spec or spec.startswith("."):
        return FolderDataset(p)
    raise ConfigError(f"--datasets {spec!r} is neither a registered dataset "
                      f"({', '.join(list_datasets())}) nor an existing folder")


def dataset_label(ds: Dataset) -> str:
    return Path(ds.name).name if isinstance(ds, FolderDataset) else ds.name


def dataset_subsets(ds: Dataset, root: Path, wanted: Optional[list[str]]) -> list[str]:
    present = (ds.only_subsets if isinstance(ds, FolderDataset) and ds.only_subsets
               else list_subsets(root))
    if ds.subsets:
        present = [s for s in ds.subsets if s in present] or present
    if not wanted:
        return present
    unknown = [s for s in wanted if s not in present]
    if unknown:
        raise ConfigError(f"--subsets {','.join(unknown)} not in {dataset_label(ds)} "
                          f"({root}); its subsets: {', '.join(present)}")
    return [s for s in present if s in wanted]


def known_classes_for(ds: Dataset, index: SubsetIndex, wanted: Optional[list[str]]) -> list[str]:
    """Hard-setting known classes of a subset: the user's (any class of the subset), else the
    paper's (``hard_known_classes``; an empty list means the paper runs no hard setting on
    that subset), else every non-empty class."""
    if wanted:
        for k in wanted:
            index.check_class(k)  # unknown names are an error listing the valid ones
        return [k for k in index.classes if k in wanted]
    if index.subset in ds.hard_known_classes:
        classes = ds.hard_known_classes[index.subset]
    else:
        classes = index.classes
    return [c for c in classes if c in index.anomalies and index.anomalies[c]]


# -- expansion ------------------------------------------------------------------------------
@dataclass
class Plan:
    specs: list[RunSpec]
    skipped: list[tuple[RunSpec, str]]   # runs known to be unavailable (recorded as skipped)
    notes: list[str]
    planned_seeds: int


def effective_preset(cfg: SweepConfig) -> str:
    if cfg.preset:
        if cfg.preset not in PRESETS:
            raise ConfigError(f"--preset {cfg.preset!r}: use one of {', '.join(PRESETS)}")
        return cfg.preset
    # The first command works offline: the synthetic demo defaults to `quick`.
    return "quick" if all(d == "synthetic" for d in cfg.datasets) else "paper"


def validate(cfg: SweepConfig) -> None:
    """Refuse options that contradict each other or the protocol, before anything is read or
    run: nothing is silently ignored or overridden (each message says what to do instead)."""
    if cfg.setting not in ("general", "hard", "both"):
        raise ConfigError(f"--setting {cfg.setting!r}: use general, hard or both")
    if cfg.seeds is not None and cfg.seed_list:
        raise ConfigError(f"--seeds {cfg.seeds} and --seed-list "
                          f"{','.join(map(str, cfg.seed_list))} both given; use one: --seeds N "
                          f"(seeds 0..N-1) or --seed-list a,b,c")
    for opt, values in (("--shots", cfg.shots), ("--seed-list", cfg.seed_list)):
        if values is not None and not values:
            raise ConfigError(f"{opt}: no value given; e.g. {opt} 1,10")
    if cfg.seeds is not None and cfg.seeds < 1:
        raise ConfigError(f"--seeds {cfg.seeds}: use at least 1")
    for opt, values in (("--seed-list", cfg.seed_list or []),
                        ("--split-seed", [] if cfg.split_seed is None else [cfg.split_seed])):
        for v in values:
            if not 0 <= v < 2**32:
                raise ConfigError(f"{opt} {v}: a seed must be between 0 and 2**32-1")
    for s in cfg.shots or []:
        if s < 1:
            raise ConfigError(f"--shots {s}: use a positive number of labelled anomalies")
        if s > MAX_SHOTS and cfg.setting != "hard":
            # General setting: the first MAX_SHOTS shuffled anomalies leave the test set for
            # every shot count, so all cells share one test set; more shots would shrink it.
            raise ConfigError(f"--shots {s}: in the general setting the protocol takes the "
                              f"first {MAX_SHOTS} shuffled anomalies out of the test set for "
                              f"every shot count, so all cells share one test set; more shots "
                              f"would shrink it and compare with no other cell. Use at most "
                              f"{MAX_SHOTS}, or --setting hard (its test set does not depend "
                              f"on the shots)")
    if cfg.known_classes and cfg.setting == "general":
        raise ConfigError(f"--known-classes {','.join(cfg.known_classes)} applies to the hard "
                          f"setting only, but --setting is general; use --setting hard or both")
    if cfg.train_cap is not None and cfg.train_cap < 1:
        raise ConfigError(f"--train-cap {cfg.train_cap}: use at least 1 normal training image")
    if cfg.workers is not None and cfg.workers < 1:
        raise ConfigError(f"--workers {cfg.workers}: use at least 1 worker process")
    if cfg.jobs_per_gpu is None or cfg.jobs_per_gpu < 1:
        raise ConfigError(f"--jobs-per-gpu {cfg.jobs_per_gpu}: use at least 1 run per GPU")


def _unique(values: list, option: str, notes: list[str]) -> list:
    """``values`` without repeats (first occurrence kept); a note says what was dropped."""
    out = list(dict.fromkeys(values))
    if len(out) < len(values):
        notes.append(f"{option} {','.join(map(str, values))}: duplicates dropped, each run is "
                     f"planned once ({option} {','.join(map(str, out))})")
    return out


def _drop_duplicate_runs(specs: list[RunSpec], skipped: list[tuple[RunSpec, str]],
                         notes: list[str]) -> tuple[list, list]:
    """The safety net behind :func:`_unique`: one entry per run id (e.g. one dataset named
    by two paths), so no run is ever computed twice in one sweep."""
    seen: set[str] = set()

    def first(items, key):
        out = []
        for item in items:
            if key(item) not in seen:
                seen.add(key(item))
                out.append(item)
        return out

    n = len(specs) + len(skipped)
    specs = first(specs, lambda s: s.run_id)
    skipped = first(skipped, lambda sr: sr[0].run_id)
    if len(specs) + len(skipped) < n:
        notes.append(f"{n - len(specs) - len(skipped)} duplicate run(s) dropped: the same run "
                     f"was planned more than once (e.g. one dataset given twice)")
    return specs, skipped


def expand(cfg: SweepConfig) -> Plan:
    """Expand a sweep into run specs (reads file lists and content hashes, builds splits)."""
    validate(cfg)
    notes: list[str] = []
    preset = effective_preset(cfg)
    methods = resolve_method_names(cfg.methods)
    overrides = parse_overrides(cfg.set, methods)
    settings = ["general", "hard"] if cfg.setting == "both" else [cfg.setting]
    unsupervised = [m for m in methods if not method_class(m).uses_labeled_anomalies]
    if cfg.shots and unsupervised:
        notes.append(f"--shots does not apply to {', '.join(unsupervised)} (no labelled "
                     f"anomalies): one run with shots 0 per cell and seed instead")
    shots_list = _unique(cfg.shots or ([10] if preset == "quick" else [1, 10]), "--shots",
                         notes)
    if cfg.seed_list:
        seeds = _unique(list(cfg.seed_list), "--seed-list", notes)
    else:
        seeds = list(range(cfg.seeds if cfg.seeds is not None else (1 if preset == "quick" else 3)))
    weights = cfg.weights or ("none" if preset == "quick" else "imagenet")
    data_root = Path(cfg.data_root).expanduser() if cfg.data_root else default_data_root()
    train_cap = cfg.train_cap

    specs: list[RunSpec] = []
    skipped: list[tuple[RunSpec, str]] = []
    for ds_name in _unique(list(cfg.datasets), "--datasets", notes):
        ds = resolve_dataset(ds_name)
        label = dataset_label(ds)
        root = ds.locate(data_root)
        subsets = dataset_subsets(ds, root, cfg.subsets)
        outliers_spec = cfg.outliers or (ds.paper_outliers if preset == "paper" else None)
        for subset in subsets:
            index = read_subset(root, subset)
            pool = _outliers(outliers_spec, data_root, subset) if outliers_spec else None
            cells: list[tuple[str, Optional[str]]] = []
            for setting in settings:
                if setting == "general":
                    cells.append(("general", None))
                    continue
                n_cls = len([c for c in index.classes if index.anomalies[c]])
                if n_cls < 2:
                    notes.append(f"{label}/{subset}: one anomaly class ({index.classes[0]}), "
                                 f"so no hard-setting runs")
                    continue
                known = known_classes_for(ds, index, cfg.known_classes)
                if not known:
                    notes.append(f"{label}/{subset}: the paper runs no hard setting here "
                                 f"(name classes with --known-classes to run it anyway)")
                cells += [("hard", k) for k in known]
            for method in methods:
                cls = method_class(method)
                params = method_params(method, preset, ds, subset, overrides)
                m_shots = shots_list if cls.uses_labeled_anomalies else [0]
                for setting, known in cells:
                    for shots in m_shots:
                        for seed in seeds:
                            split_seed = cfg.split_seed if cfg.split_seed is not None else seed
                            reason, split_hash = None, ""
                            try:
                                split = make_split(index, dataset=label, setting=setting,
                                                   shots=shots, seed=split_seed,
                                                   known_class=known, train_cap=train_cap)
                                split_hash = split.manifest_hash
                            except SplitUnavailable as exc:
                                reason = str(exc)
                            spec = RunSpec(
                                method=method, method_version=cls.version, params=params,
                                dataset=label, subset=subset,
                                subset_fingerprint=index.fingerprint, setting=setting,
                                known_class=known, shots=shots, seed=seed,
                                split_seed=split_seed, split_hash=split_hash,
                                train_cap=train_cap, weights=weights,
                                outliers=outliers_spec if pool else None,
                                outliers_fingerprint=pool.fingerprint if pool else None,
                                dataset_root=str(root),
                                outliers_root=str(pool.root) if pool else None,
                                outliers_excluded=tuple(pool.excluded) if pool else ())
                            if reason:
                                skipped.append((spec, reason))
                            else:
                                specs.append(spec)
    if not specs and not skipped:
        raise ConfigError("the sweep holds no run; check --setting, --subsets and "
                          "--known-classes")
    specs, skipped = _drop_duplicate_runs(specs, skipped, notes)
    return Plan(specs, skipped, notes, len(seeds))


def _outliers(spec: str, data_root: Path, subset: str) -> OutlierPool:
    """The outlier pool for a target subset: its own category is excluded by name."""
    if spec in list_datasets():
        root = get_dataset(spec).locate(data_root)
    else:
        root = Path(spec).expanduser()
        if not root.is_dir():
            raise ConfigError(f"--outliers {spec!r} is neither a registered dataset nor a folder")
    try:
        return outlier_pool(root, exclude=[subset])
    except LayoutError as exc:
        raise ConfigError(f"--outliers {spec!r}: {exc}") from exc
