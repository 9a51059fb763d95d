"""Builtin method plugins (installed as ``bench.methods``).

Every module in this package is imported here, so adding a method is adding a module that
decorates its class with ``@register_method``. Shared building blocks (backbone, heads,
losses, samplers, augmentation) live in ``bench.methods.common``.
"""
import importlib
import pkgutil

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _mod != "common" and not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")
