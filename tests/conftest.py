"""Shared fixtures. Every test keeps the user's caches and data untouched: the cache folder
and data root point into the test's temporary folder."""
import pytest

from bench.testing import write_toy_layout


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("BENCH_DATA_ROOT", str(tmp_path_factory.mktemp("data")))


@pytest.fixture
def toy_root(tmp_path):
    """A tiny two-subset MVTec-layout dataset (4 anomaly classes of 5 images each)."""
    return write_toy_layout(tmp_path / "toy", n_per_class=5)
