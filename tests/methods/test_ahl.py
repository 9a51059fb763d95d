"""AHL at toy size: heterogeneous episodes from clustered normals, the importance weights,
the heads on precomputed features, and the three stages learning the toy defects over DRA
and DevNet under a seed."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bench.api import NotFittedError
from bench.methods.ahl import (AHL, FeatureHeads, ImportanceLSTM, cluster_normals,
                               importance_weights, make_episodes)
from bench.methods.dra import LABEL_NORMAL, LABEL_PSEUDO, LABEL_SEEN
from bench.registry import create_method, resolve_method_names
from bench.testing import toy_problem

BASE = {"base_epochs": 3, "base_steps_per_epoch": 8, "base_batch_size": 16}
BUDGET = {**BASE, "epochs": 3, "steps_per_epoch": 2, "batch_size": 16, "sequence_len": 2,
          "min_cluster_size": 1}
TINY = {"base_epochs": 1, "base_steps_per_epoch": 1, "base_batch_size": 4, "epochs": 1,
        "steps_per_epoch": 2, "batch_size": 4, "sequence_len": 1, "n_clusters": 2,
        "min_cluster_size": 1, "inner_steps": 1}


@pytest.fixture(scope="module")
def problem():
    return toy_problem(size=32, seed=0)


def test_clusters_drop_small_ones_and_need_two():
    rng = np.random.RandomState(0)
    feats = np.concatenate([rng.normal(0, 0.1, (6, 4)), rng.normal(5, 0.1, (5, 4)),
                            rng.normal(-5, 0.1, (2, 4))])
    kept = cluster_normals(feats, 3, min_size=3, seed=0)
    assert sorted(len(c) for c in kept) == [5, 6]  # the 2-member cluster is dropped
    assert sorted(np.concatenate(kept)) == list(range(11))
    with pytest.raises(ValueError, match="left 1 cluster"):
        cluster_normals(feats[:8], 2, min_size=3, seed=0)  # 6 + 2 members


def test_episodes_pair_every_ordered_cluster_pair():
    clusters = [np.arange(0, 4), np.arange(4, 9), np.arange(9, 12)]
    eps = make_episodes(clusters, n_kinds=3, pseudo_prob=0.5, rng=np.random.RandomState(0))
    assert len(eps) == 6  # 2·C(3, 2)
    pairs = {(int(e["support"][0]), int(e["query"][0])) for e in eps}
    assert pairs == {(0, 4), (0, 9), (4, 0), (4, 9), (9, 0), (9, 4)}
    assert all(len(e["support_pseudo"]) == len(e["support"]) and 0 <= e["kind"] < 3
               for e in eps)
    none = make_episodes(clusters, 3, 0.0, np.random.RandomState(0))
    assert not any(e["support_pseudo"].any() or e["query_pseudo"].any() for e in none)


def test_importance_weights_favour_the_detector_that_fits_the_labels():
    labels = torch.tensor([LABEL_NORMAL, LABEL_NORMAL, LABEL_SEEN, LABEL_PSEUDO])
    good = torch.tensor([0.0, 0.0, 1.0, 1.0])
    bad = 1 - good
    w = importance_weights(torch.stack([good, bad], dim=1), labels)
    assert w.sum().item() == pytest.approx(1.0)
    # rewards 0 and -(0.5·1 + 0.5·1 + 1·1) = -2
    assert w[0].item() == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert ImportanceLSTM(3)(torch.zeros(5, 4, 3)).shape == (5, 3)


def test_feature_heads_match_the_base_kind():
    feats = [torch.randn(3, 8, 4, 4), torch.randn(3, 8, 2, 2)]
    refs = [f[:1] for f in feats]
    dra = FeatureHeads("dra", 8, 0.1)(feats, refs)
    assert set(dra) == {"seen", "pseudo", "residual", "normality"}
    assert all(v.shape == (3,) for v in dra.values())
    assert set(FeatureHeads("devnet", 8, 0.1)(feats, refs)) == {"plain"}


def test_ahl_over_dra_learns_toy_defects(problem):
    calls = []
    ctx = replace(problem.context, progress=lambda step, total: calls.append((step, total)))
    m = create_method("ahl", **BUDGET).fit(problem.train, ctx)
    s = m.score(problem.test_images)
    assert s.shape == (len(problem.test_images),) and s.dtype == np.float64
    assert roc_auc_score(problem.test_labels, s) >= 0.8
    assert m.base_model_.name == "dra" and m.n_episodes_ == 6  # 3 clusters
    # one progress count over both stages: the base's 24 steps, then AHL's own 6
    assert calls[0] == (1, 30) and calls[23] == (24, 30) and calls[-1] == (30, 30)
    assert [c[0] for c in calls] == list(range(1, 31)) and m.train_steps_ == 30
    # importance weights exist once the history is sequence_len rounds long
    assert len(m.importance_history_) == 6 - 2
    assert all(abs(sum(w) - 1) < 1e-5 for w in m.importance_history_)
    assert set(m.state_dict()) == {"base", "heads", "importance", "ref_means"}


def test_ahl_over_devnet_seeded(problem):
    a = AHL(base="devnet", **TINY).fit(problem.train)
    assert a.base_model_.name == "devnet" and a.n_episodes_ == 2
    sa = a.score(problem.test_images[:6])
    sb = AHL(base="devnet", **TINY).fit(problem.train).score(problem.test_images[:6])
    assert np.array_equal(sa, sb)


def test_ahl_rejects_bad_input(problem):
    with pytest.raises(NotFittedError):
        AHL().score(problem.test_images)
    with pytest.raises(ValueError, match="base='flos'"):
        AHL(base="flos", **TINY).fit(problem.train)
    with pytest.raises(ValueError, match="pseudo_kinds='perlin'"):
        AHL(pseudo_kinds="perlin", **TINY).fit(problem.train)
    with pytest.raises(ValueError, match="n_clusters must be ≥ 2"):
        AHL(**{**TINY, "n_clusters": 1}).fit(problem.train)
    no_shots = toy_problem(size=32, shots=0, n_normal=4, n_test=2)
    with pytest.raises(ValueError, match="shots"):
        AHL(**TINY).fit(no_shots.train)
    assert "mala-lab/AHL" in AHL.card.upstream and "Reconstructed" in AHL.card.notes
    assert resolve_method_names("recent")[:4] == ["dra", "ahl", "bgad", "prenet"]
    assert "ahl" not in resolve_method_names("all")
