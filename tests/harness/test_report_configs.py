"""A table cell holds one configuration: runs of two configurations in one results folder are
kept apart (columns named by what differs), filters select one, Mean rows are computed per
seed, captions and runs.csv say the split policy, reports go beside their results."""
import json

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.plan import SweepConfig, config_id_of, expand
from bench.report.tables import (ReportError, build_tables, filter_runs, frame_from_entries,
                                 load_runs)
from bench.store import Store

from .conftest import execute_plan


def _sweep(toy_root, store, **kw):
    cfg = dict(methods=["pixelknn"], datasets=[str(toy_root)], setting="general", seeds=2)
    cfg.update(kw)
    plan = expand(SweepConfig(**cfg))
    execute_plan(plan, store)
    return plan


def test_two_configurations_of_one_cell_are_never_pooled(toy_root, tmp_path, capsys):
    res = tmp_path / "res"
    store = Store(res, "main")
    a = _sweep(toy_root, store, set=["pixelknn.k=1"])
    b = _sweep(toy_root, store, set=["pixelknn.k=3"])
    assert {s.config_id for s in a.specs}.isdisjoint({s.config_id for s in b.specs})
    assert len({s.config_id for s in a.specs if s.subset == "alpha"}) == 1  # seeds share one
    runs = load_runs(res)
    tables, summary, notes = build_tables(runs)
    (general,) = tables
    assert list(general.text.columns) == ["pixelknn [k=1]", "pixelknn [k=3]"]
    for k, col in ((1, "pixelknn [k=1]"), (3, "pixelknn [k=3]")):
        mine = runs[(runs.subset == "alpha") &
                    runs.params.map(lambda p: json.loads(p)["k"] == k)]["auroc"]
        assert len(mine) == 2  # two seeds, not four
        assert general.means.loc[("toy", "alpha"), col] == pytest.approx(mine.mean())
    assert "never pooled" in general.caption
    assert notes == ["pixelknn: several configurations share table cells; they are separate "
                     "columns named by k; select one with --where pixelknn.k=VALUE"]
    # the CLI report says the same, and --where selects one configuration (one plain column)
    out = tmp_path / "rep"
    assert main(["report", "--results", str(res), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pixelknn [k=1]" in printed and "pixelknn [k=3]" in printed
    assert main(["report", "--results", str(res), "--out", str(out), "--where",
                 "pixelknn.k=3"]) == 0
    table = (out / "table_general.md").read_text()
    assert "| pixelknn " in table and "[k=" not in table
    assert len(pd.read_csv(out / "runs.csv")) == 4  # 2 subsets x 2 seeds of k=3
    assert main(["report", "--results", str(res), "--out", str(out), "--where",
                 "pixelknn.nope=3"]) == 2
    assert "no parameter 'nope'" in capsys.readouterr().err


def test_preset_filter_and_preset_label(toy_root, tmp_path):
    res = tmp_path / "res"
    store = Store(res, "main")
    _sweep(toy_root, store, preset="quick", seeds=1)
    _sweep(toy_root, store, preset="paper", seeds=1)
    runs = load_runs(res)
    assert set(runs["preset"]) == {"quick", "paper"}
    (general,), _, _ = build_tables(runs)
    # the two presets differ in several parameters; the preset alone names the columns
    assert list(general.text.columns) == ["pixelknn [preset=paper]", "pixelknn [preset=quick]"]
    (only,), _, _ = build_tables(filter_runs(runs, preset="quick"))
    assert list(only.text.columns) == ["pixelknn"]
    with pytest.raises(ReportError, match="presets present: quick"):
        filter_runs(filter_runs(runs, preset="quick"), preset="paper")


def _entry(subset, seed, auroc, setting="general", known="", method="dra", shots=10):
    spec = dict(method=method, method_version="1", params={"epochs": 30}, dataset="mvtec_ad",
                subset=subset, subset_fingerprint=f"fp-{subset}", setting=setting,
                known_class=known or None, shots=shots, seed=seed, split_seed=seed,
                split_hash=f"h{seed}", train_cap=None, weights="imagenet", outliers=None,
                outliers_fingerprint=None, decoder_version="1", preset="paper",
                split_policy="seed", paper_deviations=[])
    record = dict(run_id=f"{subset}{known}{seed}", sweep="main", status="done",
                  method=method, dataset="mvtec_ad", subset=subset, setting=setting,
                  known_class=known or None, shots=shots, seed=seed, split_seed=seed,
                  auroc=auroc, config_id=config_id_of(spec))
    return record, spec


def test_mean_rows_are_per_seed_means_then_mean_std_over_seeds():
    a = [0.6, 0.7, 0.8]
    b = [0.9, 0.5, 0.7]
    entries = [_entry("carpet", s, v) for s, v in enumerate(a)] + \
              [_entry("leather", s, v) for s, v in enumerate(b)]
    (general,), _, _ = build_tables(frame_from_entries(entries))
    # hand-computed: per-seed means 0.75, 0.60, 0.75 -> mean 0.700, sample std 0.0866
    assert general.text.loc[("mvtec_ad", "Mean"), "DRA (10)"] == "0.700±0.087"
    assert general.means.loc[("mvtec_ad", "Mean"), "DRA (10)"] == pytest.approx(0.7)
    assert "within each seed, then mean±std over the seeds" in general.caption
    # a seed missing from one row is left out of the Mean row, which then says n
    entries = entries[:-1]  # leather has seeds 0, 1 only -> seed means 0.75, 0.60
    (general,), _, _ = build_tables(frame_from_entries(entries))
    assert general.text.loc[("mvtec_ad", "Mean"), "DRA (10)"] == \
        f"0.675±{np.std([0.75, 0.6], ddof=1):.3f} (n=2)"
    # hard setting: the Mean row of a subset over its known classes, per seed
    hard = [_entry("carpet", s, v, "hard", "color") for s, v in enumerate([0.6, 0.8])] + \
           [_entry("carpet", s, v, "hard", "cut") for s, v in enumerate([0.7, 0.4])]
    (table,), _, _ = build_tables(frame_from_entries(hard))
    # per-seed means 0.65, 0.60 -> 0.625 ± 0.035
    assert table.text.loc[("mvtec_ad", "carpet", "Mean"), "DRA (10)"] == "0.625±0.035"


def test_split_policy_in_captions_and_runs_csv(toy_root, tmp_path):
    res = tmp_path / "res"
    _sweep(toy_root, Store(res, "seeded"))
    _sweep(toy_root, Store(res, "fixed"), split_seed=42)
    seeded = load_runs(res, ["seeded"])
    fixed = load_runs(res, ["fixed"])
    assert set(seeded.split_policy) == {"seed"} and set(fixed.split_policy) == {"fixed:42"}
    (t_seed,), _, _ = build_tables(seeded)
    (t_fixed,), _, _ = build_tables(fixed)
    assert "the split seed is each run's seed" in t_seed.caption
    assert "--split-seed 42" in t_seed.caption
    assert "one split for every seed (split seed 42)" in t_fixed.caption
    # both in one report: two configurations, labelled by their split policy
    (both,), _, _ = build_tables(load_runs(res))
    assert list(both.text.columns) == ["pixelknn [split=42]", "pixelknn [split=seed]"]
    out = tmp_path / "rep"
    assert main(["report", "--results", str(res), "--out", str(out)]) == 0
    assert set(pd.read_csv(out / "runs.csv")["split_policy"]) == {"seed", "fixed:42"}
    assert "Split policies differ between columns" in (out / "table_general.md").read_text()


def test_old_records_without_new_fields_form_their_own_configuration(toy_root, tmp_path):
    """A record of an older harness (no decoder version, preset or policy in its spec) is
    not pooled with a new one of the same method and cell."""
    res = tmp_path / "res"
    store = Store(res, "main")
    _sweep(toy_root, store, seeds=1)
    old = store.run_dir(store.run_ids()[0])
    spec = json.loads((old / "spec.json").read_text())
    for k in ("decoder_version", "preset", "split_policy", "config_id", "paper_deviations"):
        spec.pop(k, None)
    rec = json.loads((old / "record.json").read_text())
    for k in ("config_id", "preset", "split_policy"):
        rec.pop(k, None)
    store.write_run("oldrun", {"spec.json": json.dumps(spec), "record.json": json.dumps(rec)})
    (t,), _, _ = build_tables(load_runs(res))
    assert any("decoder unrecorded" in c for c in t.text.columns), list(t.text.columns)
    assert len(t.text.columns) == 2, list(t.text.columns)


def test_report_folder_beside_results_stale_tables_cleared(toy_root, tmp_path, monkeypatch,
                                                           capsys):
    monkeypatch.chdir(tmp_path)
    res = tmp_path / "myresults"
    store = Store(res, "main")
    _sweep(toy_root, store, setting="both", seeds=1)
    assert main(["report", "--results", str(res)]) == 0
    out = tmp_path / "reports" / "myresults" / "main"
    assert (out / "table_general.md").is_file() and (out / "table_hard.md").is_file()
    assert str(out.relative_to(tmp_path)) in capsys.readouterr().out
    # rewrite once the hard runs are gone: the stale hard tables are removed
    import shutil
    for run_dir in [store.run_dir(r) for r in store.run_ids()]:
        if json.loads((run_dir / "record.json").read_text())["setting"] == "hard":
            shutil.rmtree(run_dir)
    assert main(["report", "--results", str(res)]) == 0
    assert (out / "table_general.md").is_file() and not (out / "table_hard.md").exists()
    assert not list(out.glob("table_hard.*"))
    # a report that fails creates no folder
    assert main(["report", "--results", str(tmp_path / "nothing")]) == 2
    assert "no run records" in capsys.readouterr().err
    assert not (tmp_path / "reports" / "nothing").exists()
    assert main(["report", "--results", str(res), "--name", "nosuch"]) == 2
    assert "the sweeps there: main" in capsys.readouterr().err
    assert not (tmp_path / "reports" / "myresults" / "nosuch").exists()


def test_run_table_shows_exactly_this_plans_runs(toy_root, tmp_path, capsys):
    res = tmp_path / "res"
    store = Store(res, "main")
    _sweep(toy_root, store, subsets=["alpha"], seeds=1, set=["pixelknn.k=1"])
    rc = main(["run", "--methods", "pixelknn", "--datasets", str(toy_root), "--subsets",
               "alpha", "--setting", "general", "--seeds", "1", "--set", "pixelknn.k=2",
               "--results", str(res)])
    out = capsys.readouterr().out
    assert rc == 0
    table = out[out.index("AUC-ROC, general"):]
    # only this sweep's configuration: one plain column, no [k=..] variants of the old runs
    assert "| pixelknn " in table and "[k=" not in table
    # while the report of the whole folder keeps both apart
    assert main(["report", "--results", str(res), "--out", str(tmp_path / "rep")]) == 0
    assert "pixelknn [k=1]" in capsys.readouterr().out
