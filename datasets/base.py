"""The dataset plugin base: what the harness knows about a named dataset.

A dataset plugin knows where its prepared copy lives under the data root (always MVTec AD
layout, see ``layout.py``), its subsets and anomaly classes, the hard-setting known classes of
the paper (Table 2), its image size and outlier source for the ``paper`` preset, its expected
counts (paper Table 5) and, when it has a converter, how to build the layout from the
official raw distribution (``prepare``).

Users' own data needs no plugin: any MVTec-layout folder is read by
:class:`FolderDataset`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Optional


class DatasetNotPrepared(FileNotFoundError):
    """The dataset is registered but not present under the data root."""


def default_data_root() -> Path:
    """``$BENCH_DATA_ROOT`` or ``./data``."""
    return Path(os.environ.get("BENCH_DATA_ROOT", "data")).expanduser()


def default_cache_dir() -> Path:
    """``$BENCH_CACHE_DIR`` or ``~/.cache/osad-bench``: decoded images, the synthetic data."""
    return Path(os.environ.get("BENCH_CACHE_DIR", "~/.cache/osad-bench")).expanduser()


class Dataset:
    """Base of dataset plugins. Class attributes describe the dataset; override
    ``prepare`` for datasets with a converter and ``locate`` for generated ones."""

    name: ClassVar[str] = ""          # set by register_dataset
    title: ClassVar[str] = ""
    source: ClassVar[str] = ""        # official source / where to obtain the raw data
    license: ClassVar[str] = ""       # licence of the images (several are non-commercial)
    folder: ClassVar[str] = ""        # folder under the data root; default: the name
    subsets: ClassVar[list[str]] = []  # empty: every sub-folder of the prepared root
    # Paper preset image size (int or {subset: int}).
    paper_img_size: ClassVar[int | dict] = 448
    # External outlier data (registered dataset names), handed to a method according to its
    # ``outlier_policy`` (bench.api): ``paper_outliers`` is DRA's pseudo-anomaly source in the
    # paper (Sec. 4.1: LAG on the three medical datasets, None = CutMix); ``exposure_outliers``
    # is the outlier-exposure data of SAOE (App. B.2: the other MVTec AD categories for
    # industrial data, LAG for medical data). The target's own category is always excluded.
    paper_outliers: ClassVar[Optional[str]] = None
    exposure_outliers: ClassVar[Optional[str]] = None
    # Hard-setting known classes used by the paper: {subset: [folder names]}; an empty list
    # means no hard-setting runs on that subset unless --known-classes names some; subsets
    # not listed run the hard setting over all of their anomaly classes.
    hard_known_classes: ClassVar[dict[str, list[str]]] = {}
    # The ``demo`` preset's known classes ({subset: [folder names]}), where they differ from
    # the above (the synthetic dataset: one per subset, so the demo runs in minutes).
    demo_known_classes: ClassVar[dict[str, list[str]]] = {}
    # Expected counts after conversion (paper Table 5):
    # {subset: {"train_good": n, "test_good": n, "anomalies": n or {class: n}}}.
    expected_counts: ClassVar[dict[str, dict]] = {}
    # The subsets a dataset is restricted to whatever its folder holds (empty: no
    # restriction); a folder given by path that is itself one subset sets it.
    only_subsets: ClassVar[list[str]] = []

    @property
    def label(self) -> str:
        """The name runs and tables show (a folder dataset's folder name, not its path)."""
        return self.name

    def root(self, data_root: Path) -> Path:
        return Path(data_root) / (self.folder or self.name)

    def is_prepared(self, data_root: Path) -> bool:
        root = self.root(data_root)
        return (root / ".prepared").is_file() or (
            not self.has_converter() and root.is_dir() and any(root.iterdir()))

    def has_converter(self) -> bool:
        return type(self).prepare is not Dataset.prepare

    def locate(self, data_root: Path) -> Path:
        """The prepared dataset root (holding one folder per subset), or a clear error."""
        root = self.root(data_root)
        if not self.is_prepared(data_root):
            how = (f"run `bench data prepare {self.name} --raw PATH --data-root {data_root}`"
                   if self.has_converter() else
                   "place it there in MVTec AD layout")
            raise DatasetNotPrepared(
                f"dataset {self.name!r} is not prepared under {root}: {how} "
                f"(`bench data info {self.name}` says where to get it), or pass --data-root")
        return root

    def img_size_for(self, subset: str) -> int:
        size = self.paper_img_size
        return int(size.get(subset, size.get("*", 448))) if isinstance(size, dict) else int(size)

    def prepare(self, raw: Path, out: Path, **options) -> None:
        """Convert the official raw distribution at ``raw`` into MVTec layout at ``out``."""
        raise NotImplementedError(f"dataset {self.name!r} has no converter")

    def info(self) -> str:
        lines = [f"{self.name}: {self.title}", f"  source:  {self.source}",
                 f"  licence: {self.license}"]
        if self.paper_outliers:
            lines.append(f"  paper preset outlier source: {self.paper_outliers}")
        if self.exposure_outliers:
            lines.append(f"  outlier-exposure data (SAOE): {self.exposure_outliers}")
        return "\n".join(lines)


class FolderDataset(Dataset):
    """Any folder in MVTec AD layout given by path: ``root`` holds subset folders, or is
    itself one subset (it then has ``train/`` and ``test/``)."""

    def __init__(self, path: Path | str):
        path = Path(path).expanduser().resolve()
        if not path.is_dir():
            raise FileNotFoundError(f"dataset folder {path} does not exist")
        if (path / "train").is_dir() or (path / "test").is_dir():
            self._root, self._only = path.parent, [path.name]
        else:
            self._root, self._only = path, []
        self.name = str(path)
        self.title = f"MVTec-layout folder {path}"

    def root(self, data_root: Path) -> Path:
        return self._root

    def is_prepared(self, data_root: Path) -> bool:
        return True

    @property
    def label(self) -> str:
        return Path(self.name).name

    @property
    def only_subsets(self) -> list[str]:
        return self._only
