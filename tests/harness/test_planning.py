"""Planning a sweep: typed --set values, content twins, one run's problem never ends the
sweep, reasons on the console, undecodable images found before any run."""
import json
import shutil

import pytest

from bench.cli import main
from bench.datasets.layout import read_subset
from bench.plan import ConfigError, SweepConfig, expand
from bench.store import Store
from bench.testing import write_toy_layout

from .conftest import execute_plan


# -- typed --set ------------------------------------------------------------------------------
def test_set_values_take_the_parameter_type(toy_root):
    base = dict(datasets=[str(toy_root)], subsets=["alpha"], setting="general", seeds=1,
                shots=[1])
    plan = expand(SweepConfig(methods=["dra"], **base, set=[
        "dra.lr=1e-3", "dra.epochs=3", "dra.squared_loss=true", "dra.grad_clip=none",
        "dra.heads=seen,pseudo", "dra.topk=1", "dra.weight_decay=1e-05"]))
    p = plan.specs[0].params
    assert p["lr"] == 0.001 and isinstance(p["lr"], float)
    assert p["epochs"] == 3 and isinstance(p["epochs"], int)
    assert p["squared_loss"] is True and p["grad_clip"] is None
    assert p["heads"] == "seen,pseudo" and p["topk"] == 1.0 and isinstance(p["topk"], float)
    assert p["weight_decay"] == 1e-5
    # a wildcard is coerced per method
    plan = expand(SweepConfig(methods=["pixelknn", "devnet"], **base, set=["*.img_size=48"]))
    assert {s.img_size for s in plan.specs} == {48}


@pytest.mark.parametrize("item, expected", [("dra.epochs=ten", "an integer"),
                                            ("dra.epochs=2.5", "an integer"),
                                            ("dra.lr=fast", "a number or none"),
                                            ("dra.squared_loss=maybe", "true or false or none")])
def test_bad_set_value_is_refused_before_any_run(toy_root, tmp_path, capsys, item, expected):
    res = tmp_path / "res"
    rc = main(["run", "--methods", "dra", "--datasets", str(toy_root), "--setting", "general",
               "--set", item, "--results", str(res), "--weights", "none"])
    err = capsys.readouterr().err
    param, value = item.split(".", 1)[1].split("=")
    assert rc == 2 and f"parameter {param!r} of dra expects {expected}, got {value!r}" in err
    assert not res.exists()  # nothing ran, nothing written


def test_config_file_values_are_typed(toy_root, tmp_path):
    from bench.plan import load_config_file
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f"methods: dra\ndatasets: [{toy_root}]\nsetting: general\nseeds: 1\n"
                   f"shots: 1\nset:\n  dra.lr: 1e-3\n  dra.rotate: false\n")
    plan = expand(SweepConfig(**load_config_file(cfg)))
    assert plan.specs[0].params["lr"] == 0.001 and plan.specs[0].params["rotate"] is False
    cfg.write_text("methods: dra\nset:\n  dra.epochs: ten\n")
    with pytest.raises(ConfigError, match="parameter 'epochs' of dra expects an integer"):
        expand(SweepConfig(**load_config_file(cfg)))
    cfg.write_text("seeds: three\n")
    with pytest.raises(ConfigError, match="option 'seeds' expects an integer, got 'three'"):
        load_config_file(cfg)


# -- content twins ------------------------------------------------------------------------------
def _twin_layout(tmp_path):
    """Two classes share content: three `bar` files are byte copies of `ring` files, as
    Mastcam's multi-label frames."""
    root = write_toy_layout(tmp_path / "twins", subsets=("s",), n_per_class=6)
    for i in range(3):
        src = root / "s" / "test" / "ring" / f"{i:03d}.png"
        shutil.copyfile(src, root / "s" / "test" / "bar" / f"copy_{i}.png")
    return root


def test_twins_never_in_train_and_test_every_seed_plans_and_runs(tmp_path):
    root = _twin_layout(tmp_path)
    idx = read_subset(root, "s")
    plan = expand(SweepConfig(methods=["pixelknn"], datasets=[str(root)], setting="both",
                              seeds=10, preset="quick"))
    assert not plan.failed and not plan.skipped
    # every labelled split of every seed, as a supervised method's runs draw them
    from bench.protocol import make_split
    removed_any = False
    for seed in range(10):
        splits = [make_split(idx, dataset="t", setting="general", shots=k, seed=seed)
                  for k in (1, 10)]
        splits += [make_split(idx, dataset="t", setting="hard", shots=k, seed=seed,
                              known_class=c) for c in ("ring", "bar") for k in (1, 5)]
        for sp in splits:
            train = {idx.hashes[p] for p in sp.train_normal + sp.train_anomalies}
            assert not train & {idx.hashes[p] for p in sp.test}
            listed = sp.manifest()["test_twins_removed"]
            assert all(p not in sp.test for p, _, _ in listed)
            removed_any |= bool(listed)
        assert splits[0].test == splits[1].test  # 1 and 10 shots share one test set
    assert removed_any
    # the known class `ring` in the hard setting: its three copies filed under `bar` are out
    hard = make_split(idx, dataset="t", setting="hard", shots=1, seed=0, known_class="ring")
    assert [p for p, _, _ in hard.manifest()["test_twins_removed"]] == \
        [f"s/test/bar/copy_{i}.png" for i in range(3)]
    store = Store(tmp_path / "res", "main")
    assert set(execute_plan(plan, store).values()) == {"done"}
    manifest = json.loads((store.run_dir(plan.specs[0].run_id) / "split.json").read_text())
    assert "test_twins_removed" in manifest


def test_twins_of_a_supervised_sweep_plan_and_run(tmp_path):
    """Every seed of the general and hard settings plans and runs (a method with labelled
    anomalies), where the released protocol would stop the sweep on a twin."""
    root = _twin_layout(tmp_path)
    plan = expand(SweepConfig(methods=["dra"], datasets=[str(root)], setting="both",
                              seeds=3, shots=[1], known_classes=["ring"], preset="quick",
                              set=["dra.img_size=16", "dra.epochs=1", "dra.steps_per_epoch=1",
                                   "dra.batch_size=3", "dra.n_ref=1", "dra.n_scales=1"]))
    assert len(plan.specs) == 6 and not plan.failed and not plan.skipped
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        statuses = execute_plan(plan, Store(tmp_path / "res", "main"))
    finally:
        torch.set_num_threads(before)
    assert set(statuses.values()) == {"done"}


# -- one run's problem never ends the sweep ---------------------------------------------------
def test_planning_error_of_one_subset_is_a_failed_record_the_rest_runs(toy_root, tmp_path,
                                                                       capsys):
    # a test normal of `beta` is a byte copy of a training normal: that subset's splits leak
    src = sorted((toy_root / "beta/train/good").iterdir())[0]
    shutil.copyfile(src, toy_root / "beta/test/good/zz_copy.png")
    res = tmp_path / "res"
    rc = main(["run", "--methods", "pixelknn", "--datasets", str(toy_root), "--setting",
               "general", "--seeds", "2", "--results", str(res), "--no-table", "--workers",
               "1"])
    captured = capsys.readouterr()
    assert rc == 1
    recs = [json.loads(p.read_text()) for p in res.glob("main/*/record.json")]
    status = {(r["subset"], r["seed"]): r["status"] for r in recs}
    assert status == {("alpha", 0): "done", ("alpha", 1): "done", ("beta", 0): "failed",
                      ("beta", 1): "failed"}
    assert all("same content" in r["reason"] for r in recs if r["status"] == "failed")
    # printed once for both runs, with the reason
    assert "failed 2 runs: while planning: ValueError: beta: 1 test image(s) have the same " \
           "content" in captured.err


def test_skip_reasons_are_printed_on_the_console(toy_root, tmp_path, capsys):
    res = tmp_path / "res"
    rc = main(["run", "--methods", "dra", "--datasets", str(toy_root),
               "--setting", "hard", "--known-classes", "bar", "--shots", "6", "--seeds", "1",
               "--results", str(res), "--weights", "none", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 0
    # one line per run, naming it and the reason
    assert "skipped: dra toy/alpha hard/bar shots=6 seed=0: alpha: known class 'bar' has 5 " \
           "images, fewer than the 6 shots asked" in err


def test_undecodable_image_stops_the_sweep_before_any_run(toy_root, tmp_path, capsys):
    bad = toy_root / "alpha" / "test" / "good" / "broken.png"
    bad.write_bytes(b"this is text, not a png")
    res = tmp_path / "res"
    rc = main(["run", "--methods", "pixelknn", "--datasets", str(toy_root), "--setting",
               "general", "--seeds", "1", "--results", str(res), "--no-table"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and str(bad) in err and "Replace or remove" in err
    assert not list(res.glob("main/*/record.json"))  # no run started, none recorded


# -- precision ----------------------------------------------------------------------------------
def test_precision_enters_the_run_id_and_falls_back_with_a_note(toy_root, capsys):
    base = dict(datasets=[str(toy_root)], subsets=["alpha"], setting="general", seeds=1,
                shots=[1])
    fp32 = expand(SweepConfig(methods=["devnet", "pixelknn"], precision="fp32", **base))
    bf16 = expand(SweepConfig(methods=["devnet", "pixelknn"], precision="bf16", **base))
    ids32 = {s.method: s.run_id for s in fp32.specs}
    ids16 = {s.method: s.run_id for s in bf16.specs}
    assert {s.method: s.precision for s in bf16.specs} == {"devnet": "bf16",
                                                          "pixelknn": "fp32"}
    assert ids16["devnet"] != ids32["devnet"]  # another arithmetic, another result
    assert ids16["pixelknn"] == ids32["pixelknn"]  # it ran fp32 both times
    assert any("pixelknn runs in fp32" in n for n in bf16.notes)
    # auto: this machine has no GPU, or the sweep is told to use none
    auto = expand(SweepConfig(methods=["devnet"], gpus="none", **base))
    assert [s.precision for s in auto.specs] == ["fp32"]
    with pytest.raises(ConfigError, match="--precision 'fp16'"):
        expand(SweepConfig(methods=["devnet"], precision="fp16", **base))
