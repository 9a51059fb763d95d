"""Datasets (installed as ``bench.datasets``): the MVTec-layout reader (``layout``), image
decoding (``images``), the decoded-image cache (``cache``), the plugin base (``base``) and one
module per registered dataset in ``catalog`` (imported here so each registers itself)."""
import importlib
import pkgutil

from . import catalog as _catalog

for _mod in sorted(m.name for m in pkgutil.iter_modules(_catalog.__path__)):
    if not _mod.startswith("_"):
        importlib.import_module(f"{_catalog.__name__}.{_mod}")
