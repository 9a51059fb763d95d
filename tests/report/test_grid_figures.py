"""Figures and statistics of a grid report, from made-up records (no training)."""
import dataclasses

from bench.report.grid_figures import cell_frame, grid_figures, grid_statistics
from bench.report.grid_tables import build_grid_tables, grid_frame
from bench.report.html import Image, Table
from bench.report.tables import frame_from_entries

from .grid_fixtures import GRID, entries


def _built():
    ents, manifest = entries()
    runs = frame_from_entries(ents)
    return runs, manifest, build_grid_tables(runs, manifest, GRID)


def test_cell_frame_leaves_mean_rows_out_and_keeps_gaps():
    _, _, tables = _built()
    cells = cell_frame(tables)
    assert "Mean" not in set(cells["row"])
    gap = cells[(cells["group"] == "AITEX") & (cells["column"] == "DRA") & (cells["shots"] == 1)]
    assert gap["auroc"].isna().all()
    assert set(cells[cells["setting"] == "general"]["label"]) >= {"DRA (1)", "DRA (10)", "KDAD"}


def test_grid_figures_sample_efficiency_and_heatmap(tmp_path):
    runs, manifest, tables = _built()
    figs = grid_figures(GRID, tables, grid_frame(runs, manifest["columns_of"]), tmp_path)
    drawn = {title: p for title, p, _ in figs}
    assert drawn["Sample efficiency (general)"].is_file()
    assert drawn["Hard-setting heatmap"].is_file()
    assert "Sample efficiency (hard)" not in drawn        # one shot group only


def test_fig5_grid_draws_losses(tmp_path):
    runs, manifest, tables = _built()
    fig5 = dataclasses.replace(GRID, name="fig5")
    figs = grid_figures(fig5, tables, grid_frame(runs, manifest["columns_of"]), tmp_path)
    assert dict((t, p) for t, p, _ in figs)["Figure 5"].is_file()


def test_statistics_per_shot_group(tmp_path):
    _, _, tables = _built()
    items = grid_statistics(tables, tmp_path)
    titles = [getattr(i, "title", "") for i in items]
    assert "Friedman test over the rows (general setting)" in titles
    friedman = [i for i in items if isinstance(i, Table) and i.title.startswith("Friedman")][0]
    # general: KDAD shares every group, DevNet and DRA; rows Carpet and Grid complete at
    # 10 shots (AITEX lacks DRA at 1 shot and is dropped there)
    f = friedman.frame
    assert int(f.loc[10, "blocks"]) == 3 and int(f.loc[1, "blocks"]) == 2
    assert int(f.loc[10, "dropped blocks"]) == 0 and int(f.loc[1, "dropped blocks"]) == 1
    assert any(isinstance(i, Table) and "Wilcoxon" in i.title for i in items)
    assert all(i.path.is_file() for i in items if isinstance(i, Image))
