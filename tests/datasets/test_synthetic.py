"""The embedded ``synthetic`` dataset: layout, determinism, atomic generation, nuisance
variation and difficulty. Every test writes under pytest's tmp_path (BENCH_CACHE_DIR points
there), never into the user's cache."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.datasets.catalog import synthetic as syn
from bench.datasets.images import decode_image, load_image
from bench.datasets.layout import find_duplicates, list_subsets, read_subset
from bench.registry import get_dataset, list_datasets

SMALL = dict(size=64, n_train=3, n_test_good=2, n_per_class=2)


def _auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """AUC-ROC as the Mann–Whitney probability P(pos > neg) + ½ P(tie)."""
    neg, pos = np.asarray(neg)[:, None], np.asarray(pos)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The default dataset, generated once through the plugin into a temporary cache."""
    cache_dir = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CACHE_DIR", str(cache_dir))
        ds = get_dataset("synthetic")
        assert not ds.is_prepared(Path("unused"))
        t0 = time.perf_counter()
        root = ds.locate(Path("unused"))
        seconds = time.perf_counter() - t0
        yield {"root": root, "cache_dir": cache_dir, "ds": ds, "seconds": seconds}


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# -- plugin and layout -----------------------------------------------------------------------
def test_registered_plugin_attributes():
    assert "synthetic" in list_datasets()
    ds = get_dataset("synthetic")
    assert isinstance(ds, syn.Synthetic)
    assert ds.subsets == ["weave", "disc"]
    assert ds.paper_img_size == 64 and ds.paper_outliers is None
    assert "no download" in ds.source and ds.license.startswith("Apache-2.0")
    assert not ds.has_converter()


def test_root_is_versioned_cache_folder(cache_env):
    ds = get_dataset("synthetic")
    expected = cache_env / "synthetic" / f"v{syn.GENERATOR_VERSION}"
    assert ds.root(Path("/ignored/data/root")) == expected
    assert not ds.is_prepared(Path("/ignored"))


def test_locate_generates_complete_layout(cache, monkeypatch):
    # Function-scoped fixtures (e.g. an autouse one isolating caches) may have repointed the
    # cache since the module fixture ran; look at the fixture's cache again.
    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache["cache_dir"]))
    root, ds = cache["root"], cache["ds"]
    assert root == cache["cache_dir"] / "synthetic" / f"v{syn.GENERATOR_VERSION}"
    assert ds.is_prepared(Path("unused")) and (root / syn.MARKER).is_file()
    marker = json.loads((root / syn.MARKER).read_text())
    assert marker["params"]["version"] == syn.GENERATOR_VERSION
    assert list_subsets(root) == sorted(ds.subsets)
    # A generous bound for loaded CI machines; it takes a few seconds on one core.
    assert cache["seconds"] < 30


def test_counts_classes_and_masks(cache):
    root, ds = cache["root"], cache["ds"]
    for subset in ds.subsets:
        idx = read_subset(root, subset, allow_empty_classes=False)
        expected = ds.expected_counts[subset]
        assert len(idx.train_good) == expected["train_good"] == 48
        assert len(idx.test_good) == expected["test_good"] == 20
        assert idx.classes == sorted(syn.SUBSET_CLASSES[subset])
        assert len(idx.classes) >= 4
        for cls in idx.classes:
            assert len(idx.anomalies[cls]) == expected["anomalies"][cls] == 20
            for rel in idx.anomalies[cls]:
                assert rel in idx.masks, f"no mask for {rel}"
                img = decode_image(root / rel)
                with Image.open(root / idx.masks[rel]) as im:
                    assert im.mode == "L"
                    mask = np.asarray(im)
                assert img.shape == (128, 128, 3)
                assert mask.shape == img.shape[:2]
                assert set(np.unique(mask)) <= {0, 255}
                assert (mask == 255).any(), f"empty mask for {rel}"


def test_demo_known_class_is_the_largest_defect(cache):
    """The demo's hard-setting known class is chosen by a rule about the data (the class
    with the largest mean defect area), never by a method's result."""
    root, ds = cache["root"], cache["ds"]
    for subset in ds.subsets:
        idx = read_subset(root, subset)
        area = {}
        for cls in idx.classes:
            fractions = []
            for rel in idx.anomalies[cls]:
                with Image.open(root / idx.masks[rel]) as im:
                    fractions.append((np.asarray(im) > 0).mean())
            area[cls] = float(np.mean(fractions))
        assert ds.demo_known_classes[subset] == [max(area, key=area.get)], area


def test_demo_preset_plans_the_demo(cache, monkeypatch):
    from bench.api import DEMO_SCHEDULE
    from bench.plan import SweepConfig, expand
    from bench.registry import method_class
    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache["cache_dir"]))
    plan = expand(SweepConfig(methods=["devnet", "kdad"], setting="hard"))
    specs = plan.specs
    assert {s.preset for s in specs} == {"demo"} and {s.img_size for s in specs} == {64}
    assert {s.weights for s in specs} == {"none"} and {s.seed for s in specs} == {0}
    assert {(s.method, s.shots) for s in specs} == {("devnet", 10), ("kdad", 0)}
    assert {(s.subset, s.known_class) for s in specs} == {
        (sub, c) for sub, cs in cache["ds"].demo_known_classes.items() for c in cs}
    devnet = next(s for s in specs if s.method == "devnet")
    assert {k: devnet.params[k] for k in DEMO_SCHEDULE} == DEMO_SCHEDULE
    # the contract suite's budget is its own, smaller than the demo's
    small = method_class("devnet").test_params()
    assert small["epochs"] * small["steps_per_epoch"] < \
        DEMO_SCHEDULE["epochs"] * DEMO_SCHEDULE["steps_per_epoch"]


def test_no_duplicate_images(cache):
    for subset in cache["ds"].subsets:
        assert find_duplicates(read_subset(cache["root"], subset)) == {}


def test_second_locate_reuses_the_cache(cache, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache["cache_dir"]))
    marker = cache["root"] / syn.MARKER
    before = marker.stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("regenerated a prepared dataset")

    monkeypatch.setattr(syn, "generate_layout", boom)
    assert cache["ds"].locate(Path("unused")) == cache["root"]
    assert marker.stat().st_mtime_ns == before


def test_files_match_render_sample(cache):
    """What is on disk is exactly what ``render_sample`` draws (so tests can rebuild any file)."""
    root = cache["root"]
    s = syn.render_sample("weave", None, split="train", index=5)
    assert np.array_equal(decode_image(root / "weave/train/good/005.png"), s.image)
    s = syn.render_sample("disc", "crack", index=7)
    assert np.array_equal(decode_image(root / "disc/test/crack/007.png"), s.image)
    with Image.open(root / "disc/ground_truth/crack/007_mask.png") as im:
        assert np.array_equal(np.asarray(im), s.mask)


# -- determinism -----------------------------------------------------------------------------
def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_byte_identical(tmp_path):
    syn.generate_layout(tmp_path / "a", **SMALL)
    syn.generate_layout(tmp_path / "b", **SMALL)
    a, b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 20
    assert all(a[k] == b[k] for k in a)
    # Another seed gives other images, same layout.
    syn.generate_layout(tmp_path / "c", seed=1, **SMALL)
    c = _tree_bytes(tmp_path / "c")
    assert c.keys() == a.keys()
    assert a["weave/train/good/000.png"] != c["weave/train/good/000.png"]


def test_generation_leaves_global_rng_alone(tmp_path):
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    syn.render_sample("disc", "stain", index=1, size=64)
    assert np.array_equal(np.random.rand(3), expected)


def test_custom_layout_options(tmp_path):
    syn.generate_layout(tmp_path / "d", subsets=("disc",), size=96, n_train=2, n_test_good=1,
                        n_per_class=3, contrast=(0.9, 1.0), defect_scale=2.0)
    assert list_subsets(tmp_path / "d") == ["disc"]
    idx = read_subset(tmp_path / "d", "disc")
    assert len(idx.train_good) == 2 and len(idx.test_good) == 1
    assert all(len(v) == 3 for v in idx.anomalies.values())
    assert decode_image(tmp_path / "d" / idx.train_good[0]).shape == (96, 96, 3)
    # Larger defects cover more pixels than tiny ones drawn from the same stream.
    big = syn.render_sample("weave", "hole", index=0, defect_scale=2.0).mask
    tiny = syn.render_sample("weave", "hole", index=0, defect_scale=0.4).mask
    assert (big > 0).sum() > 4 * (tiny > 0).sum() > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(subsets=("carpet",)), "unknown synthetic subset"),
    (dict(contrast=(0.5, 0.2)), "contrast"),
    (dict(defect_scale=0), "defect_scale"),
    (dict(n_per_class=0), "n_per_class"),
    (dict(size=16), "size"),
])
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        syn.generate_layout(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


# -- atomicity and concurrency ---------------------------------------------------------------
def _tmp_siblings(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.tmp-*"))


def test_crash_leaves_nothing_that_looks_finished(tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = syn._write_layout

    def crash(root, params):
        real(root, {**params, "subsets": ["weave"]})  # some files are written, then it dies
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(syn, "_write_layout", crash)
    with pytest.raises(KeyboardInterrupt):
        syn.generate_layout(out, **SMALL)
    assert not out.exists()
    assert _tmp_siblings(out) == []          # the interrupted copy is cleaned up


def test_leftover_temp_folder_is_not_a_dataset(cache_env):
    """A temp folder from a hard kill (no cleanup ran) is neither prepared nor a subset."""
    ds = get_dataset("synthetic")
    root = ds.root(Path("unused"))
    left = root.parent / f".{root.name}.tmp-99999-deadbeef"
    (left / "weave" / "train" / "good").mkdir(parents=True)
    (left / "weave" / "train" / "good" / "000.png").write_bytes(b"partial")
    assert not ds.is_prepared(Path("unused"))
    assert not root.exists()
    # An old leftover is removed by the next generation; a fresh one (maybe a live
    # generator in another process) is kept.
    fresh = root.parent / f".{root.name}.tmp-99998-cafecafe"
    fresh.mkdir()
    old = time.time() - 2 * syn._STALE_TMP_S
    os.utime(left, (old, old))
    syn.generate_layout(root, **SMALL)
    assert (root / syn.MARKER).is_file()
    assert not left.exists() and fresh.exists()
    assert list_subsets(root) == ["disc", "weave"]


def test_lost_race_discards_own_copy(tmp_path, monkeypatch):
    """Another process finishes first: our rename fails, its identical copy is kept."""
    out = tmp_path / "out"
    real = syn._write_layout
    state = {"inner": False}

    def write_then_lose(root, params):
        real(root, params)
        if not state["inner"]:
            state["inner"] = True
            syn.generate_layout(out, **SMALL)        # the "other process" wins the rename

    monkeypatch.setattr(syn, "_write_layout", write_then_lose)
    syn.generate_layout(out, **SMALL)
    marker = (out / syn.MARKER).read_text()
    assert _tmp_siblings(out) == []
    monkeypatch.setattr(syn, "_write_layout", real)
    syn.generate_layout(tmp_path / "ref", **SMALL)
    assert _tree_bytes(out) == _tree_bytes(tmp_path / "ref")
    assert (out / syn.MARKER).read_text() == marker


def test_existing_folder_is_kept_or_refused(tmp_path):
    out = tmp_path / "out"
    syn.generate_layout(out, **SMALL)
    mtime = (out / syn.MARKER).stat().st_mtime_ns
    syn.generate_layout(out, **SMALL)                 # identical: nothing to do
    assert (out / syn.MARKER).stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError, match=str(out)):
        syn.generate_layout(out, seed=3, **SMALL)    # different content: refuse to mix
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        syn.generate_layout(other, **SMALL)
    assert (other / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    syn.generate_layout(empty, **SMALL)              # an empty folder is simply filled
    assert (empty / syn.MARKER).is_file()


# -- nuisance variation, localisation, difficulty -------------------------------------------
def _load(root: Path, files: list[str], size: int = 64) -> np.ndarray:
    return np.stack([load_image(root / f, size) for f in files]).astype(np.float64) / 255.0


def test_normals_vary(cache):
    root = cache["root"]
    for subset in cache["ds"].subsets:
        idx = read_subset(root, subset)
        imgs = _load(root, idx.train_good[:12], size=128)
        diffs = [np.abs(imgs[i] - imgs[j]).mean() for i in range(12) for j in range(i + 1, 12)]
        assert min(diffs) > 0.01, f"{subset}: two normal images are nearly identical"
        # Lighting varies: the mean brightness spreads by more than a few grey levels.
        brightness = imgs.mean(axis=(1, 2, 3))
        assert brightness.max() - brightness.min() > 0.03


def test_defects_are_localised_in_their_masks():
    """Outside its mask an anomaly equals its defect-free render; inside it differs."""
    for subset, classes in syn.SUBSET_CLASSES.items():
        for cls in classes:
            for i in range(3):
                s = syn.render_sample(subset, cls, index=i)
                inside = s.mask > 0
                diff = np.abs(s.image.astype(int) - s.clean.astype(int)).max(axis=-1)
                assert (diff[~inside] == 0).all(), f"{subset}/{cls}/{i} changes pixels off-mask"
                assert diff[inside].mean() > 2, f"{subset}/{cls}/{i} changes nothing"


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of an in-memory image, as the loader resizes files."""
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))


def test_obvious_defects_are_visible_at_64px():
    """At full contrast and large size, every class stands out of the sensor noise at 64 px."""
    for subset, classes in syn.SUBSET_CLASSES.items():
        for cls in classes:
            levels = []
            for i in range(4):
                s = syn.render_sample(subset, cls, index=i, contrast=(1.0, 1.0),
                                      defect_scale=1.5)
                small = [_resize(a, 64) for a in (s.image, s.clean)]
                mask = _resize(np.repeat(s.mask[..., None], 3, -1), 64)[..., 0] > 127
                d = np.abs(small[0].astype(float) - small[1]).max(axis=-1)
                levels.append(d[mask].mean())
            assert np.median(levels) > 12, f"{subset}/{cls}: {levels}"


def test_pixel_statistic_does_not_separate_anomalies(cache):
    """Mean absolute difference to the mean normal image (at 64 px) is far from a perfect
    detector: nuisance variation of the normals dominates most defects."""
    root = cache["root"]
    aucs = {}
    for subset in cache["ds"].subsets:
        idx = read_subset(root, subset)
        mean = _load(root, idx.train_good).mean(axis=0)

        def score(files):
            return np.abs(_load(root, files) - mean).mean(axis=(1, 2, 3))

        anomalies = [f for c in idx.classes for f in idx.anomalies[c]]
        aucs[subset] = _auc(score(idx.test_good), score(anomalies))
    assert min(aucs.values()) < 1.0, aucs
    assert all(a < 0.95 for a in aucs.values()), aucs
