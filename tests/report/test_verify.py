"""bench verify: made-up records that match and that miss the paper's numbers."""
import json

import pytest

from bench.cli import main
from bench.store import Store

# Table 2, Carpet: DRA with ten anomalies, Color 0.886±0.042, Cut 0.922±0.038, Mean 0.935±0.013
PAPER = {"color": 0.886, "cut": 0.922}


def _results(tmp_path, values):
    """A sweep holding DRA hard-setting runs on carpet (seeds 0-2) and a table2 manifest."""
    store = Store(tmp_path / "res", "main")
    columns_of = {}
    for kc, vals in values.items():
        for seed, v in enumerate(vals):
            rid = f"dra-{kc}-{seed}"
            rec = {"run_id": rid, "status": "done", "auroc": v, "method": "dra",
                   "dataset": "mvtec_ad", "subset": "carpet", "setting": "hard",
                   "known_class": kc, "shots": 10, "seed": seed}
            spec = {**rec, "params": {}, "split_seed": seed, "weights": "imagenet",
                    "preset": "paper", "split_policy": "seed", "paper_deviations": []}
            store.write_run(rid, {"record.json": json.dumps(rec), "spec.json": json.dumps(spec)})
            columns_of[rid] = ["DRA"]
    store.save_grid_manifest("table2", {
        "grid": "table2", "columns_of": columns_of, "missing": [], "unavailable": [],
        "layout": {"hard": [["DRA", 10]]}, "seeds": [0, 1, 2],
        "cells": [["mvtec_ad", "carpet", "hard", kc] for kc in values]})
    return str(tmp_path / "res")


@pytest.mark.parametrize("grid", [True, False])
def test_matching_records_exit_0(tmp_path, capsys, grid):
    res = _results(tmp_path, {kc: [v - 0.01, v, v + 0.01] for kc, v in PAPER.items()})
    rc = main(["verify", "--results", res] + (["--grid", "table2"] if grid else []))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "miss:" not in out
    # the Mean of 2 of the paper's 5 Carpet rows is not the paper's Mean: not compared
    assert "2 of 2 cells" in out


def test_missing_records_exit_1_and_name_the_cell(tmp_path, capsys):
    res = _results(tmp_path, {"color": [0.80, 0.81, 0.82], "cut": [0.92, 0.92, 0.93]})
    rc = main(["verify", "--results", res, "--grid", "table2", "--tol", "0.02"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "miss: Table 2 Carpet Color DRA shots=10: ours 0.810, paper 0.886±0.042 " \
           "(delta -0.076), allowed ±0.042" in out
    assert "Cut DRA" not in out


def test_tolerance_or_paper_std_whichever_is_larger(tmp_path, capsys):
    # 0.05 off on Color: outside the std 0.042, inside --tol 0.06
    res = _results(tmp_path, {"color": [0.836] * 3})
    assert main(["verify", "--results", res, "--grid", "table2"]) == 1
    assert main(["verify", "--results", res, "--grid", "table2", "--tol", "0.06"]) == 0


def test_usage_problems_exit_2(tmp_path, capsys):
    res = _results(tmp_path, {"color": [0.886] * 3})
    assert main(["verify", "--results", res, "--tol", "-1"]) == 2
    assert main(["verify", "--results", res, "--grid", "table3"]) == 2   # not run
    assert main(["verify", "--results", str(tmp_path / "none")]) == 2
    assert "run `bench run --grid table3" in capsys.readouterr().err


def test_mean_row_compared_when_the_group_is_complete(tmp_path, capsys):
    table2 = {"color": 0.886, "cut": 0.922, "hole": 0.947, "metal_contamination": 0.933,
              "thread": 0.989}
    res = _results(tmp_path, {kc: [v] * 3 for kc, v in table2.items()})
    assert main(["verify", "--results", res, "--grid", "table2"]) == 0
    assert "6 of 6 cells" in capsys.readouterr().out       # five rows and the Mean row
    res2 = _results(tmp_path / "b", {**{kc: [v] * 3 for kc, v in table2.items()},
                                     "thread": [0.989, 0.989, 0.80]})
    assert main(["verify", "--results", res2, "--grid", "table2"]) == 1
    out = capsys.readouterr().out
    assert "miss: Table 2 Carpet Mean DRA" in out or "Thread" in out
