"""Paper-layout grid tables: golden Markdown and LaTeX of made-up records, marks, gaps."""
import os
from pathlib import Path

import pytest

from bench.report.grid_tables import build_grid_tables, macro_file, rank_marks
from bench.report.render_check import compile_latex, latex_document
from bench.report.tables import frame_from_entries

from .grid_fixtures import GRID, entries

GOLDEN = Path(__file__).parent / "golden"


def _tables():
    ents, manifest = entries()
    return build_grid_tables(frame_from_entries(ents), manifest, GRID)


def _golden(name: str, text: str):
    path = GOLDEN / name
    if os.environ.get("BENCH_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs; BENCH_UPDATE_GOLDEN=1 rewrites it"


@pytest.mark.parametrize("setting", ["general", "hard"])
def test_markdown_and_latex_match_the_golden_files(setting):
    t = {t.setting: t for t in _tables()}[setting]
    _golden(f"demo_{setting}.md", t.markdown())
    _golden(f"demo_{setting}.tex", t.latex())
    _golden(f"demo_{setting}_paper.tex", t.latex("paper"))


def test_marks_ties_gaps_and_mean_rows():
    general, hard = _tables()
    rows = {(g, r): i for i, (g, r, m) in enumerate(general.rows)}
    cols = {c: j for j, c in enumerate(general.columns)}
    grid = rows[("MVTec AD", "Grid")]
    # DevNet and DRA tie on Grid: both bold in each shot group, nobody underlined
    for k in (1, 10):
        assert general.marks[grid][cols[("DevNet", k)]].best
        assert general.marks[grid][cols[("DRA", k)]].best
    assert not general.marks[grid][cols[("KDAD", 0)]].best      # the baseline is not ranked
    mean = rows[("MVTec AD", "Mean")]
    assert general.rows[mean][2] and general.text[mean][cols[("KDAD", 0)]] == "0.702±0.003"
    aitex = rows[("AITEX", "")]
    assert general.text[aitex][cols[("DRA", 1)]] == "– (f)"
    assert any("CUDA out of memory" in g for g in general.gaps)
    # hard: DevNet best on Cut, DRA second; ELPV has no data
    cut = [i for i, r in enumerate(hard.rows) if r[1] == "Cut"][0]
    hc = {c: j for j, c in enumerate(hard.columns)}
    assert hard.marks[cut][hc[("DevNet", 10)]].best and hard.marks[cut][hc[("DRA", 10)]].second
    assert hard.text[[i for i, r in enumerate(hard.rows) if r[0] == "ELPV"][0]][0] == "– (d)"


def test_rank_marks_compare_as_printed():
    m = rank_marks([0.9001, 0.9004, 0.8, float("nan")], [10, 10, 10, 10])
    assert [x.best for x in m] == [True, True, False, False]
    assert [x.second for x in m] == [False, False, True, False]


def test_macros_one_per_cell_with_letter_names():
    text = macro_file(_tables())
    lines = [ln for ln in text.splitlines() if ln.startswith(r"\newcommand")]
    names = [ln.split("}")[0] for ln in lines]
    assert len(names) == len(set(names)) > 20
    assert r"\newcommand{\benchDemoGeneralMVTecADCarpetDRAShotsTen}{0.912$\pm$0.003}" in lines
    assert all(n[len(r"\newcommand{\\"):].isalpha() for n in names)


def test_latex_compiles_without_overfull_box(pdflatex):
    body = "\n".join(t.latex(style) for t in _tables() for style in ("plain", "paper"))
    res = compile_latex(latex_document(body + "\n" + macro_file(_tables()) +
                                       r"\benchDemoHardCarpetMeanDRAShotsTen",
                                       packages=("booktabs", "graphicx", "xcolor")))
    assert res.ok, res.errors
    assert not res.overfull_hbox


def _eight_method_report():
    """Every cell of Tables 1 and 2 (all nine datasets, the 30 hard subsets) for the eight
    paper methods at 1 and 10 shots, made-up values, one seed."""
    import numpy as np

    from bench.grids import Block, Column, Grid, get_grid, plan_grid
    from bench.plan import SweepConfig

    methods = ["kdad", "devnet", "flos", "saoe", "mlep", "deepsad", "minns", "dra"]
    cells = []
    for name in ("table1", "table2"):
        cells += plan_grid(get_grid(name), SweepConfig(data_root="/nonexistent")).cells
    layout = {s: [["KDAD", 0]] + [[m.upper(), k] for k in (1, 10) for m in methods[1:]]
              for s in ("general", "hard")}
    rng = np.random.default_rng(0)
    ents, columns_of = [], {}
    for ds, sub, setting, kc in cells:
        for label, k in layout[setting]:
            rid = f"{label}-{ds}-{sub}-{setting}-{kc}-{k}"
            rec = {"run_id": rid, "status": "done", "auroc": float(rng.uniform(0.5, 1)),
                   "method": label.lower(), "dataset": ds, "subset": sub, "setting": setting,
                   "known_class": kc or None, "shots": k, "seed": 0}
            spec = {**rec, "params": {}, "split_seed": 0, "weights": "imagenet",
                    "preset": "paper", "split_policy": "seed"}
            ents.append((rec, spec))
            columns_of[rid] = [label]
    grid = Grid("paper8", "AUC-ROC of the eight methods", (0,),
                tuple(Column(m.upper(), m) for m in methods),
                (Block("general", (1, 10), ()), Block("hard", (1, 10), ())))
    manifest = {"columns_of": columns_of, "layout": layout, "cells": [list(c) for c in cells],
                "seeds": [0]}
    return build_grid_tables(frame_from_entries(ents), manifest, grid)


def test_full_eight_method_report_fits_the_page(pdflatex):
    tables = _eight_method_report()
    assert {t.setting for t in tables} == {"general", "hard"}
    assert len(tables[1].columns) == 15
    assert "one run per cell (seed 0), so no std" in tables[0].caption
    for t in tables:
        for style in ("plain", "paper"):
            res = compile_latex(latex_document(t.latex(style),
                                               packages=("booktabs", "graphicx", "xcolor")))
            assert res.ok, res.errors
            assert not res.overfull_hbox, (t.setting, style, res.overfull_hbox)


def test_mean_only_datasets_show_their_mean_row_alone():
    import dataclasses

    ents, manifest = entries()
    block = dataclasses.replace(GRID.blocks[0], mean_only=("mvtec_ad",))
    grid = dataclasses.replace(GRID, blocks=(block,) + GRID.blocks[1:])
    general = build_grid_tables(frame_from_entries(ents), manifest, grid)[0]
    assert [(g, r) for g, r, _ in general.rows] == [("MVTec AD", "Mean"), ("AITEX", "")]
