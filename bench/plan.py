"""Planning: a sweep configuration expanded into runs (methods × datasets × subsets × settings × known
classes × shots × seeds → one :class:`RunSpec` per run, each with a content-hash id).

Presets:

* ``demo`` (the default on the synthetic dataset): 64 px, each method's ``demo_params`` (a
  budget sized so that `bench run --methods all --setting hard` takes minutes on two CPU
  cores; a method that declares none gets its ``quick_params``, with a note), weights
  ``none``, one seed, 10 shots, and in the hard setting the dataset's ``demo_known_classes``
  (one per synthetic subset);
* ``quick``: the synthetic dataset, 64 px, each method's ``quick_params`` (a few dozen
  training steps), weights ``none``, one seed, 10 shots — a sweep that finishes in minutes on
  a laptop CPU;
* ``paper``: the methods' defaults (the paper's settings, methods.md), the dataset's paper
  image size, ImageNet weights, three seeds, 1 and 10 shots.

Parameter precedence: ``--set`` over the preset (per-dataset image size, quick budget) over
the method's (variant's) default. ``--set`` and ``--config`` values are coerced to the type
of the parameter (its annotation, else its default's type) and refused when they do not fit.

Outlier sources are per method (``Method.outlier_policy``), resolved per dataset in both
presets: SAOE gets the dataset's outlier-exposure data (other MVTec AD categories for
industrial data and Mastcam, LAG for medical data, the other subset for the synthetic
dataset), DRA the paper's pseudo-anomaly source (LAG on the three medical datasets, CutMix
elsewhere), the other methods none. ``--outliers NAME|PATH`` gives every method that uses
outliers that source instead, ``--outliers none`` none. A declared source that is not
prepared makes the run skipped with that reason; it never runs without it.

Planning one run never ends the sweep: a split that cannot be built is a skipped run, any
other error a failed run, each with its reason.
"""
from __future__ import annotations

import fnmatch
import types
import typing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import yaml

from .api import MAX_SHOTS, OUTLIER_POLICIES, PRECISIONS
from .protocol import Split, SplitUnavailable, make_split
from .registry import get_dataset, list_datasets, method_class, method_defaults, \
    resolve_method_names
from .datasets import images as _images
from .datasets.base import Dataset, DatasetNotPrepared, FolderDataset, default_data_root
from .datasets.layout import LayoutError, SubsetIndex, list_subsets, read_subset
from .datasets.outliers import OutlierPool, outlier_pool
from .util import content_hash

PRESETS = ("demo", "quick", "paper")
# The presets of small CPU-sized runs: 64 px, no pretrained weights, one seed, 10 shots.
SMALL_PRESETS = ("demo", "quick")
QUICK_IMG_SIZE = 64
# The ``--set`` key of the run's image size: a field of the run spec, set per method.
IMG_SIZE = "img_size"


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
    precision: str = "auto"
    dry_run: bool = False
    # where the runs are computed (bench.executors); none of these enters a run id
    executor: str = "local"
    address: Optional[str] = None
    slurm_partition: Optional[str] = None
    slurm_time: int = 60
    slurm_gpus_per_task: int = 0
    slurm_array_parallelism: Optional[int] = None
    slurm_runs_per_task: Optional[int] = None   # None: auto (SlurmExecutor.per_task)
    slurm_local: bool = False
    # Set by a grid's staged columns only (not an option): plan shots 0, i.e. train on the
    # normal images alone, for every method (the fine-tuning stage of a cross-domain run).
    normal_only: bool = False


_INTERNAL_OPTIONS = ("normal_only",)


def load_config_file(path: Path) -> dict:
    """Options from a YAML file (keys as the CLI flags, dashes or underscores)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    valid = set(SweepConfig.__dataclass_fields__) - set(_INTERNAL_OPTIONS)
    out = {}
    for k, v in raw.items():
        key = str(k).replace("-", "_")
        if key not in valid:
            raise ConfigError(f"config file {path}: unknown option {k!r}; valid: "
                              f"{', '.join(sorted(valid))}")
        if key in ("methods", "datasets", "subsets", "known_classes") and isinstance(v, str):
            v = [s.strip() for s in v.split(",") if s.strip()]
        if key in ("shots", "seed_list") and isinstance(v, (int, str)) and \
                not isinstance(v, bool):
            try:
                v = [int(s) for s in str(v).split(",")]
            except ValueError:
                raise ConfigError(f"config file {path}: option {k!r} expects comma-separated "
                                  f"integers, got {v!r}") from None
        if key == "set" and isinstance(v, dict):
            v = [f"{a}={b}" for a, b in v.items()]
        out[key] = _typed_option(path, k, key, v)
    return out


_INT_OPTIONS = ("seeds", "split_seed", "train_cap", "jobs_per_gpu", "workers", "slurm_time",
                "slurm_gpus_per_task", "slurm_array_parallelism", "slurm_runs_per_task")
_BOOL_OPTIONS = ("retry_failed", "save_models", "deterministic", "dry_run", "slurm_local")
_LIST_OPTIONS = ("methods", "datasets", "subsets", "known_classes", "shots", "seed_list", "set")


def _typed_option(path: Path, name: str, key: str, v: Any) -> Any:
    """A config-file option checked against the type of its CLI flag."""
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"config file {path}: option {name!r} expects {expected}, got {v!r}")

    if v is None:
        return None
    if key in _INT_OPTIONS:
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad("an integer")
    elif key in _BOOL_OPTIONS:
        if not isinstance(v, bool):
            raise bad("true or false")
    elif key in _LIST_OPTIONS:
        if not isinstance(v, list):
            raise bad("a list or a comma-separated string")
        if key in ("shots", "seed_list") and not all(isinstance(x, int) and
                                                     not isinstance(x, bool) for x in v):
            raise bad("integers")
        if key not in ("shots", "seed_list"):
            v = [str(x) for x in v]
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        v = str(v)  # e.g. `gpus: 0`, `name: 2024`
    elif not isinstance(v, str):
        raise bad("a string")
    return v


@dataclass(frozen=True)
class RunSpec:
    """One run. Its id hashes exactly the fields that define the result (not paths, not the
    harness version). The fields after ``decoder_version`` describe the run without entering
    its id: where to read the data, the preset and split policy that produced it, notes
    (e.g. why a method runs without outliers) and how it differs from the paper preset."""

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
    decoder_version: Optional[str] = None
    img_size: int = 0              # the side images are resized to (method.input_size chain)
    precision: str = "fp32"        # arithmetic of forward passes (bench.api.PRECISIONS)
    # Staged runs: ((run id, artefact), ...) this run starts from (the sweep starts it once
    # those exist), and the artefacts this run must keep for others (e.g. ("model.pt",)).
    # Both enter the run id only when set, so runs without stages keep their ids.
    needs: tuple = ()
    keep: tuple = ()
    dataset_root: str = field(default="", compare=False)   # where to read it (not hashed)
    outliers_root: Optional[str] = field(default=None, compare=False)
    outliers_excluded: tuple = field(default=(), compare=False)
    # The configuration id of the runs ``needs`` names (their seeds aside): part of this
    # run's configuration, so runs adapted from different sources never share a table cell.
    needs_config: str = field(default="", compare=False)
    stage: str = field(default="", compare=False)   # e.g. "adapted from weave", for tables
    preset: str = field(default="", compare=False)
    split_policy: str = field(default="", compare=False)   # "seed" or "fixed:<split seed>"
    notes: tuple = field(default=(), compare=False)
    paper_deviations: tuple = field(default=(), compare=False)
    # The split planning built (shared by the runs of one cell): it travels with the spec
    # to the worker, which checks the data against it instead of drawing it again. Not in
    # spec.json (split.json holds its manifest); None for a spec read back from a file.
    split: Optional[Split] = field(default=None, compare=False, repr=False)

    HASHED = ("method", "method_version", "params", "dataset", "subset", "subset_fingerprint",
              "setting", "known_class", "shots", "seed", "split_seed", "split_hash",
              "train_cap", "weights", "outliers", "outliers_fingerprint", "decoder_version",
              "img_size", "precision")
    HASHED_IF_SET = ("needs", "keep")
    _TUPLES = ("outliers_excluded", "notes", "paper_deviations")

    def identity(self) -> dict:
        ident = {k: getattr(self, k) for k in self.HASHED}
        ident.update({k: [list(x) if isinstance(x, tuple) else x for x in getattr(self, k)]
                      for k in self.HASHED_IF_SET if getattr(self, k)})
        return ident

    @property
    def run_id(self) -> str:
        return content_hash(self.identity())

    @property
    def config_id(self) -> str:
        return config_id_of({**self.identity(), "split_policy": self.split_policy})

    def to_dict(self) -> dict:
        d = asdict(replace(self, split=None))
        del d["split"]
        for k in self._TUPLES:
            d[k] = list(getattr(self, k))
        d["run_id"] = self.run_id
        d["config_id"] = self.config_id
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in cls._TUPLES:
            d[k] = tuple(d.get(k) or ())
        d["needs"] = tuple(tuple(x) for x in d.get("needs") or ())
        d["keep"] = tuple(d.get("keep") or ())
        return cls(**d)

    @property
    def label(self) -> str:
        kc = f"/{self.known_class}" if self.known_class else ""
        out = f" outliers={self.outliers}" if self.outliers else ""
        stage = f" from {self.needs[0][0]}" if self.needs else ""
        return (f"{self.method} {self.dataset}/{self.subset} {self.setting}{kc} "
                f"shots={self.shots} seed={self.seed}{out}{stage}")


# -- configurations: the unit of a table cell ------------------------------------------------
CONFIG_EXCLUDED = ("seed", "split_seed", "split_hash")


def split_policy_of(spec: dict) -> str:
    """``"seed"`` (the split seed is the run's seed) or ``"fixed:<S>"`` (``--split-seed S``);
    inferred from the seeds for records written before the policy was recorded."""
    policy = spec.get("split_policy")
    if policy:
        return str(policy)
    return "seed" if spec.get("split_seed") == spec.get("seed") else \
        f"fixed:{spec.get('split_seed')}"


def config_identity(spec: dict) -> dict:
    """What makes a run's configuration: every field of its run id except the seeds and the
    split, plus the split policy. Works on a ``spec.json`` of any age (missing fields are
    None, so records of an older harness form configurations of their own)."""
    ident = {k: spec.get(k) for k in RunSpec.HASHED if k not in CONFIG_EXCLUDED}
    ident["split_policy"] = split_policy_of(spec)
    # A staged run's configuration is its source's configuration (seeds aside), not the
    # source run itself, so the seeds of one cell share it.
    if spec.get("needs"):
        ident["needs"] = sorted({str(n[1]) for n in spec["needs"]})
        ident["needs_config"] = spec.get("needs_config")
    if spec.get("keep"):
        ident["keep"] = list(spec["keep"])
    return ident


def config_id_of(spec: dict) -> str:
    return content_hash(config_identity(spec), 12)


# -- --set METHOD.PARAM=VALUE ---------------------------------------------------------------
@dataclass(frozen=True)
class Override:
    pattern: str   # method name or wildcard
    param: str
    value: Any     # the YAML reading of the text
    typed: dict = field(default_factory=dict)  # method -> value coerced to its parameter type


_NONE_WORDS = ("none", "null", "~")


def param_types(cls: type) -> dict[str, Any]:
    """Type of each constructor parameter: its annotation, else the type of its default
    (None when neither says: any value is taken as written)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve: fall back to the defaults
        hints = {}
    defaults = cls.default_params()
    return {n: hints.get(n, type(defaults[n]) if defaults.get(n) is not None else None)
            for n in cls.param_names()}


def type_name(typ: Any) -> str:
    args = typing.get_args(typ)
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        parts = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or none" if type(None) in args else "")
    return {int: "an integer", float: "a number", bool: "true or false",
            str: "a string"}.get(typ, getattr(typ, "__name__", str(typ)))


def coerce_value(text: str, typ: Any) -> Any:
    """``text`` (as written after ``=``) as a value of type ``typ``; ValueError if it does
    not fit. YAML 1.1 reads ``1e-3`` as a string, so numbers are parsed here, not by YAML."""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        parsed = text
    if typ is None or typ is Any:
        return parsed
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if type(None) in args and (parsed is None or (isinstance(parsed, str) and
                                                      parsed.strip().lower() in _NONE_WORDS)):
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce_value(text, a)
            except ValueError:
                continue
        raise ValueError(text)
    if typ is bool:
        if isinstance(parsed, bool):
            return parsed
        raise ValueError(text)
    if typ is int:
        if isinstance(parsed, int) and not isinstance(parsed, bool):
            return parsed
        raise ValueError(text)
    if typ is float:
        if isinstance(parsed, bool):
            raise ValueError(text)
        if isinstance(parsed, (int, float)):
            return float(parsed)
        try:
            return float(str(parsed).strip())
        except ValueError:
            raise ValueError(text) from None
    if typ is str:
        return text.strip() if not isinstance(parsed, str) else parsed
    if isinstance(typ, type) and isinstance(parsed, typ):
        return parsed
    raise ValueError(text)


def parse_overrides(items: list[str], methods: list[str]) -> list[Override]:
    """Parse ``--set`` items; each value is coerced to the type of the parameter of every
    method it applies to (``dra.lr=1e-3`` gives the float 0.001, ``dra.epochs=ten`` is
    refused naming the expected type)."""
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
        if param == IMG_SIZE:  # a run field, not a method parameter
            try:
                size = coerce_value(raw, int)
            except ValueError:
                size = None
            if size is None or size < 1:
                raise ConfigError(f"--set {item!r}: img_size expects a positive integer "
                                  f"(pixels), got {raw!r}")
            out.append(Override(pattern, param, size, {m: size for m in targets}))
            continue
        having = [m for m in targets if param in method_class(m).param_names()]
        if not having:
            valid = sorted({p for m in targets for p in method_class(m).param_names()})
            raise ConfigError(f"--set {item!r}: no selected method matching {pattern!r} has "
                              f"a parameter {param!r}; valid: {', '.join(valid)}")
        if not any(c in pattern for c in "*?[") and len(having) < len(targets):
            raise ConfigError(f"--set {item!r}: method {pattern!r} has no parameter {param!r}")
        typed = {}
        for m in having:
            typ = param_types(method_class(m))[param]
            try:
                typed[m] = coerce_value(raw, typ)
            except ValueError:
                raise ConfigError(f"--set {item!r}: parameter {param!r} of {m} expects "
                                  f"{type_name(typ)}, got {raw!r}") from None
        out.append(Override(pattern, param, value, typed))
    return out


def method_params(method: str, preset: str, dataset: Dataset, subset: str,
                  overrides: list[Override]) -> dict:
    """Resolve one method's parameters for one dataset subset (see module docstring)."""
    cls = method_class(method)
    params = method_defaults(method)
    budget = {"demo": cls.demo_params or cls.quick_params,
              "quick": cls.quick_params}.get(preset, {})
    params.update({k: v for k, v in budget.items() if k in params})
    for o in overrides:
        if method in o.typed and o.param in params:
            params[o.param] = o.typed[method]
    return params


def run_img_size(method: str, preset: str, dataset: Dataset, subset: str,
                 overrides: list[Override]) -> int:
    """The side in pixels one method's runs resize images to, by one chain: ``--set
    METHOD.img_size=N`` > the preset (``demo``, ``quick``: 64 px; ``paper``: the dataset's paper size,
    unless the method declares a size of its own with ``dataset_img_size = False``) > the
    method's declared ``input_size``."""
    cls = method_class(method)
    size = cls.input_size
    if preset in SMALL_PRESETS:
        size = QUICK_IMG_SIZE
    elif preset == "paper" and cls.dataset_img_size:
        size = dataset.img_size_for(subset)
    for o in overrides:
        if o.param == IMG_SIZE and method in o.typed:
            size = o.typed[method]
    return int(size)


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


def dataset_subsets(ds: Dataset, root: Path, wanted: Optional[list[str]]) -> list[str]:
    present = ds.only_subsets or list_subsets(root)
    if ds.subsets:
        present = [s for s in ds.subsets if s in present] or present
    if not wanted:
        return present
    unknown = [s for s in wanted if s not in present]
    if unknown:
        raise ConfigError(f"--subsets {','.join(unknown)} not in {ds.label} "
                          f"({root}); its subsets: {', '.join(present)}")
    return [s for s in present if s in wanted]


def known_classes_for(ds: Dataset, index: SubsetIndex, wanted: Optional[list[str]],
                      preset: str = "paper") -> list[str]:
    """Hard-setting known classes of a subset: the user's (any class of the subset), else the
    demo preset's (``demo_known_classes``), else the paper's (``hard_known_classes``; an
    empty list means the paper runs no hard setting on that subset), else every non-empty
    class."""
    if wanted:
        for k in wanted:
            index.check_class(k)  # unknown names are an error listing the valid ones
        return [k for k in index.classes if k in wanted]
    if preset == "demo" and index.subset in ds.demo_known_classes:
        classes = ds.demo_known_classes[index.subset]
    elif index.subset in ds.hard_known_classes:
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
    failed: list[tuple[RunSpec, str]] = field(default_factory=list)  # planning raised


def sweep_precision(cfg: SweepConfig, notes: list[str]) -> str:
    """``--precision``: ``fp32``/``bf16`` as given; ``auto`` (default) is ``bf16`` when the
    sweep's runs go to GPUs that compute in bfloat16 (local GPUs of compute capability ≥ 8,
    Slurm tasks with GPUs), else ``fp32``. Decided once at planning, since it enters every
    run id: the same command on a CPU-only machine plans fp32 runs."""
    if cfg.precision != "auto":
        return cfg.precision
    if cfg.executor == "slurm" and cfg.slurm_gpus_per_task > 0 and not cfg.slurm_local:
        return "bf16"
    if cfg.executor == "ray":
        notes.append("--precision auto plans fp32 runs on a Ray cluster (the planner cannot "
                     "see its GPUs); pass --precision bf16 for GPU workers")
        return "fp32"
    if cfg.gpus in ("none", ""):
        return "fp32"
    return "bf16" if local_gpus_support_bf16(cfg.gpus) else "fp32"


def local_gpus_support_bf16(gpus: Optional[str]) -> bool:
    """Whether the GPUs ``--gpus`` names on this machine (None/all: every visible one) are
    there and all compute bfloat16 natively (compute capability ≥ 8: A100, H100, H200)."""
    import torch

    if not torch.cuda.is_available():
        return False
    n = torch.cuda.device_count()
    ids = range(n) if gpus in (None, "all") else [int(g) for g in gpus.split(",")
                                                  if g.strip().isdigit() and int(g) < n]
    ids = list(ids)
    return bool(ids) and all(torch.cuda.get_device_capability(i)[0] >= 8 for i in ids)


def method_precision(cls, method: str, precision: str, notes: list[str]) -> str:
    """The precision a method's runs use: the sweep's, or ``fp32`` (with a note) for a method
    that implements only fp32 (``Method.precisions``)."""
    if precision in cls.precisions:
        return precision
    note = (f"{method} runs in fp32: it implements {', '.join(cls.precisions)} only "
            f"(--precision {precision} applies to the methods that have it)")
    if note not in notes:
        notes.append(note)
    return "fp32"


def effective_preset(cfg: SweepConfig) -> str:
    if cfg.preset:
        if cfg.preset not in PRESETS:
            raise ConfigError(f"--preset {cfg.preset!r}: use one of {', '.join(PRESETS)}")
        return cfg.preset
    # The first command works offline: the synthetic dataset defaults to the demo.
    return "demo" if all(d == "synthetic" for d in cfg.datasets) else "paper"


def validate(cfg: SweepConfig) -> None:
    """Refuse options that contradict each other or the protocol, before anything is read or
    run: nothing is silently ignored or overridden (each message says what to do instead)."""
    if cfg.setting not in ("general", "hard", "both"):
        raise ConfigError(f"--setting {cfg.setting!r}: use general, hard or both")
    if cfg.precision not in ("auto", *PRECISIONS):
        raise ConfigError(f"--precision {cfg.precision!r}: use auto, {', '.join(PRECISIONS)}")
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
    if cfg.executor not in ("local", "ray", "slurm"):
        raise ConfigError(f"--executor {cfg.executor!r}: use local, ray or slurm")
    for opt, value, least in (("--slurm-time", cfg.slurm_time, 1),
                              ("--slurm-gpus-per-task", cfg.slurm_gpus_per_task, 0),
                              ("--slurm-array-parallelism", cfg.slurm_array_parallelism, 1),
                              ("--slurm-runs-per-task", cfg.slurm_runs_per_task, 1)):
        if value is not None and value < least:
            raise ConfigError(f"{opt} {value}: use at least {least}")


def _unique(values: list, option: str, notes: list[str]) -> list:
    """``values`` without repeats (first occurrence kept); a note says what was dropped."""
    out = list(dict.fromkeys(values))
    if len(out) < len(values):
        notes.append(f"{option} {','.join(map(str, values))}: duplicates dropped, each run is "
                     f"planned once ({option} {','.join(map(str, out))})")
    return out


def _drop_duplicate_runs(specs: list[RunSpec], skipped: list[tuple[RunSpec, str]],
                         notes: list[str], failed: list[tuple[RunSpec, str]] = ()
                         ) -> tuple[list, list, list]:
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

    n = len(specs) + len(skipped) + len(failed)
    specs = first(specs, lambda s: s.run_id)
    skipped = first(skipped, lambda sr: sr[0].run_id)
    failed = first(failed, lambda sr: sr[0].run_id)
    kept = len(specs) + len(skipped) + len(failed)
    if kept < n:
        notes.append(f"{n - kept} duplicate run(s) dropped: the same run "
                     f"was planned more than once (e.g. one dataset given twice)")
    return specs, skipped, failed


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
    small = preset in SMALL_PRESETS
    shots_list = _unique(cfg.shots or ([10] if small else [1, 10]), "--shots", notes)
    if cfg.seed_list:
        seeds = _unique(list(cfg.seed_list), "--seed-list", notes)
    else:
        seeds = list(range(cfg.seeds if cfg.seeds is not None else (1 if small else 3)))
    weights = cfg.weights or ("none" if small else "imagenet")
    if preset == "demo":
        undeclared = [m for m in methods if not method_class(m).demo_params]
        if undeclared:
            notes.append(f"{', '.join(undeclared)} declare(s) no demo budget (demo_params): "
                         f"the demo preset runs their quick budget (quick_params)")
    precision = sweep_precision(cfg, notes)
    data_root = Path(cfg.data_root).expanduser() if cfg.data_root else default_data_root()
    train_cap = cfg.train_cap
    outlier_sources = OutlierSources(cfg.outliers, data_root)
    split_policy = "seed" if cfg.split_seed is None else f"fixed:{cfg.split_seed}"

    specs: list[RunSpec] = []
    skipped: list[tuple[RunSpec, str]] = []
    failed: list[tuple[RunSpec, str]] = []
    splits: dict = {}  # one split per cell, shots and split seed, shared by its methods
    for ds_name in _unique(list(cfg.datasets), "--datasets", notes):
        ds = resolve_dataset(ds_name)
        label = ds.label
        root = ds.locate(data_root)
        subsets = dataset_subsets(ds, root, cfg.subsets)
        for subset in subsets:
            index = read_subset(root, subset)
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
                known = known_classes_for(ds, index, cfg.known_classes, preset)
                if not known:
                    notes.append(f"{label}/{subset}: the paper runs no hard setting here "
                                 f"(name classes with --known-classes to run it anyway)")
                cells += [("hard", k) for k in known]
            for method in methods:
                cls = method_class(method)
                params = method_params(method, preset, ds, subset, overrides)
                img_size = run_img_size(method, preset, ds, subset, overrides)
                m_precision = method_precision(cls, method, precision, notes)
                choice = outlier_sources.choose(cls, method, ds, label, subset)
                for note in choice.notes():
                    if note not in notes:
                        notes.append(note)
                deviations = paper_deviations(method, cls, preset, ds, subset, params,
                                              img_size, weights, choice.source, train_cap)
                m_shots = shots_list if cls.uses_labeled_anomalies and not cfg.normal_only \
                    else [0]
                for setting, known in cells:
                    for shots in m_shots:
                        for seed in seeds:
                            split_seed = cfg.split_seed if cfg.split_seed is not None else seed
                            spec, status, reason = _plan_run(
                                splits, index, label, setting, known, shots, split_seed,
                                train_cap,
                                dict(method=method, method_version=cls.full_version(),
                                     params=params, dataset=label, subset=subset,
                                     setting=setting, known_class=known, shots=shots,
                                     seed=seed, split_seed=split_seed, train_cap=train_cap,
                                     weights=weights, outliers=choice.source,
                                     outliers_fingerprint=choice.fingerprint,
                                     decoder_version=_images.DECODER_VERSION,
                                     img_size=img_size, precision=m_precision,
                                     dataset_root=str(root), outliers_root=choice.root,
                                     outliers_excluded=choice.excluded, preset=preset,
                                     split_policy=split_policy, notes=choice.run_notes(),
                                     paper_deviations=deviations),
                                choice.skip_reason)
                            {"todo": specs, "skipped": skipped, "failed": failed}[status] \
                                .append(spec if status == "todo" else (spec, reason))
    if not specs and not skipped and not failed:
        raise ConfigError("the sweep holds no run; check --setting, --subsets and "
                          "--known-classes")
    specs, skipped, failed = _drop_duplicate_runs(specs, skipped, notes, failed)
    return Plan(specs, skipped, notes, failed)


def _plan_run(splits: dict, index: SubsetIndex, label: str, setting: str,
              known: Optional[str], shots: int, split_seed: int, train_cap: Optional[int],
              fields: dict, skip_reason: Optional[str]) -> tuple[RunSpec, str, Optional[str]]:
    """One run's spec and its status: "todo", "skipped" (the split cannot be built, or a
    needed outlier source is missing) or "failed" (anything else went wrong while planning
    it; the reason names the error, the rest of the sweep goes on). ``splits`` caches the
    split (or the reason there is none) of each cell across methods."""
    key = (index.root, index.subset, index.fingerprint, label, setting, known, shots,
           split_seed, train_cap)
    if key not in splits:
        try:
            splits[key] = (make_split(index, dataset=label, setting=setting, shots=shots,
                                      seed=split_seed, known_class=known,
                                      train_cap=train_cap), "todo", None)
        except SplitUnavailable as exc:
            splits[key] = (None, "skipped", str(exc))
        except Exception as exc:  # a data problem of this run only: record it, plan the rest
            splits[key] = (None, "failed", f"while planning: {type(exc).__name__}: {exc}")
    split, status, reason = splits[key]
    if status == "todo" and skip_reason:
        status, reason = "skipped", skip_reason
    spec = RunSpec(subset_fingerprint=index.fingerprint,
                   split_hash=split.manifest_hash if split else "", split=split, **fields)
    return spec, status, reason


# -- outlier sources ---------------------------------------------------------------------
@dataclass
class OutlierChoice:
    """The outlier source of one method on one target subset."""

    source: Optional[str] = None           # dataset name or folder, None = no outliers
    pool: Optional[OutlierPool] = None
    skip_reason: Optional[str] = None      # the source is needed but not available
    note: Optional[str] = None             # why the method runs without outliers (run note)
    plan_note: Optional[str] = None        # the pool, described once per sweep

    @property
    def fingerprint(self) -> Optional[str]:
        return self.pool.fingerprint if self.pool else None

    @property
    def root(self) -> Optional[str]:
        return str(self.pool.root) if self.pool else None

    @property
    def excluded(self) -> tuple:
        return tuple(self.pool.excluded) if self.pool else ()

    def notes(self) -> list[str]:
        return [n for n in (self.note, self.plan_note) if n]

    def run_notes(self) -> tuple:
        return (self.note,) if self.note else ()


class OutlierSources:
    """Resolves ``Method.outlier_policy`` (or the user's ``--outliers``) per target subset;
    each pool is listed and hashed once per sweep."""

    def __init__(self, user: Optional[str], data_root: Path):
        self.user = user
        self.data_root = data_root
        self._pools: dict[tuple[str, str], tuple[Optional[OutlierPool], Optional[str]]] = {}
        self.described: set[tuple[str, str]] = set()

    def choose(self, cls: type, method: str, ds: Dataset, label: str,
               subset: str) -> OutlierChoice:
        if not cls.uses_outliers:
            return OutlierChoice()
        policy = cls.outlier_policy
        if policy not in OUTLIER_POLICIES:
            raise ConfigError(f"method {method!r} declares outlier_policy={policy!r}; use "
                              f"one of {', '.join(OUTLIER_POLICIES)}")
        if self.user == "none":
            return OutlierChoice(note=f"--outliers none: {method} on {label}/{subset} trains "
                                      f"without external outliers" if policy == "exposure"
                                 else None)
        if self.user:
            pool, reason = self._pool(self.user, subset, user=True)
            return OutlierChoice(self.user, pool, reason,
                                 plan_note=self._describe(self.user, subset, pool, label))
        source = {"none": None, "paper_pseudo": ds.paper_outliers,
                  "exposure": ds.exposure_outliers}[policy]
        if source is None:
            if policy == "exposure":
                return OutlierChoice(note=f"{method} on {label}/{subset}: no outlier-exposure "
                                          f"data is declared for this dataset, so it trains "
                                          f"without its OE term (give some with --outliers "
                                          f"NAME|PATH)")
            return OutlierChoice()
        pool, reason = self._pool(source, subset, user=False)
        if reason:
            what = ("its outlier-exposure data" if policy == "exposure"
                    else "the paper's pseudo-anomaly source")
            return OutlierChoice(source, None, f"{method} on {label}/{subset} needs {what} "
                                               f"{source!r}, which is not available: {reason}")
        return OutlierChoice(source, pool,
                             plan_note=self._describe(source, subset, pool, label))

    def _describe(self, source: str, subset: str, pool: Optional[OutlierPool],
                  label: str) -> Optional[str]:
        """A plan note naming the pool, once per (source, target subset)."""
        if pool is None or (source, f"{label}/{subset}") in self.described:
            return None
        self.described.add((source, f"{label}/{subset}"))
        return f"outliers for {label}/{subset}: {source!r}, {pool.describe()}"

    def _pool(self, spec: str, subset: str, user: bool
              ) -> tuple[Optional[OutlierPool], Optional[str]]:
        key = (spec, subset)
        if key not in self._pools:
            self._pools[key] = _outliers(spec, self.data_root, subset, user)
        return self._pools[key]


def _outliers(spec: str, data_root: Path, subset: str, user: bool
              ) -> tuple[Optional[OutlierPool], Optional[str]]:
    """The outlier pool for a target subset (its own category excluded by name), or the
    reason there is none. A source the user named that does not exist is a ConfigError."""
    try:
        if spec in list_datasets():
            root = get_dataset(spec).locate(data_root)
        else:
            root = Path(spec).expanduser()
            if not root.is_dir():
                raise ConfigError(f"--outliers {spec!r} is neither a registered dataset "
                                  f"({', '.join(list_datasets())}), 'none' nor a folder")
        return outlier_pool(root, exclude=[subset]), None
    except (DatasetNotPrepared, LayoutError) as exc:
        if user:
            raise ConfigError(f"--outliers {spec!r}: {exc}") from exc
        return None, str(exc)


def paper_deviations(method: str, cls: type, preset: str, ds: Dataset, subset: str,
                     params: dict, img_size: int, weights: str, outliers: Optional[str],
                     train_cap: Optional[int]) -> tuple:
    """How a run's configuration differs from the paper preset's for the same method and
    data (``bench report --compare-paper`` prints them beside the paper's numbers)."""
    out = []
    if preset != "paper":
        out.append(f"preset {preset}")
    paper = method_params(method, "paper", ds, subset, [])
    paper_size = run_img_size(method, "paper", ds, subset, [])
    if img_size != paper_size:
        out.append(f"{IMG_SIZE}={img_size!r} (paper preset: {paper_size!r})")
    for k in sorted(params):
        if params[k] != paper.get(k):
            out.append(f"{k}={params[k]!r} (paper preset: {paper.get(k)!r})")
    if weights != "imagenet":
        out.append(f"weights {weights} (paper preset: imagenet)")
    paper_src = {"paper_pseudo": ds.paper_outliers,
                 "exposure": ds.exposure_outliers}.get(cls.outlier_policy) \
        if cls.uses_outliers else None
    if outliers != paper_src:
        out.append(f"outliers {outliers or 'none'} (paper preset: {paper_src or 'none'})")
    if train_cap is not None:
        out.append(f"train_cap {train_cap} (paper preset: every normal image)")
    return tuple(out)
