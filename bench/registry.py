"""Method and dataset registries (torchvision-style): a decorator that refuses duplicate names,
wildcard listing, and discovery of third-party plugins through the entry-point groups
``bench.methods`` and ``bench.datasets``.

A method is only ever constructed through :func:`create_method`, so the registered name,
its variant defaults and the parameter check happen in one place.
"""
from __future__ import annotations

import fnmatch
import importlib
import inspect
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Optional

from .api import Method

# The paper's eight methods, in the column order of its tables; `--methods all` means these.
PAPER_METHODS = ["kdad", "devnet", "flos", "saoe", "mlep", "deepsad", "minns", "dra"]
# Methods published after the paper; `--methods recent` means these (those installed, with
# every registered ``anomalib:*`` adapter) together with DRA.
RECENT_METHODS = ["ahl", "bgad", "prenet"]
# Names of the adapter of the optional extra [anomalib]: registered only where it is installed,
# so docs/methods.md (which must not depend on an install) leaves them to docs/recent_methods.md.
OPTIONAL_METHOD_PATTERN = "anomalib:*"


class RegistryError(ValueError):
    """Unknown or duplicate name, or a plugin that fails to load."""


@dataclass(frozen=True)
class MethodEntry:
    name: str
    cls: type
    defaults: dict = field(default_factory=dict)  # parameter overrides of a registered variant
    variant_of: Optional[str] = None


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    cls: type


_METHODS: dict[str, MethodEntry] = {}
_DATASETS: dict[str, DatasetEntry] = {}
_loaded = {"methods": False, "datasets": False}


def register_method(name: str, *, defaults: Optional[dict] = None,
                    variant_of: Optional[str] = None) -> Callable[[type], type]:
    """Class decorator registering a :class:`Method` subclass under ``name``.

    ``defaults`` turns a registration into a variant (e.g. ``dra1a`` = DRA with one head):
    the same class, other default parameters. Raises on a duplicate name."""
    if not name or name != name.lower() or any(c in name for c in " /,*?"):
        raise RegistryError(f"method name {name!r} must be lowercase without spaces, '/', ',' "
                            f"or wildcards")

    def decorator(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise RegistryError(f"{cls!r} registered as method {name!r} is not a bench.Method")
        if name in _METHODS:
            raise RegistryError(f"method {name!r} is already registered "
                                f"(by {_METHODS[name].cls.__module__}.{_METHODS[name].cls.__name__})")
        unknown = set(defaults or {}) - set(cls.param_names())
        if unknown:
            raise RegistryError(f"variant {name!r} sets unknown parameters {sorted(unknown)} "
                                f"of {cls.__name__}")
        if not cls.name:
            cls.name = name
        _METHODS[name] = MethodEntry(name, cls, dict(defaults or {}), variant_of)
        return cls

    return decorator


def register_dataset(name: str) -> Callable[[type], type]:
    """Class decorator registering a dataset plugin (a ``bench.datasets.base.Dataset``)."""
    if not name or name != name.lower() or any(c in name for c in " /,*?"):
        raise RegistryError(f"dataset name {name!r} must be lowercase without spaces, '/', ',' "
                            f"or wildcards")

    def decorator(cls: type) -> type:
        if name in _DATASETS:
            raise RegistryError(f"dataset {name!r} is already registered")
        cls.name = name
        _DATASETS[name] = DatasetEntry(name, cls)
        return cls

    return decorator


def _load(kind: str) -> None:
    """Import the builtin plugins, then every entry point of the group ``bench.<kind>``."""
    if _loaded[kind]:
        return
    _loaded[kind] = True
    importlib.import_module(f"bench.{kind}")
    table = _METHODS if kind == "methods" else _DATASETS
    for ep in entry_points(group=f"bench.{kind}"):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must be named, not silently ignored
            raise RegistryError(f"plugin entry point {ep.name!r} = {ep.value!r} in group "
                                f"'bench.{kind}' failed to load: {exc!r}. Fix or uninstall "
                                f"the package that provides it.") from exc
        # An entry point may name a module (that registers on import) or a class.
        if isinstance(obj, type) and not any(e.cls is obj for e in table.values()):
            if ep.name in table:
                raise RegistryError(f"plugin entry point {ep.name!r} clashes with an "
                                    f"already registered {kind[:-1]}")
            (register_method if kind == "methods" else register_dataset)(ep.name)(obj)


def _match(names: list[str], pattern: str) -> list[str]:
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


# -- methods -----------------------------------------------------------------------------------
def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching a shell-style wildcard, sorted."""
    _load("methods")
    return sorted(_match(list(_METHODS), pattern))


def get_method_entry(name: str) -> MethodEntry:
    _load("methods")
    if name not in _METHODS:
        close = fnmatch.filter(_METHODS, f"*{name[:3]}*") if name else []
        hint = f" Did you mean {', '.join(sorted(close))}?" if close else ""
        raise RegistryError(f"unknown method {name!r}.{hint} Registered: "
                            f"{', '.join(sorted(_METHODS))} (see `bench list methods`)")
    return _METHODS[name]


def method_class(name: str) -> type:
    return get_method_entry(name).cls


def method_defaults(name: str) -> dict[str, Any]:
    """Default parameters of a registered name (class defaults + variant overrides)."""
    entry = get_method_entry(name)
    return {**entry.cls.default_params(), **entry.defaults}


def create_method(name: str, **params: Any) -> Method:
    """Construct a registered method; ``params`` override its (variant) defaults."""
    entry = get_method_entry(name)
    unknown = set(params) - set(entry.cls.param_names())
    if unknown:
        raise RegistryError(f"method {name!r} has no parameter(s) {sorted(unknown)}; valid: "
                            f"{', '.join(entry.cls.param_names())}")
    obj = entry.cls(**{**entry.defaults, **params})
    obj.name = name  # variants share a class; the instance knows its registered name
    return obj


def resolve_method_names(spec: str | list[str]) -> list[str]:
    """Expand ``all``, names and wildcards (comma-separated) into registered names.

    ``all`` = the paper's eight methods; ``recent`` = :data:`RECENT_METHODS` and the registered
    ``anomalib:*`` adapters, with DRA. A name or pattern that matches nothing is an error."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    registered = list_methods()
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item == "all":
            # The paper's eight; any not in this install are reported by the CLI
            # (missing_paper_methods) rather than failing the whole sweep.
            found = [m for m in PAPER_METHODS if m in registered]
        elif item == "recent":
            found = [m for m in ["dra", *RECENT_METHODS] if m in registered] + \
                _match(registered, OPTIONAL_METHOD_PATTERN)
        elif any(c in item for c in "*?["):
            found = _match(registered, item)
            if not found:
                raise RegistryError(f"--methods pattern {item!r} matches no registered method "
                                    f"(registered: {', '.join(registered)})")
        else:
            get_method_entry(item)
            found = [item]
        out += [f for f in found if f not in out]
    if not out:
        raise RegistryError("no method selected")
    return out


def reference_table(methods: list[tuple[str, type]]) -> str:
    """A Markdown table of the cards (paper, venue, upstream code, licence) of the given
    (label, method class) pairs: docs/recent_methods.md holds it, checked by its test."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = ["| method | paper | venue | upstream code | licence |", "|---|---|---|---|---|"]
    for label, cls in methods:
        c = cls.card
        rows.append(f"| `{label}` | {cell(c.paper)} | {cell(c.venue)} | "
                    f"{cell(c.upstream)} | {cell(c.upstream_license)} |")
    return "\n".join(rows) + "\n"


def missing_paper_methods() -> list[str]:
    """The paper's methods that no installed plugin provides."""
    registered = list_methods()
    return [m for m in PAPER_METHODS if m not in registered]


# -- datasets ----------------------------------------------------------------------------------
def list_datasets(pattern: str = "*") -> list[str]:
    _load("datasets")
    return sorted(_match(list(_DATASETS), pattern))


def get_dataset(name: str, *, folders_ok: bool = True):
    """An instance of the registered dataset plugin ``name``. ``folders_ok``: the caller
    also takes a folder path, so the error says so (not where only names work)."""
    _load("datasets")
    if name not in _DATASETS:
        hint = ("; a folder in MVTec AD layout can be given by its path instead"
                if folders_ok else "")
        raise RegistryError(f"unknown dataset {name!r}. Registered: "
                            f"{', '.join(sorted(_DATASETS))} (see `bench list datasets`)"
                            f"{hint}")
    return _DATASETS[name].cls()


# -- method cards → docs/methods.md --------------------------------------------------------------
def method_cards_markdown() -> str:
    """``docs/methods.md``: one section per registered method, written from its
    :class:`~bench.api.MethodCard` (the one home of a method's provenance) and its declared
    properties; variants are listed under the method they vary. A test checks that the
    committed file equals this text (regenerate with ``python -m bench.registry``)."""
    optional = set(_match(list_methods(), OPTIONAL_METHOD_PATTERN))
    entries = [e for e in map(get_method_entry, list_methods())
               if e.cls.__module__.startswith("bench.methods.")  # builtins, not plugins
               and e.name not in optional]  # the same file with or without optional extras
    variants: dict[str, list[MethodEntry]] = {}
    for e in entries:
        if e.variant_of:
            variants.setdefault(e.variant_of, []).append(e)
    lines = ["# Methods", "",
             "Generated from each method's `MethodCard` and declared properties by "
             "`bench.registry.method_cards_markdown()`; edit the cards, then run "
             "`python -m bench.registry > docs/methods.md`. The `anomalib:*` adapter (optional "
             "extra `[anomalib]`) is in [recent_methods.md](recent_methods.md).", "",
             "| method | venue | input size | labelled anomalies | outliers | variants |",
             "|---|---|---|---|---|---|"]
    for e in entries:
        if e.variant_of:
            continue
        c = e.cls
        lines.append(f"| [`{e.name}`](#{e.name}) | {c.card.venue} | {c.input_size} | "
                     f"{'yes' if c.uses_labeled_anomalies else 'no'} | "
                     f"{c.outlier_policy if c.uses_outliers else '-'} | "
                     f"{', '.join(v.name for v in variants.get(e.name, [])) or '-'} |")
    for e in entries:
        if e.variant_of:
            continue
        c, card = e.cls, e.cls.card
        lines += ["", f"## {e.name}", "", f"**Paper:** {card.paper}"
                  + (f" ({card.venue})" if card.venue else "") + "  ",
                  f"**Upstream code:** {card.upstream or 'none'}  ",
                  f"**Upstream licence:** {card.upstream_license or 'not stated'}  ",
                  f"**Class:** `{c.__module__}.{c.__name__}`, version {c.full_version()}, "
                  f"input size {c.input_size} px"
                  + ("" if c.dataset_img_size else " (also under the paper preset)") + "  ",
                  f"**Resources (hint):** {c.resources.gpu_fraction:g} GPU, {c.resources.cpus} "
                  f"CPU cores, {c.resources.memory_gb:g} GB  ",
                  f"**Test budget:** `{c.test_params()}`; **quick preset:** "
                  f"`{dict(c.quick_params)}`; **demo preset:** "
                  f"`{dict(c.demo_params or c.quick_params)}`", "", card.notes]
        for v in variants.get(e.name, []):
            lines += ["", f"- `{v.name}`: `{e.name}` with `{v.defaults}`"]
        module_doc = inspect.getdoc(sys.modules[c.__module__]) or ""
        if module_doc:  # the method's technical description and its [recon] choices
            lines += ["", "<details><summary>Implementation notes (module docstring)"
                          "</summary>", "", "```text", module_doc, "```", "", "</details>"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # run as a script this module is a copy; use the real registry
    from bench.registry import method_cards_markdown as _cards

    print(_cards(), end="")
