"""Outlier sources per method (Method.outlier_policy): SAOE's outlier exposure on every
dataset, DRA's paper choice, none for the others; a needed source that is not prepared
skips the run with its reason."""
import json

import pytest

from bench.cli import main
from bench.plan import SweepConfig, expand
from bench.store import Store

from .conftest import execute_plan, prepared_toy

TINY_SAOE = ["saoe.img_size=32", "saoe.epochs=1", "saoe.steps_per_epoch=2",
             "saoe.batch_size=6"]


@pytest.fixture
def one_thread():
    """One torch thread: tiny fits on a small shared CPU run several times faster."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_saoe_paper_dry_run_shows_the_mvtec_pool(capsys):
    prepared_toy("mvtec_ad", subsets=("carpet", "leather", "grid"), n_train=3)
    prepared_toy("elpv", subsets=("elpv",), n_train=4)
    rc = main(["run", "--methods", "saoe,devnet", "--preset", "paper", "--datasets",
               "elpv,mvtec_ad", "--setting", "general",
               "--seeds", "1", "--shots", "1", "--weights", "none", "--dry-run"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    # industrial data: the other MVTec AD categories, the target's own one excluded
    assert "outliers for elpv/elpv: 'mvtec_ad', 9 images of 3 categories" in captured.err
    assert "outliers for mvtec_ad/carpet: 'mvtec_ad', 6 images of 2 categories " \
           "(grid, leather)" in captured.err and "without carpet" in captured.err
    lines = captured.out.splitlines()
    assert any("saoe elpv/elpv general" in l and "outliers=mvtec_ad" in l for l in lines)
    assert any("devnet elpv/elpv" in l and "outliers" not in l for l in lines)


def test_missing_outlier_source_skips_the_run_with_its_reason(capsys):
    prepared_toy("elpv", subsets=("elpv",), n_train=4)
    plan = expand(SweepConfig(methods=["saoe", "devnet"], datasets=["elpv"], preset="paper",
                              setting="general", seeds=1, shots=[1], weights="none"))
    assert [s.method for s in plan.specs] == ["devnet"]
    ((spec, reason),) = plan.skipped
    assert spec.method == "saoe" and "outlier-exposure data 'mvtec_ad'" in reason
    assert "bench data prepare mvtec_ad" in reason
    rc = main(["run", "--methods", "saoe", "--preset", "paper", "--datasets", "elpv",
               "--setting", "general", "--seeds", "1", "--shots", "1", "--weights", "none",
               "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 0 and "skipped: saoe elpv/elpv general" in err and "mvtec_ad" in err


def test_dra_gets_lag_on_medical_data_and_cutmix_elsewhere():
    prepared_toy("headct", subsets=("headct",), classes=("bar",), n_train=4,
                 n_per_class=12)
    prepared_toy("elpv", subsets=("elpv",), n_train=4)
    cfg = dict(methods=["dra", "saoe"], datasets=["headct", "elpv"], preset="paper",
               setting="general", seeds=1, shots=[1], weights="none")
    plan = expand(SweepConfig(**cfg))
    # neither LAG nor MVTec AD is prepared: DRA on headct and SAOE everywhere are skipped
    assert {(s.method, s.dataset) for s in plan.specs} == {("dra", "elpv")}
    assert all(s.outliers is None for s in plan.specs)
    reasons = {(s.method, s.dataset): r for s, r in plan.skipped}
    assert "pseudo-anomaly source 'lag'" in reasons[("dra", "headct")]
    assert "outlier-exposure data 'lag'" in reasons[("saoe", "headct")]
    prepared_toy("lag", subsets=("LAG",), n_train=5)
    plan = expand(SweepConfig(**cfg))
    by = {(s.method, s.dataset): s for s in plan.specs}
    assert by[("dra", "headct")].outliers == "lag" and by[("saoe", "headct")].outliers == "lag"
    assert by[("dra", "elpv")].outliers is None          # CutMix on industrial data
    assert ("saoe", "elpv") not in by                    # still needs MVTec AD
    # --outliers none: nobody gets outliers, SAOE says it trains without OE
    plan = expand(SweepConfig(**cfg, outliers="none"))
    assert all(s.outliers is None for s in plan.specs) and not plan.skipped
    saoe = [s for s in plan.specs if s.method == "saoe"]
    assert saoe and all("without external outliers" in s.notes[0] for s in saoe)


def test_saoe_oe_active_with_another_category_inactive_only_without_a_source(toy_root,
                                                                             tmp_path,
                                                                             one_thread):
    prepared_toy("mvtec_ad", subsets=("carpet", "leather"), n_train=6, n_per_class=3)
    res = tmp_path / "res"
    store = Store(res, "main")
    cfg = dict(methods=["saoe"], setting="general", seeds=1, shots=[1], preset="quick",
               set=TINY_SAOE)
    industrial = expand(SweepConfig(datasets=["mvtec_ad"], subsets=["carpet"], **cfg))
    (spec,) = industrial.specs
    assert spec.outliers == "mvtec_ad" and spec.outliers_excluded == ("carpet",)
    own = expand(SweepConfig(datasets=[str(toy_root)], subsets=["alpha"], **cfg))
    (plain,) = own.specs
    assert plain.outliers is None and "no outlier-exposure data is declared" in plain.notes[0]
    assert execute_plan(industrial, store) == {spec.run_id: "done"}
    assert execute_plan(own, store) == {plain.run_id: "done"}
    rec = json.loads((store.run_dir(spec.run_id) / "record.json").read_text())
    assert rec["method_state"]["used_outliers_"] is True and rec["notes"] == []
    rec = json.loads((store.run_dir(plain.run_id) / "record.json").read_text())
    assert rec["method_state"]["used_outliers_"] is False
    assert "trains without its OE term" in rec["notes"][0]


def test_synthetic_uses_its_other_subset_as_outliers():
    plan = expand(SweepConfig(methods=["saoe", "dra"], setting="general"))
    saoe = {s.subset: s for s in plan.specs if s.method == "saoe"}
    assert saoe["weave"].outliers == "synthetic" and saoe["weave"].outliers_excluded == ("weave",)
    assert saoe["disc"].outliers_excluded == ("disc",)
    assert all(s.outliers is None for s in plan.specs if s.method == "dra")
