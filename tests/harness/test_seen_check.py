"""The hard setting's seen-class check set: the known class's anomalies that were not drawn as
labelled, scored against the test normals to give ``auroc_seen`` (the gray swans), while the
hard-setting AUC stays the unseen classes' (the black swans)."""
import csv
import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bench.cli import main
from bench.datasets.layout import read_subset
from bench.metrics import run_metrics
from bench.protocol import make_split
from bench.report.tables import load_runs, seen_unseen_table


def _split(index, **kw):
    return make_split(index, dataset="toy", **kw)


def test_hard_split_holds_out_the_rest_of_the_known_class(toy_root):
    idx = read_subset(toy_root, "alpha")
    s = _split(idx, setting="hard", known_class="bar", shots=2, seed=3)
    known = set(idx.anomalies["bar"])
    assert set(s.seen_check) == known - set(s.train_anomalies) and len(s.seen_check) == 3
    assert not set(s.seen_check) & set(s.test) and s.seen_check == sorted(s.seen_check)
    assert json.loads(s.manifest_json())["seen_check"][0][0] == s.seen_check[0]
    # every image of the class drawn as labelled: nothing is left to check
    full = _split(idx, setting="hard", known_class="bar", shots=5, seed=3)
    assert full.seen_check == [] and json.loads(full.manifest_json())["seen_check"] == []
    general = _split(idx, setting="general", shots=2, seed=3)
    assert general.seen_check == [] and "seen_check" not in json.loads(general.manifest_json())


def test_run_metrics_scores_the_check_set_against_the_test_normals():
    labels = [0, 0, 0, 1, 1]
    scores = [0.1, 0.5, 0.3, 0.9, 0.2]
    check = [0.4, 0.6]
    m = run_metrics(labels, scores, [False] * 5, "hard", check_scores=check)
    assert m["auroc_seen"] == roc_auc_score([0, 0, 0, 1, 1], [0.1, 0.5, 0.3, 0.4, 0.6])
    assert m["auroc_unseen"] == m["auroc"] == roc_auc_score(labels, scores)
    assert m["n_seen_check"] == 2
    none = run_metrics(labels, scores, [False] * 5, "hard")
    assert none["auroc_seen"] is None and none["n_seen_check"] == 0
    with pytest.raises(ValueError, match="check set"):
        run_metrics(labels, scores, [False] * 5, "hard", check_scores=[np.nan, 1.0])


def test_hard_run_records_seen_auc_and_the_table_shows_both(toy_root, tmp_path, capsys):
    res = tmp_path / "res"
    assert main(["run", "--methods", "pixelknn", "--datasets", str(toy_root), "--subsets",
                 "alpha", "--setting", "hard", "--known-classes", "bar", "--shots", "2",
                 "--seeds", "2", "--results", str(res), "--weights", "none"]) == 0
    printed = capsys.readouterr().out
    assert "seen class / on the unseen classes" in printed
    records = [json.loads(p.read_text()) for p in sorted((res / "main").glob("*/record.json"))]
    assert len(records) == 2
    for rec in records:
        run_dir = res / "main" / rec["run_id"]
        rows = list(csv.DictReader(open(run_dir / "scores.csv")))
        normals = [float(r["score"]) for r in rows if r["label"] == "0"]
        check = [float(r["score"]) for r in csv.DictReader(open(run_dir / "seen_check_scores.csv"))]
        # pixelknn takes no labelled anomalies (0 shots): its check set is the whole class
        assert rec["shots"] == 0 and len(check) == rec["n_seen_check"] == 5
        expected = roc_auc_score([0] * len(normals) + [1] * len(check), normals + check)
        assert abs(rec["auroc_seen"] - expected) < 1e-12
    table = seen_unseen_table(load_runs(res))
    assert table is not None and "check set" in table.caption
    (cell,) = [v for v in table.text.to_numpy().ravel() if "/" in str(v)]
    seen_cell, unseen_cell = cell.split(" / ")
    mean = np.mean([r["auroc_seen"] for r in records])
    assert seen_cell.startswith(f"{mean:.3f}"[:4]) and "±" in unseen_cell
    out = tmp_path / "rep"
    assert main(["report", "--results", str(res), "--out", str(out), "--format",
                 "markdown,latex"]) == 0
    assert "/" in (out / "table_hard_seen_unseen.md").read_text()
    assert "\\bottomrule" in (out / "table_hard_seen_unseen.tex").read_text()
