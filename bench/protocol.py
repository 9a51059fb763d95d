"""Split construction for the paper's two protocols (datasets.md §2, "Recommended harness
protocol": faithful but deterministic).

* General setting: ``S = shuffle(sorted anomaly pool, seed)``; the labelled anomalies are
  ``S[:shots]``; the test anomalies are ``S[MAX_SHOTS:]`` for every shot count ≤ MAX_SHOTS, so
  1-shot and 10-shot runs share one test set and the 1-shot anomaly is the first of the ten.
* Hard setting: ``S = shuffle(sorted files of the known class, seed)``; labelled anomalies
  ``S[:shots]``; the test anomalies are every file of every other class. The rest of the
  known class, ``S[shots:]``, is out of the test set (as in the paper) and is the *seen-class
  check set*: scored beside the test set and compared with the same test normals, it gives
  the hard-setting ``auroc_seen`` (does the method find the class it was shown?) without
  touching the hard-setting AUC.
* Content twins: a test anomaly whose bytes equal a file kept out of the test set (general:
  one of the ``MAX_SHOTS`` reserved anomalies; hard: any file of the known class) is removed
  from the test set and listed in the manifest (``test_twins_removed``). Mastcam has five
  frames in two class folders each (datasets.md §1.6); the released code leaves the copy in
  the test set, which leaks the labelled answer. Removing the twins of the whole reserved
  set, not only of the drawn shots, keeps one test set for 1 and 10 shots.

A split is data: :meth:`Split.manifest` lists every file with its content hash, and its hash
is part of the run id. Invariants are asserted, not hoped for.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .api import MAX_SHOTS, SplitInfo
from .datasets.layout import SubsetIndex
from .util import canonical_json, content_hash

SETTINGS = ("general", "hard")


class SplitUnavailable(ValueError):
    """The requested split cannot be built from this data (too few images); the run is
    recorded as skipped with this message as its reason."""


@dataclass
class Split:
    dataset: str
    subset: str
    setting: str
    known_class: Optional[str]
    shots: int
    split_seed: int
    train_cap: Optional[int]
    train_normal: list[str]
    train_anomalies: list[str]
    train_anomaly_classes: list[str]
    test: list[str]
    test_labels: list[int]          # 0 normal, 1 anomaly
    test_classes: list[str]         # "good" or the anomaly class
    test_seen: list[bool]           # anomaly of a class among the labelled ones
    hashes: dict[str, str] = field(repr=False, default_factory=dict)
    # (removed test file, the file kept out of the test set that it duplicates)
    twins_removed: list[tuple[str, str]] = field(default_factory=list)
    # Hard setting: the known class's anomalies not drawn as labelled (never in ``test``).
    seen_check: list[str] = field(default_factory=list)

    def manifest(self) -> dict:
        """Everything that defines the split, with content hashes (JSON-serialisable)."""
        h = self.hashes
        out = {
            "dataset": self.dataset, "subset": self.subset, "setting": self.setting,
            "known_class": self.known_class, "shots": self.shots,
            "split_seed": self.split_seed, "train_cap": self.train_cap,
            "max_shots": MAX_SHOTS,
            "train_normal": [[p, h.get(p, "")] for p in self.train_normal],
            "train_anomalies": [[p, c, h.get(p, "")] for p, c in
                                zip(self.train_anomalies, self.train_anomaly_classes)],
            "test": [[p, y, c, s, h.get(p, "")] for p, y, c, s in
                     zip(self.test, self.test_labels, self.test_classes, self.test_seen)],
            "test_twins_removed": [[p, twin, h.get(p, "")] for p, twin in self.twins_removed],
        }
        if self.setting == "hard":
            out["seen_check"] = [[p, h.get(p, "")] for p in self.seen_check]
        return out

    def manifest_json(self) -> str:
        return canonical_json(self.manifest())

    @property
    def manifest_hash(self) -> str:
        return content_hash(self.manifest_json())

    def info(self, has_outliers: bool) -> SplitInfo:
        return SplitInfo(self.dataset, self.subset, self.setting, self.known_class, self.shots,
                         len(self.train_normal), len(self.train_anomalies), has_outliers)


def _shuffled(items: list[str], seed: int) -> list[str]:
    order = np.random.RandomState(seed).permutation(len(items))
    return [items[i] for i in order]


def make_split(index: SubsetIndex, *, dataset: str, setting: str, shots: int, seed: int,
               known_class: Optional[str] = None, train_cap: Optional[int] = None) -> Split:
    """Build the split of one run. ``seed`` is the split seed. ``train_cap`` keeps a seeded
    subset of that many normal training images (quick runs on big datasets)."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; use one of {', '.join(SETTINGS)}")
    if shots < 0:
        raise ValueError(f"shots must be >= 0, got {shots}")
    classes = index.classes
    train_normal = list(index.train_good)
    if train_cap is not None:
        if train_cap < 1:
            raise ValueError(f"train_cap must be >= 1, got {train_cap}")
        if train_cap < len(train_normal):
            train_normal = sorted(_shuffled(train_normal, seed + 7919)[:train_cap])

    if setting == "general":
        if known_class is not None:
            raise ValueError("the general setting takes no known class")
        pool = [p for c in classes for p in index.anomalies[c]]  # sorted: class, then name
        cls_of = {p: c for c in classes for p in index.anomalies[c]}
        shuffled = _shuffled(pool, seed)
        if shots > len(shuffled):
            raise SplitUnavailable(f"{index.subset}: {shots} shots asked but the anomaly pool "
                                   f"has only {len(shuffled)} images")
        train_anom = shuffled[:shots]
        kept_out = shuffled[:max(MAX_SHOTS, shots)]
        test_anom = shuffled[max(MAX_SHOTS, shots):]
        seen_classes = {cls_of[p] for p in train_anom}
    else:
        if known_class is None:
            raise ValueError("the hard setting needs a known class")
        index.check_class(known_class)
        if len([c for c in classes if index.anomalies[c]]) < 2:
            raise SplitUnavailable(f"{index.subset}: the hard setting needs at least two "
                                   f"anomaly classes, found {', '.join(classes)}")
        known = _shuffled(list(index.anomalies[known_class]), seed)
        if shots > len(known):
            raise SplitUnavailable(f"{index.subset}: known class {known_class!r} has "
                                   f"{len(known)} images, fewer than the {shots} shots asked")
        train_anom = known[:shots]
        kept_out = known  # the whole known class is out of the test set
        test_anom = [p for c in classes if c != known_class for p in index.anomalies[c]]
        cls_of = {p: c for c in classes for p in index.anomalies[c]}
        seen_classes = set()  # nothing in a hard-setting test set is of the known class
    check = sorted(known[shots:]) if setting == "hard" else []
    test_anom, twins = _drop_twins(index, test_anom, kept_out)
    if not test_anom:
        raise SplitUnavailable(f"{index.subset}: no anomaly is left for the test set "
                               f"({setting} setting, {shots} shots); the AUC is undefined")

    test = list(index.test_good) + sorted(test_anom)
    labels = [0] * len(index.test_good) + [1] * len(test_anom)
    tcls = ["good"] * len(index.test_good) + [cls_of[p] for p in sorted(test_anom)]
    seen = [False] * len(index.test_good) + [cls_of[p] in seen_classes for p in sorted(test_anom)]

    _check_content_overlap(index, train_normal + train_anom, test + check)
    split = Split(dataset, index.subset, setting, known_class, shots, seed, train_cap,
                  train_normal, train_anom, [cls_of[p] for p in train_anom], test, labels,
                  tcls, seen, hashes=index.hashes, twins_removed=twins, seen_check=check)
    check_split(split)
    return split


def _drop_twins(index: SubsetIndex, test_anom: list[str], kept_out: list[str]
                ) -> tuple[list[str], list[tuple[str, str]]]:
    """Remove from ``test_anom`` every file whose content equals a file of ``kept_out``
    (the same frame filed under two classes); returns (kept, [(removed, its twin)])."""
    h = index.hashes
    out_by_hash: dict[str, str] = {}
    for p in sorted(kept_out):
        out_by_hash.setdefault(h[p], p)
    kept, twins = [], []
    for p in test_anom:
        if h[p] in out_by_hash:
            twins.append((p, out_by_hash[h[p]]))
        else:
            kept.append(p)
    return kept, sorted(twins)


def _check_content_overlap(index: SubsetIndex, train: list[str], test: list[str]) -> None:
    """The same image bytes in train and test (e.g. Mastcam's multi-label copies, or a
    conversion collision) would leak the answer; refuse such a split."""
    h = index.hashes
    train_hashes = {h[p]: p for p in train}
    clashes = [(train_hashes[h[p]], p) for p in test if h[p] in train_hashes]
    if clashes:
        shown = "; ".join(f"{a} == {b}" for a, b in clashes[:5])
        raise ValueError(f"{index.subset}: {len(clashes)} test image(s) have the same content "
                         f"as a training image ({shown}); remove the duplicates from the "
                         f"dataset (see `bench data check`)")


def check_split(split: Split) -> None:
    """Assert the protocol's invariants; a violation is a bug, never a user error."""
    train = set(split.train_normal) | set(split.train_anomalies)
    overlap = train & set(split.test)
    assert not overlap, f"train and test share files: {sorted(overlap)[:5]}"
    assert len(set(split.test)) == len(split.test), "duplicate file in the test set"
    if split.setting == "hard":
        assert split.known_class not in split.test_classes, (
            f"known class {split.known_class!r} appears in the hard-setting test set")
        assert all(c == split.known_class for c in split.train_anomaly_classes)
        assert not set(split.seen_check) & (train | set(split.test)), (
            "the seen-class check set overlaps the training or test set")
    else:
        assert not split.seen_check, "only the hard setting has a seen-class check set"
    assert 0 in split.test_labels and 1 in split.test_labels, "test set needs both labels"
    assert len(split.train_anomalies) == split.shots
