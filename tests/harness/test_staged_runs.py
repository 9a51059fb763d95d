"""Staged runs: a run that starts from another run's artefact (Table 9's cross-domain DRA,
fine-tuned from the model DRA learned on another subset). Planned with ``needs``/``keep``,
run in waves so that every executor starts it after its source, failures passed on."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from bench.api import MODEL_ARTEFACT, RunContext, TrainData
from bench.cli import main
from bench.grids import Adapt, Column, Grid, Block, get_grid, plan_grid
from bench.job import record_failure
from bench.plan import ConfigError, SweepConfig, expand
from bench.registry import create_method
from bench.store import Store
from bench.sweep import ready_runs, stages
from bench.testing import toy_problem


def _table9(root):
    return plan_grid(get_grid("table9"), SweepConfig(preset="quick", seed_list=[0]),
                     swap_datasets=[str(root)])


def test_table9_plans_each_source_then_the_other_subsets(toy_root):
    gp = _table9(toy_root)
    specs = gp.plan.specs
    sources = [s for s in specs if s.keep]
    staged = [s for s in specs if s.needs]
    assert {(s.subset, s.shots, s.setting) for s in sources} == {("alpha", 10, "general"),
                                                                 ("beta", 10, "general")}
    assert all(s.keep == (MODEL_ARTEFACT,) for s in sources)
    by_id = {s.run_id: s for s in sources}
    for s in staged:  # each fine-tuning run starts from the other subset's source model
        src = by_id[s.needs[0][0]]
        assert s.needs[0][1] == MODEL_ARTEFACT and src.subset != s.subset
        assert s.shots == 0 and s.split.train_anomalies == [] and s.params["epochs"] == 10
        assert src.params["epochs"] != 10 and s.stage == f"adapted from {src.subset}"
        assert s.needs_config == src.config_id
        assert not any(d.startswith("epochs=") for d in s.paper_deviations)
    assert len(staged) == 2 and len([s for s in specs if s.method == "kdad"]) == 2
    # a source run is no column's; the fine-tuning runs are their source's column
    assert all(gp.columns_of[s.run_id] == [] for s in sources)
    assert {gp.columns_of[s.run_id][0] for s in staged} == {"alpha", "beta"}
    assert gp.layout["general"] == [["alpha", 0], ["beta", 0], ["KDAD", 0]]
    assert {(b[1], b[4]) for b in gp.blanks} == {("alpha", "alpha"), ("beta", "beta")}
    # the two sources of one target are two configurations, never pooled into one cell
    assert len({s.config_id for s in staged}) == 2


def test_staged_fields_enter_the_run_id_only_when_set(toy_root):
    plain = expand(SweepConfig(methods=["dra"], datasets=[str(toy_root)], preset="quick",
                               setting="general", seed_list=[0], subsets=["alpha"]))
    spec = plain.specs[0]
    assert "needs" not in spec.identity() and "keep" not in spec.identity()
    kept = dataclasses.replace(spec, keep=(MODEL_ARTEFACT,))
    assert kept.run_id != spec.run_id and kept.config_id != spec.config_id
    # a spec survives its JSON form with its stage fields
    from bench.plan import RunSpec

    back = RunSpec.from_dict(json.loads(json.dumps(kept.to_dict())))
    assert back.run_id == kept.run_id and back.keep == (MODEL_ARTEFACT,)


def test_waves_put_a_staged_run_after_its_source(toy_root):
    specs = _table9(toy_root).plan.specs
    waves = stages(list(reversed(specs)))
    assert len(waves) == 2
    assert all(not s.needs for s in waves[0]) and all(s.needs for s in waves[1])


def test_a_failed_source_fails_its_staged_runs_and_a_missing_one_waits(toy_root, tmp_path):
    specs = _table9(toy_root).plan.specs
    staged = [s for s in specs if s.needs]
    src = {s.run_id: s for s in specs}[staged[0].needs[0][0]]
    store = Store(tmp_path / "res", "main")
    ready, waiting = ready_runs(staged[:1], store)
    assert ready == [] and waiting == staged[:1]            # no record yet: nothing written
    assert store.status(staged[0].run_id) is None
    record_failure(src, store, "FloatingPointError: non-finite loss")
    ready, waiting = ready_runs(staged[:1], store)
    assert ready == [] and waiting == []
    rec = store.record(staged[0].run_id)
    assert rec["status"] == "failed" and src.run_id in rec["reason"] \
        and "non-finite loss" in rec["reason"]


def test_a_method_that_cannot_adapt_is_refused_in_a_staged_column(toy_root):
    grid = Grid("x", "x", (0,), (Column("DevNet", "devnet", adapt=Adapt()),),
                (Block("general", (10,), (("mvtec_ad", "*"),)),))
    with pytest.raises(ConfigError, match="devnet cannot be fine-tuned"):
        plan_grid(grid, SweepConfig(preset="quick"), swap_datasets=[str(toy_root)])


def test_adapting_fit_starts_from_the_saved_model(tmp_path):
    problem = toy_problem()
    params = create_method("dra").test_params()
    source = create_method("dra", **params).fit(problem.train, problem.context)
    path = tmp_path / MODEL_ARTEFACT
    torch.save(source.state_dict(), path)
    normal_only = TrainData(normal=problem.train.normal,
                            anomalies=problem.train.normal[:0], anomaly_classes=[])
    ctx = dataclasses.replace(problem.context, seed=1, inputs={MODEL_ARTEFACT: str(path)})
    # a learning rate too small to move the weights: what remains is where the fit started
    adapted = create_method("dra", **params, lr=1e-12).fit(normal_only, ctx)
    fresh = create_method("dra", **params, lr=1e-12).fit(
        problem.train, dataclasses.replace(problem.context, seed=1))
    src_w = source.model_.state_dict()
    key = next(k for k in src_w if k.endswith("conv1.weight"))
    assert torch.allclose(adapted.model_.state_dict()[key], src_w[key], atol=1e-6)
    assert not torch.allclose(fresh.model_.state_dict()[key], src_w[key], atol=1e-3)
    assert adapted.adapting_ and adapted.effective_params_["normal_fraction"] == 1.0
    assert np.isfinite(adapted.score(problem.test_images)).all()
    # without the source model, normal images alone are refused as before
    with pytest.raises(ValueError, match="no labelled anomalies|shots ≥ 1"):
        create_method("dra", **params).fit(normal_only, problem.context)
    # a method that does not adapt refuses a source model instead of ignoring it
    with pytest.raises(ValueError, match="does not declare adapts"):
        create_method("devnet", **create_method("devnet").test_params()).fit(problem.train, ctx)


def test_table9_sweep_runs_in_two_stages_and_reports(toy_root, tmp_path, capsys):
    res, out = str(tmp_path / "res"), tmp_path / "rep"
    args = ["run", "--grid", "table9", "--datasets", str(toy_root), "--preset", "quick",
            "--seed-list", "0", "--set", "*.epochs=1", "--set", "*.steps_per_epoch=1",
            "--set", "*.img_size=32", "--results", res, "--no-table"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "stage 1 of 2: 4 runs" in printed and "stage 2 of 2: 2 runs" in printed
    assert "6 done, 0 failed, 0 skipped" in printed
    store = Store(res, "main")
    recs = list(store.records())
    kept = [r for r in recs if (store.run_dir(r["run_id"]) / MODEL_ARTEFACT).is_file()]
    assert len(kept) == 2                                   # the two source models, no other
    staged = [r for r in recs if r.get("method_state", {}).get("adapting_")]
    assert len(staged) == 2 and all(r["shots"] == 0 for r in staged)
    assert main(args) == 0 and "0 to run" in capsys.readouterr().out  # resumes: all done
    assert main(["report", "--grid", "table9", "--results", res, "--format", "markdown",
                 "--out", str(out)]) == 0
    md = (out / "table_table9_general.md").read_text()
    assert "| alpha | beta | KDAD |" in md.replace("Dataset | Subset | ", "")
    assert "– on purpose: the source domain itself" in md


def test_table9_cells_are_compared_with_the_published_cross_domain_numbers():
    from bench.report.grid_tables import GridTable, Mark
    from bench.report.paper import paper_table
    from bench.report.verify import check, misses

    t9 = paper_table().query("table == 9")
    assert len(t9) == 25 and t9["std"].isna().all()       # 5 targets x (4 sources + KDAD)
    cols = [("grid", 0), ("leather", 0), ("KDAD", 0)]
    table = GridTable("table9", "general", "t", "", [("MVTec AD", "Carpet", False)], cols,
                      [["0.840", "0.700", "0.774"]], [[0.840, 0.700, 0.774]],
                      [[Mark()] * 3])
    from bench.report.verify import grid_comparison

    comp = check(grid_comparison([table], prefer_table=9), 0.02)
    assert list(comp["paper"]) == [0.833, 0.921, 0.774] and set(comp["table"]) == {9}
    assert list(misses(comp)["method"]) == ["leather"]     # 0.700 vs 0.921; 0.840 holds


def test_fig1_runs_keep_their_features_and_the_report_draws_the_tsne(tmp_path):
    from bench.testing import write_toy_layout

    root = write_toy_layout(tmp_path / "toy", subsets=("alpha",), classes=("bar", "ring"),
                            n_per_class=13)      # 10 shots + 3 seen-class check images
    res, out = str(tmp_path / "res"), tmp_path / "rep"
    assert main(["run", "--grid", "fig1", "--datasets", str(root), "--preset", "quick",
                 "--set", "*.epochs=1", "--set", "dra.steps_per_epoch=1",
                 "--set", "devnet.steps_per_epoch=1", "--set", "*.img_size=32",
                 "--results", res, "--no-table"]) == 0
    store = Store(res, "main")
    recs = [r for r in store.records() if r["status"] == "done"]
    assert recs and {r["method"] for r in recs} == {"kdad", "devnet", "dra"}
    from bench.api import EMBEDDINGS_ARTEFACT

    for r in recs:
        with np.load(store.run_dir(r["run_id"]) / EMBEDDINGS_ARTEFACT) as z:
            n_test = len(z["test_labels"])
            assert z["test"].shape[0] == n_test and z["test"].ndim == 2
            assert z["seen_check"].shape[1] == z["test"].shape[1]
    assert main(["report", "--grid", "fig1", "--results", res, "--format", "markdown",
                 "--out", str(out)]) == 0
    assert (out / "fig1.png").stat().st_size > 10_000


def test_keeping_features_of_a_method_without_them_is_refused(toy_root):
    grid = Grid("x", "x", (0,), (Column("SAOE", "saoe", keep=("embeddings.npz",)),),
                (Block("hard", (10,), (("mvtec_ad", "*"),)),))
    with pytest.raises(ConfigError, match="saoe has no learned features"):
        plan_grid(grid, SweepConfig(preset="quick"), swap_datasets=[str(toy_root)])
