"""The data path: decoded-image cache, outlier pools, saved models, weights pre-check."""
import numpy as np
import pytest

from bench.datasets.cache import decoded_array, load_images
from bench.datasets.images import load_image
from bench.datasets.layout import read_subset
from bench.datasets.outliers import outlier_pool
from bench.testing import write_toy_layout


def test_cache_decodes_once_and_matches_direct_decode(toy_root, tmp_path):
    idx = read_subset(toy_root, "alpha")
    cache = tmp_path / "c"
    arr = load_images(idx.root, idx.all_files, idx.fingerprint, 24, idx.test_good, cache)
    direct = np.stack([load_image(idx.root / p, 24) for p in idx.test_good])
    assert arr.dtype == np.uint8 and np.array_equal(arr, direct)
    files = list((cache / "decoded").glob("*.npy"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    load_images(idx.root, idx.all_files, idx.fingerprint, 24, idx.train_good, cache)
    assert files[0].stat().st_mtime_ns == mtime  # reused, not rebuilt
    full, rows = decoded_array(idx.root, idx.all_files, idx.fingerprint, 24, cache)
    assert full.shape == (len(idx.all_files), 24, 24, 3) and len(rows) == len(idx.all_files)


def test_outlier_pool_excludes_target_category(tmp_path):
    root = write_toy_layout(tmp_path / "out", subsets=("alpha", "beta", "gamma"), n_train=3,
                            n_per_class=1)
    pool = outlier_pool(root, exclude=["beta"])
    assert pool.excluded == ["beta"]
    assert {p.split("/")[0] for p in pool.paths} == {"alpha", "gamma"}
    assert all("/train/good/" in p for p in pool.paths) and len(pool.paths) == 6
    assert pool.fingerprint != outlier_pool(root, exclude=["alpha"]).fingerprint


def test_outliers_reach_the_plan(toy_root, tmp_path):
    from bench.plan import SweepConfig, expand
    ext = write_toy_layout(tmp_path / "ext", subsets=("alpha", "other"), n_train=3,
                           n_per_class=1)
    plan = expand(SweepConfig(methods=["saoe", "pixelknn"], datasets=[str(toy_root)],
                              setting="general", seeds=1, shots=[1], outliers=str(ext)))
    by_subset = {s.subset: s for s in plan.specs if s.method == "saoe"}
    assert by_subset["alpha"].outliers_excluded == ("alpha",)  # own category left out
    assert by_subset["beta"].outliers_excluded == ()
    assert by_subset["alpha"].outliers_fingerprint != by_subset["beta"].outliers_fingerprint
    # a method that consumes no outliers gets none (its run id does not change with them)
    assert all(s.outliers is None for s in plan.specs if s.method == "pixelknn")


def test_saved_model_loads_weights_only_and_env_is_recorded(toy_root, tmp_path):
    import json
    from bench.cli import main
    from bench.store import Store, load_model
    res = tmp_path / "res"
    assert main(["run", "--methods", "pixelknn", "--datasets", str(toy_root), "--subsets",
                 "alpha", "--setting", "general", "--seeds", "1", "--results", str(res),
                 "--save-models", "--deterministic", "--no-table"]) == 0
    store = Store(res, "main")
    (rid,) = store.run_ids()
    state = load_model(store.run_dir(rid))
    assert state["bank"].ndim == 2
    env = json.loads((store.run_dir(rid) / "env.json").read_text())
    assert env["deterministic_algorithms"] is True
    assert env["packages"]["torch"] and env["device"] == "cpu" and "git_commit" in env
    assert (store.dir / "logs" / f"{rid}.log").read_text().count("done: AUC-ROC") == 1


def test_imagenet_weights_offline_fail_before_the_sweep(toy_root, tmp_path, monkeypatch,
                                                        capsys):
    """The paper preset asks for ImageNet weights; offline, the sweep stops at once and names
    the file (skipped when the file happens to be in torch's cache)."""
    from bench.registry import list_methods
    if "devnet" not in list_methods():
        pytest.skip("devnet not installed")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    from bench.cli import main
    rc = main(["run", "--methods", "devnet", "--datasets", str(toy_root), "--subsets", "alpha",
               "--setting", "general", "--seeds", "1", "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "resnet18-f37072fd.pth" in err and "--weights none" in err
    assert not (tmp_path / "r").exists()
