"""Named grids (bench/data/grids.yaml → bench/grids.py): the runs of the paper's tables."""
import pytest

from bench.cli import main
from bench.grids import get_grid, load_grids, plan_grid
from bench.plan import ConfigError, SweepConfig

PAPER_GRIDS = {"table1", "table2", "table3", "table4", "table7", "table8", "table9", "fig3",
               "fig5"}


def test_every_paper_grid_is_defined():
    assert PAPER_GRIDS <= set(load_grids())
    assert [c.label for c in get_grid("table1").columns] == ["KDAD", "DevNet", "FLOS", "SAOE",
                                                             "MLEP", "DRA"]
    assert [c.label for c in get_grid("table3").columns] == ["DRA1A", "DRA2A", "DRA3Ar",
                                                             "DRA3An", "DRA"]


def test_table2_lists_the_30_hard_subsets_without_data(tmp_path):
    gp = plan_grid(get_grid("table2"), SweepConfig(data_root=str(tmp_path)))
    hard = [c for c in gp.cells if c[2] == "hard"]
    assert len(hard) == 30
    assert ("mvtec_ad", "carpet", "hard", "metal_contamination") in hard
    assert ("aitex", "AITEX", "hard", "Weft_crack") in hard
    # 5 supervised methods x 2 shots + KDAD (shots 0), 3 seeds, 30 subsets
    assert gp.n_missing_runs == 30 * 11 * 3 and not gp.plan.specs
    assert any("bench data prepare mastcam" in m for m in gp.missing)


def test_dry_run_prints_subsets_and_count(tmp_path, capsys):
    rc = main(["run", "--grid", "table2", "--dry-run", "--data-root", str(tmp_path),
               "--results", str(tmp_path / "res")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "hard setting: 30 known-class subsets" in out
    assert "990 runs, 0 planned on the prepared data, 990 waiting for data" in out
    assert not (tmp_path / "res").exists()


def test_grid_fixes_methods(tmp_path, capsys):
    rc = main(["run", "--grid", "table1", "--methods", "dra", "--dry-run"])
    assert rc == 2 and "--grid table1 fixes" in capsys.readouterr().err


def test_every_grid_is_runnable_and_table9_counts_its_stages(tmp_path, capsys):
    assert main(["list", "grids"]) == 0
    listed = capsys.readouterr().out
    assert "table9" in listed and "not yet runnable" not in listed
    gp = plan_grid(get_grid("table9"), SweepConfig(data_root=str(tmp_path)))
    # 5 source models + 5 x 4 fine-tunings (DRA) and 5 KDAD runs, 3 seeds each
    assert gp.n_missing_runs == (5 + 20 + 5) * 3 and not gp.unavailable


def test_a_grid_set_item_applies_to_the_columns_whose_method_has_it(toy_root):
    cfg = SweepConfig(preset="quick", seed_list=[0], subsets=["alpha"],
                      set=["*.steps_per_epoch=1", "kdad.epochs=1"])
    gp = plan_grid(get_grid("table1"), cfg, swap_datasets=[str(toy_root)])
    by_method = {s.method: s.params for s in gp.plan.specs}
    assert by_method["dra"]["steps_per_epoch"] == 1 and by_method["kdad"]["epochs"] == 1
    with pytest.raises(ConfigError, match="no selected method matching"):
        plan_grid(get_grid("table1"), SweepConfig(preset="quick", set=["*.stepz=1"]),
                  swap_datasets=[str(toy_root)])


def test_swapped_data_keeps_the_grid_and_shares_run_ids(toy_root):
    cfg = SweepConfig(preset="quick", seed_list=[0], subsets=["alpha"])
    t1 = plan_grid(get_grid("table1"), cfg, swap_datasets=[str(toy_root)])
    t3 = plan_grid(get_grid("table3"), cfg, swap_datasets=[str(toy_root)])
    methods1 = {s.method for s in t1.plan.specs}
    assert methods1 == {"kdad", "devnet", "flos", "saoe", "mlep", "dra"}
    assert {s.shots for s in t1.plan.specs} == {0, 1, 10}
    # the toy classes hold 5 images: hard runs with 10 shots are planned, recorded skipped
    assert {s.setting for s, _ in t3.plan.skipped} == {"hard"}
    dra1 = {s.run_id for s in t1.plan.specs if s.method == "dra" and s.shots == 10}
    dra3 = {s.run_id for s in t3.plan.specs if s.method == "dra" and s.setting == "general"}
    assert dra1 and dra1 == dra3              # the shared run is one run
    assert all(t1.columns_of[r] == ["DRA"] for r in dra1)


def test_fig5_columns_differ_by_loss(toy_root):
    gp = plan_grid(get_grid("fig5"), SweepConfig(preset="quick", seed_list=[0], subsets=["alpha"]),
                   swap_datasets=[str(toy_root)])
    runs = gp.plan.specs + [s for s, _ in gp.plan.skipped]
    losses = {gp.columns_of[s.run_id][0]: s.params["loss"] for s in runs}
    assert losses == {"Deviation": "deviation", "BCE": "bce", "Focal": "focal"}
