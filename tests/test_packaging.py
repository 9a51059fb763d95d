"""Packaging: every package folder is listed in pyproject.toml (the list is explicit because
methods/ and datasets/ install under bench.*), and nothing installs as top-level
`methods` or `datasets`."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapping = {"bench": "bench", "methods": "bench.methods", "datasets": "bench.datasets"}
    found = set()
    for top, pkg in mapping.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((pkg,) + rel))
    assert found == listed, f"pyproject packages differ: missing {found - listed}, extra {listed - found}"
    assert not any(p.split(".")[0] in ("methods", "datasets") for p in listed)


def test_license_and_paper_tables_shipped():
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    import bench
    data = Path(bench.__file__).parent / "data"
    assert (data / "paper_auc.csv").read_text().startswith("table,setting,dataset")
