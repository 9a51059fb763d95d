"""Split invariants of datasets.md §2 "Recommended harness protocol"."""
import json
import shutil

import pytest

from bench.api import MAX_SHOTS
from bench.datasets.layout import LayoutError, read_subset
from bench.protocol import SplitUnavailable, make_split
from bench.testing import write_toy_layout


def _split(index, **kw):
    kw.setdefault("dataset", "toy")
    return make_split(index, **kw)


def test_general_shares_test_set_and_nests_shots(toy_root):
    idx = read_subset(toy_root, "alpha")
    s1 = _split(idx, setting="general", shots=1, seed=3)
    s10 = _split(idx, setting="general", shots=10, seed=3)
    assert s1.test == s10.test and s1.test_labels == s10.test_labels
    assert s1.train_anomalies == s10.train_anomalies[:1]
    n_pool = sum(len(v) for v in idx.anomalies.values())
    assert sum(s10.test_labels) == n_pool - MAX_SHOTS
    for s in (s1, s10):
        assert not (set(s.train_anomalies) | set(s.train_normal)) & set(s.test)
    # seen flags: a test anomaly is "seen" iff its class is among the labelled ones
    seen_classes = set(s10.train_anomaly_classes)
    for c, f in zip(s10.test_classes, s10.test_seen):
        assert f == (c in seen_classes)


def test_hard_removes_known_class(toy_root):
    idx = read_subset(toy_root, "alpha")
    for known in idx.classes:
        s = _split(idx, setting="hard", known_class=known, shots=3, seed=1)
        assert known not in s.test_classes
        assert all(c == known for c in s.train_anomaly_classes)
        other = sum(len(v) for c, v in idx.anomalies.items() if c != known)
        assert sum(s.test_labels) == other
        assert not any(s.test_seen)
    s1 = _split(idx, setting="hard", known_class="bar", shots=1, seed=1)
    s3 = _split(idx, setting="hard", known_class="bar", shots=3, seed=1)
    assert s1.test == s3.test and s1.train_anomalies == s3.train_anomalies[:1]


def test_manifest_byte_identical_and_seed_dependent(toy_root):
    idx = read_subset(toy_root, "beta")
    a = _split(idx, setting="general", shots=10, seed=0).manifest_json()
    b = _split(read_subset(toy_root, "beta"), setting="general", shots=10, seed=0).manifest_json()
    c = _split(idx, setting="general", shots=10, seed=1).manifest_json()
    assert a == b and a != c
    m = json.loads(a)
    assert all(len(h) == 64 for _, h in m["train_normal"])  # content hashes recorded


def test_split_independent_of_file_system_order(tmp_path):
    """Same files created in a different order (and the copy's directory order differs)
    → identical manifests, because lists are sorted before the seeded shuffle."""
    a = write_toy_layout(tmp_path / "a", subsets=("s",), shuffle_names=True, seed=5)
    b = tmp_path / "b"
    b.mkdir()
    # copy files in reverse-sorted order so creation order differs from a's
    for src in sorted(a.rglob("*"), reverse=True):
        dst = b / src.relative_to(a)
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    ma = _split(read_subset(a, "s"), setting="general", shots=10, seed=2).manifest_json()
    mb = _split(read_subset(b, "s"), setting="general", shots=10, seed=2).manifest_json()
    assert ma == mb


def test_too_few_images_is_unavailable(toy_root):
    idx = read_subset(toy_root, "alpha")
    with pytest.raises(SplitUnavailable, match="fewer than the 10 shots"):
        _split(idx, setting="hard", known_class="bar", shots=10, seed=0)
    with pytest.raises(SplitUnavailable, match="pool has only"):
        _split(idx, setting="general", shots=50, seed=0)


def test_unknown_known_class_lists_valid_ones(toy_root):
    idx = read_subset(toy_root, "alpha")
    with pytest.raises(LayoutError, match="Valid classes: bar, bright_square, dark_square, ring"):
        _split(idx, setting="hard", known_class="Metal", shots=1, seed=0)
    with pytest.raises(LayoutError, match="normal class"):
        _split(idx, setting="hard", known_class="good", shots=1, seed=0)
    with pytest.raises(LayoutError, match="Did you mean 'bright_square'"):
        _split(idx, setting="hard", known_class="bright", shots=1, seed=0)


def test_duplicate_content_across_train_and_test_is_refused(toy_root):
    # a test normal that is a byte copy of a training normal would leak
    src = sorted((toy_root / "alpha/train/good").iterdir())[0]
    shutil.copyfile(src, toy_root / "alpha/test/good/zz_copy.png")
    with pytest.raises(ValueError, match="same content"):
        _split(read_subset(toy_root, "alpha"), setting="general", shots=1, seed=0)


def test_train_cap_is_seeded_subset(toy_root):
    idx = read_subset(toy_root, "alpha")
    s = _split(idx, setting="general", shots=1, seed=0, train_cap=5)
    assert len(s.train_normal) == 5 and set(s.train_normal) <= set(idx.train_good)
    assert s.manifest_hash != _split(idx, setting="general", shots=1, seed=0).manifest_hash


def test_invariants_on_the_embedded_synthetic_dataset():
    """Every split the quick sweep builds on the synthetic dataset keeps the invariants."""
    from bench.registry import get_dataset
    from bench.datasets.base import default_data_root
    root = get_dataset("synthetic").locate(default_data_root())
    for subset in ("weave", "disc"):
        idx = read_subset(root, subset)
        assert len(idx.classes) >= 4
        g1 = _split(idx, setting="general", shots=1, seed=0)
        g10 = _split(idx, setting="general", shots=10, seed=0)
        assert g1.test == g10.test and g1.train_anomalies == g10.train_anomalies[:1]
        for known in idx.classes:
            for shots in (1, 10):
                s = _split(idx, setting="hard", known_class=known, shots=shots, seed=0)
                assert known not in s.test_classes
                assert not set(s.train_anomalies) & set(s.test)
