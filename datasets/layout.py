"""Reader for any folder in MVTec AD layout, with the checks of datasets.md §4.

Layout::

    <dataset root>/<subset>/train/good/          normal training images
    <dataset root>/<subset>/test/good/           normal test images
    <dataset root>/<subset>/test/<class>/        anomalies, one folder per anomaly class
    <dataset root>/<subset>/ground_truth/<class>/ optional masks (never read as images)

File lists are sorted (class folder, then file name) so nothing depends on the file system's
listing order. Paths in an index are relative to the dataset root, with '/' separators.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..util import atomic_write
from .images import is_image_file


class LayoutError(ValueError):
    """The folder is not a usable MVTec-layout dataset; the message names the path."""


def _images_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p)),
                  key=lambda p: p.name)


def _is_mask_name(name: str) -> bool:
    stem = name.rsplit(".", 1)[0].lower()
    return stem.endswith("_mask") or stem.endswith("_label")


def list_subsets(dataset_root: Path) -> list[str]:
    """Sub-folders of ``dataset_root`` that look like subsets (hold ``train`` or ``test``)."""
    dataset_root = Path(dataset_root)
    if not dataset_root.is_dir():
        raise LayoutError(f"dataset folder {dataset_root} does not exist")
    subs = sorted(p.name for p in dataset_root.iterdir()
                  if p.is_dir() and not p.name.startswith(".")
                  and ((p / "train").is_dir() or (p / "test").is_dir()))
    if not subs:
        present = sorted(p.name for p in dataset_root.iterdir() if not p.name.startswith("."))
        raise LayoutError(f"{dataset_root} holds no subset folder with train/ and test/ "
                          f"(MVTec AD layout); it contains: {', '.join(present) or 'nothing'}")
    return subs


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _HashCache:
    """Content hashes keyed by (path, size, mtime, inode, ctime), kept in a JSON file beside
    the data so a dataset is hashed once, not at every run. Inode and ctime catch a file
    replaced in place with its size and mtime kept (``rsync -a``, ``tar``, ``cp -p``): the
    replacement is a new inode, and restoring an mtime updates the ctime."""

    def __init__(self, root: Path):
        self.file = root / ".bench_hashes.json"
        try:
            self.table = json.loads(self.file.read_text()) if self.file.is_file() else {}
        except (OSError, ValueError):
            self.table = {}
        self.dirty = False

    def get(self, root: Path, rel: str) -> str:
        p = root / rel
        st = p.stat()
        key = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"
        hit = self.table.get(rel)
        if hit and hit[0] == key:
            return hit[1]
        digest = file_sha256(p)
        self.table[rel] = [key, digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            atomic_write(self.file, json.dumps(self.table, sort_keys=True))
        except OSError:
            pass  # read-only data folder: hashes are recomputed next time, nothing is lost


@dataclass
class SubsetIndex:
    """Sorted file lists of one subset. Paths are relative to ``root`` (the dataset root)."""

    root: Path
    subset: str
    train_good: list[str]
    test_good: list[str]
    anomalies: dict[str, list[str]]               # class folder -> sorted relative paths
    masks: dict[str, str] = field(default_factory=dict)  # anomaly path -> mask path

    @property
    def classes(self) -> list[str]:
        return sorted(self.anomalies)

    @property
    def all_files(self) -> list[str]:
        out = list(self.train_good) + list(self.test_good)
        for c in self.classes:
            out += self.anomalies[c]
        return out

    @cached_property
    def hashes(self) -> dict[str, str]:
        """sha256 of every image file (cached on disk by size, mtime, inode and ctime)."""
        cache = _HashCache(self.root)
        out = {rel: cache.get(self.root, rel) for rel in self.all_files}
        cache.save()
        return out

    @cached_property
    def fingerprint(self) -> str:
        """Content fingerprint of the subset: ``<n files>-<sha256 prefix>`` over the sorted
        (relative path, content hash) pairs."""
        return content_fingerprint(sorted(self.hashes.items()))

    def check_class(self, known_class: str) -> None:
        """Raise a clear error if ``known_class`` is not an anomaly class of this subset."""
        if known_class in self.anomalies:
            if not self.anomalies[known_class]:
                raise LayoutError(f"known class {known_class!r} of "
                                  f"{self.root / self.subset} has no images")
            return
        if known_class == "good":
            raise LayoutError("'good' is the normal class and cannot be the known anomaly "
                              "class of the hard setting")
        lower = {c.lower(): c for c in self.classes}
        close = difflib.get_close_matches(known_class, self.classes, n=2, cutoff=0.4)
        close += [c for low, c in lower.items()
                  if (low.startswith(known_class.lower()[:4]) and c not in close)]
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise LayoutError(f"unknown known class {known_class!r} for subset {self.subset!r} "
                          f"({self.root / self.subset / 'test'}).{hint} Valid classes: "
                          f"{', '.join(self.classes)}")


def read_subset(dataset_root: Path, subset: str, *, allow_empty_classes: bool = True
                ) -> SubsetIndex:
    """Index ``dataset_root/subset`` (MVTec AD layout), failing with the offending path."""
    dataset_root = Path(dataset_root)
    base = dataset_root / subset
    if not base.is_dir():
        present = (sorted(p.name for p in dataset_root.iterdir() if p.is_dir()
                          and not p.name.startswith("."))
                   if dataset_root.is_dir() else [])
        close = difflib.get_close_matches(subset, present, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise LayoutError(f"subset folder {base} does not exist.{hint} Subsets present: "
                          f"{', '.join(present) or 'none'}")

    def rel(p: Path) -> str:
        return p.relative_to(dataset_root).as_posix()

    train_dir, test_dir = base / "train", base / "test"
    for d, what in ((train_dir / "good", "normal training"), (test_dir / "good", "normal test")):
        if not d.is_dir():
            raise LayoutError(f"missing folder {d} (the {what} images of MVTec AD layout)")
    extra_train = sorted(p.name for p in train_dir.iterdir()
                         if p.is_dir() and p.name != "good" and not p.name.startswith("."))
    if extra_train:
        raise LayoutError(f"{train_dir} holds folders other than good/ ({', '.join(extra_train)});"
                          f" in MVTec AD layout anomalies live under {test_dir}/<class>/")
    train_good = [rel(p) for p in _images_in(train_dir / "good")]
    test_good = [rel(p) for p in _images_in(test_dir / "good")]
    if not train_good:
        raise LayoutError(f"no normal training images under {train_dir / 'good'}")
    if not test_good:
        raise LayoutError(f"no normal test images under {test_dir / 'good'}")

    class_dirs = sorted(p for p in test_dir.iterdir()
                        if p.is_dir() and p.name != "good" and not p.name.startswith("."))
    if not class_dirs:
        raise LayoutError(f"no anomaly class folder under {test_dir} (only good/); an "
                          f"anomaly detection benchmark needs test/<class>/ folders")
    if any(p.name == "all" for p in class_dirs):
        raise LayoutError(f"{test_dir / 'all'} looks like Mastcam's test_novel/all folder of "
                          f"duplicated anomalies; remove it (its files also sit in the class "
                          f"folders)")
    anomalies: dict[str, list[str]] = {}
    for d in class_dirs:
        files = [p for p in _images_in(d) if not _is_mask_name(p.name)]
        if not files and not allow_empty_classes:
            raise LayoutError(f"anomaly class folder {d} holds no images")
        anomalies[d.name] = [rel(p) for p in files]
    if not any(anomalies.values()):
        raise LayoutError(f"the anomaly class folders under {test_dir} hold no images")

    masks: dict[str, str] = {}
    gt = base / "ground_truth"
    if gt.is_dir():
        for cls, files in anomalies.items():
            mdir = gt / cls
            if not mdir.is_dir():
                continue
            by_stem = {p.name.rsplit(".", 1)[0]: p for p in mdir.iterdir() if p.is_file()}
            for f in files:
                stem = Path(f).name.rsplit(".", 1)[0]
                m = by_stem.get(f"{stem}_mask") or by_stem.get(stem)
                if m is not None:
                    masks[f] = rel(m)
    return SubsetIndex(dataset_root, subset, train_good, test_good, anomalies, masks)


def content_fingerprint(pairs: list[tuple[str, str]]) -> str:
    """``<n files>-<sha256 prefix>`` over (relative path, content hash) pairs, in order."""
    h = hashlib.sha256()
    for rel_path, digest in pairs:
        h.update(f"{rel_path}\0{digest}\n".encode())
    return f"{len(pairs)}-{h.hexdigest()[:16]}"


def dataset_fingerprint(indexes: list[SubsetIndex]) -> str:
    """Fingerprint of a whole dataset (all its subsets): file count + content hash."""
    return content_fingerprint([pair for idx in sorted(indexes, key=lambda i: i.subset)
                                for pair in sorted(idx.hashes.items())])


def find_duplicates(index: SubsetIndex) -> dict[str, list[str]]:
    """Files sharing identical content: {hash: [paths]} for hashes seen more than once."""
    seen: dict[str, list[str]] = {}
    for rel_path, digest in index.hashes.items():
        seen.setdefault(digest, []).append(rel_path)
    return {k: v for k, v in seen.items() if len(v) > 1}
