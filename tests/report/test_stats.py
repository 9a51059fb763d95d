"""Statistics against hand-computed values and scipy/scikit-learn on small examples."""
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
from sklearn.metrics import roc_auc_score

from bench.report import stats

# 4 blocks × 3 methods, no ties. Ranks (1 = best): A 1,2,1,1  B 2,1,3,2  C 3,3,2,3.
VALUES = {"A": [0.90, 0.85, 0.95, 0.90], "B": [0.80, 0.90, 0.70, 0.85],
          "C": [0.70, 0.60, 0.80, 0.50]}


def _tidy(values=VALUES, shots=10):
    return pd.DataFrame([{"dataset": f"d{i}", "method": m, "shots": shots, "auroc": v}
                         for m, vs in values.items() for i, v in enumerate(vs)])


def test_friedman_matches_hand_computation_and_scipy():
    mat, dropped = stats.score_matrix(_tidy())
    assert dropped == [] and list(mat.columns) == ["A", "B", "C"]
    r = stats.friedman(mat)
    # average ranks 5/4, 8/4, 11/4; chi2 = 12N/(k(k+1)) [sum R^2 - k(k+1)^2/4] = 4.5
    assert r.avg_ranks.to_dict() == {"A": 1.25, "B": 2.0, "C": 2.75}
    assert r.statistic == pytest.approx(4.5)
    assert r.pvalue == pytest.approx(math.exp(-4.5 / 2))  # chi2 with 2 df: sf = exp(-x/2)
    assert r.iman_davenport_f == pytest.approx(3 * 4.5 / (4 * 2 - 4.5))
    assert r.iman_davenport_p == pytest.approx(st.f.sf(3 * 4.5 / 3.5, 2, 6))
    ref = st.friedmanchisquare(*[VALUES[m] for m in "ABC"])
    assert (r.statistic, r.pvalue) == pytest.approx((ref.statistic, ref.pvalue))
    assert (r.n_blocks, r.k) == (4, 3)


def test_friedman_with_ties_uses_scipys_tie_correction():
    vals = {"A": [0.9, 0.8, 0.8, 0.7, 0.9], "B": [0.9, 0.7, 0.8, 0.6, 0.8],
            "C": [0.5, 0.7, 0.9, 0.6, 0.8], "D": [0.6, 0.6, 0.7, 0.7, 0.9]}
    r = stats.friedman(stats.score_matrix(_tidy(vals))[0])
    ref = st.friedmanchisquare(*vals.values())
    assert (r.statistic, r.pvalue) == pytest.approx((ref.statistic, ref.pvalue))
    # block 0 ranks: A, B tie for 1st (1.5 each), D 3, C 4
    ranks = st.rankdata(-np.array(list(vals.values())).T, axis=1)
    assert r.avg_ranks.to_numpy() == pytest.approx(ranks.mean(axis=0))
    assert ranks[0].tolist() == [1.5, 1.5, 4.0, 3.0]


def test_all_ties_mean_no_difference():
    vals = {"A": [0.7, 0.8], "B": [0.7, 0.8], "C": [0.7, 0.8]}
    r = stats.friedman(stats.score_matrix(_tidy(vals))[0])
    assert (r.statistic, r.pvalue) == (0.0, 1.0)


def test_incomplete_blocks_are_dropped_and_listed():
    df = _tidy()
    df.loc[(df.method == "B") & (df.dataset == "d2"), "auroc"] = np.nan  # a failed run
    df = df[~((df.method == "C") & (df.dataset == "d3"))]               # a missing run
    mat, dropped = stats.score_matrix(df)
    assert sorted(dropped) == ["d2", "d3"] and list(mat.index) == ["d0", "d1"]
    r = stats.friedman(mat, dropped=dropped)
    assert r.n_blocks == 2 and r.dropped == dropped


def test_duplicate_cells_and_bad_input_are_refused():
    df = pd.concat([_tidy(), _tidy().iloc[:1]])
    with pytest.raises(ValueError, match="one row per cell"):
        stats.score_matrix(df)
    with pytest.raises(ValueError, match="lacks column"):
        stats.score_matrix(_tidy().drop(columns="auroc"))
    with pytest.raises(stats.NotTestable, match="at least 3 methods"):
        stats.friedman(stats.score_matrix(_tidy({"A": [1, 2], "B": [2, 1]}))[0])


def test_an_untestable_shot_group_is_a_marked_gap_not_an_error():
    two = _tidy({"A": [0.9, 0.8], "B": [0.7, 0.6]}, shots=1)
    res = stats.friedman_by_shots(pd.concat([two, _tidy(shots=10)]))
    assert res[10].statistic == pytest.approx(4.5) and res[10].note == ""
    assert np.isnan(res[1].statistic) and "at least 3 methods" in res[1].note
    assert res[1].avg_ranks.to_dict() == {"A": 1.0, "B": 2.0}
    table = stats.friedman_table(res)
    assert table.set_index("shots").loc[1, "note"] == res[1].note


def test_friedman_by_shots_lets_zero_shot_methods_compete_in_every_group():
    df = pd.concat([_tidy(shots=1), _tidy(shots=10).assign(auroc=lambda d: d.auroc[::-1].values),
                    _tidy({"K": [0.5, 0.5, 0.5, 0.99]}, shots=0)])
    res = stats.friedman_by_shots(df)
    assert sorted(res) == [1, 10]
    assert all(r.k == 4 and "K" in r.avg_ranks.index for r in res.values())
    one = stats.friedman(stats.score_matrix(pd.concat([_tidy(shots=1),
                                                       _tidy({"K": [0.5, 0.5, 0.5, 0.99]})]))[0])
    assert res[1].statistic == pytest.approx(one.statistic)
    table = stats.friedman_table(res)
    assert table["shots"].tolist() == [1, 10] and table["methods"].tolist() == [4, 4]


# Demšar 2006, Table 5: critical values of the two-tailed Nemenyi test.
DEMSAR_Q05 = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]
DEMSAR_Q10 = [1.645, 2.052, 2.291, 2.459, 2.589, 2.693, 2.780, 2.855, 2.920]


@pytest.mark.parametrize("k", range(2, 11))
def test_nemenyi_q_matches_demsar_table(k):
    assert stats.nemenyi_q(k, 0.05) == pytest.approx(DEMSAR_Q05[k - 2], abs=1.5e-3)
    assert stats.nemenyi_q(k, 0.10) == pytest.approx(DEMSAR_Q10[k - 2], abs=1.5e-3)


def test_critical_difference_of_demsars_example():
    # Demšar §3.2.2: four classifiers on 14 data sets, CD = 2.569 sqrt(4·5 / (6·14)) = 1.25
    assert stats.critical_difference(4, 14) == pytest.approx(1.25, abs=5e-3)
    assert stats.critical_difference(4, 14) == pytest.approx(
        stats.nemenyi_q(4) * math.sqrt(20 / 84))


def test_cd_cliques():
    r = pd.Series({"C": 3.0, "A": 1.0, "D": 3.2, "B": 1.5})
    assert stats.cd_cliques(r, 1.0) == [("A", "B"), ("C", "D")]
    assert stats.cd_cliques(r, 2.5) == [("A", "B", "C", "D")]
    assert stats.cd_cliques(r, 0.1) == []
    steps = pd.Series({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0})
    assert stats.cd_cliques(steps, 1.5) == [("a", "b"), ("b", "c"), ("c", "d")]


def test_holm_hand_computed_sequence():
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx(
        [0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]).tolist() == [1.0, 1.0]
    assert stats.holm([0.02]).tolist() == [0.02]
    with pytest.raises(ValueError, match="NaN"):
        stats.holm([0.1, float("nan")])


def test_pairwise_wilcoxon_matches_scipy_and_applies_holm():
    rng = np.random.default_rng(0)
    vals = {"A": rng.uniform(0.8, 1.0, 8), "B": rng.uniform(0.6, 0.8, 8),
            "C": rng.uniform(0.6, 0.9, 8)}
    mat, _ = stats.score_matrix(_tidy(vals))
    out = stats.pairwise_wilcoxon(mat)
    assert list(zip(out.a, out.b)) == [("A", "B"), ("A", "C"), ("B", "C")]
    for row in out.itertuples():
        ref = st.wilcoxon(vals[row.a], vals[row.b])
        assert (row.statistic, row.p) == pytest.approx((ref.statistic, ref.pvalue))
        assert row.mean_diff == pytest.approx(np.mean(vals[row.a] - vals[row.b]))
    assert out.p_holm.tolist() == pytest.approx(stats.holm(out.p.to_numpy()).tolist())
    assert out.p.iloc[0] == pytest.approx(2 / 2**8)  # A beats B in all 8 blocks: exact p
    assert bool(out.significant.iloc[0]) is True
    ctrl = stats.pairwise_wilcoxon(mat, control="C")
    assert list(zip(ctrl.a, ctrl.b)) == [("C", "A"), ("C", "B")]
    with pytest.raises(ValueError, match="control 'Z'"):
        stats.pairwise_wilcoxon(mat, control="Z")


def test_wilcoxon_of_identical_methods_is_p_one():
    mat, _ = stats.score_matrix(_tidy({"A": [0.7, 0.8, 0.9], "B": [0.7, 0.8, 0.9]}))
    out = stats.pairwise_wilcoxon(mat)
    assert out.p.tolist() == [1.0] and not out.significant.any()


def test_auroc_equals_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(50), np.ones(20)].astype(int)
    s = np.round(rng.normal(size=70) + y, 1)  # rounding makes ties
    assert stats.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    with pytest.raises(ValueError, match="both classes"):
        stats.auroc(np.zeros(5), np.arange(5.0))


def test_bootstrap_repeats_with_its_seed_and_resamples_within_class():
    rng = np.random.default_rng(2)
    y = np.r_[np.zeros(40), np.ones(15)].astype(int)
    s = rng.normal(size=55) + y
    a = stats.bootstrap_auroc(y, s, n_boot=300, seed=7)  # more than one chunk of resamples
    assert np.array_equal(a, stats.bootstrap_auroc(y, s, n_boot=300, seed=7))
    assert not np.array_equal(a, stats.bootstrap_auroc(y, s, n_boot=300, seed=8))
    assert a.shape == (300,) and len(np.unique(a)) > 100
    counts = stats._counts(np.random.default_rng(0), 5, 40)
    assert counts.sum(axis=1).tolist() == [40] * 5  # every resample keeps the class size
    # one resample weighted by counts equals the AUC of the explicitly resampled test set
    r = np.random.default_rng(3)
    c0, c1 = stats._counts(r, 1, 40), stats._counts(r, 1, 15)
    neg, pos = np.sort(s[y == 0]), np.sort(s[y == 1])
    ys = np.r_[np.zeros(40), np.ones(15)]
    ss = np.r_[np.repeat(neg, c0[0]), np.repeat(pos, c1[0])]
    assert stats._auc_weighted(neg, pos, c0, c1)[0] == pytest.approx(roc_auc_score(ys, ss))


def test_bootstrap_interval_covers_the_true_auc():
    # normals N(0,1), anomalies N(1,1): true AUC = Phi(1/sqrt(2))
    true = st.norm.cdf(1 / math.sqrt(2))
    rng = np.random.default_rng(11)
    hits = []
    for rep in range(100):
        y = np.r_[np.zeros(60), np.ones(30)].astype(int)
        s = rng.normal(size=90) + y
        ci = stats.cell_bootstrap([(y, s)], n_boot=400, seed=rep)
        assert ci.low <= ci.auroc <= ci.high
        hits.append(ci.low <= true <= ci.high)
    assert 0.88 <= np.mean(hits) <= 0.99


def test_bootstrap_cells_per_cell_and_independent_of_other_cells():
    rng = np.random.default_rng(4)
    rows = []
    for cell in ("dra", "devnet"):
        for run in ("r1", "r2"):
            y = np.r_[np.zeros(30), np.ones(10)].astype(int)
            for yy, ss in zip(y, rng.normal(size=40) + y * (2 if cell == "dra" else 0.5)):
                rows.append({"method": cell, "run_id": f"{cell}-{run}", "label": yy, "score": ss})
    df = pd.DataFrame(rows)
    out = stats.bootstrap_cells(df, ["method"], n_boot=200, seed=0)
    assert out["method"].tolist() == ["devnet", "dra"] and out["n_runs"].tolist() == [2, 2]
    for r in out.itertuples():
        runs = df[df.method == r.method].groupby("run_id")
        assert r.auroc == pytest.approx(np.mean([roc_auc_score(g.label, g.score)
                                                 for _, g in runs]))
        assert r.ci_low < r.auroc < r.ci_high
    alone = stats.bootstrap_cells(df[df.method == "dra"].sample(frac=1, random_state=0),
                                  ["method"], n_boot=200, seed=0)
    assert alone.iloc[0].ci_low == out.iloc[1].ci_low
    assert alone.iloc[0].ci_high == out.iloc[1].ci_high
