"""PReNet (image version) at toy size: the pair plan and sampler, the scoring rule, learning
the toy defects, seeding, bad input."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bench.api import NotFittedError
from bench.methods.common.samplers import EndlessPermutation
from bench.methods.prenet import (PAIR_AA, PAIR_NA, PAIR_NN, PReNet, draw_pairs, pair_plan,
                                  relation_loss)
from bench.registry import create_method, list_methods, resolve_method_names
from bench.testing import toy_problem

BUDGET = {"epochs": 3, "steps_per_epoch": 8, "batch_size": 16, "ensemble_size": 5}
TINY = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "ensemble_size": 2}


@pytest.fixture(scope="module")
def problem():
    return toy_problem(size=32, seed=0)


def test_pair_plan_matches_upstream_blocks():
    plan = pair_plan(16)
    assert list(plan) == [PAIR_NN] * 8 + [PAIR_NA] * 4 + [PAIR_AA] * 4
    assert (pair_plan(10) == PAIR_AA).sum() == 4  # remainder goes to anomaly-anomaly pairs
    with pytest.raises(ValueError, match="batch_size must be ≥ 4"):
        pair_plan(3)


def test_draw_pairs_puts_members_in_the_right_pools():
    rng = np.random.RandomState(0)
    plan = pair_plan(12)
    i1, a1, i2, a2 = draw_pairs(plan, EndlessPermutation(5, rng), EndlessPermutation(2, rng))
    assert not a1[plan == PAIR_NN].any() and not a2[plan == PAIR_NN].any()
    assert not a1[plan == PAIR_NA].any() and a2[plan == PAIR_NA].all()  # normal first
    assert a1[plan == PAIR_AA].all() and a2[plan == PAIR_AA].all()
    assert (i1[a1] < 2).all() and (i2[a2] < 2).all() and (i1[~a1] < 5).all()


def test_relation_loss_is_mean_absolute_error():
    assert relation_loss(torch.tensor([0., 5., 6.]), torch.tensor([0., 4., 8.])).item() == 1.0


def test_prenet_learns_toy_defects(problem):
    calls = []
    ctx = replace(problem.context, progress=lambda step, total: calls.append((step, total)))
    m = create_method("prenet", **BUDGET).fit(problem.train, ctx)
    s = m.score(problem.test_images)
    assert s.shape == (len(problem.test_images),) and s.dtype == np.float64
    assert roc_auc_score(problem.test_labels, s) >= 0.8
    assert calls[-1] == (24, 24)
    assert m.loss_history_[-1] < m.loss_history_[0]
    # score = mean of the two anchor relations: recompute it from the network by hand
    x = torch.from_numpy(problem.test_images[:3]).float().permute(0, 3, 1, 2) / 255
    from bench.methods.common.augment import normalize
    with torch.no_grad():
        e = m.model_.embedding(normalize(x))
        su = torch.stack([m.model_.pair_score(a.expand(3, -1), e) for a in m.normal_anchors_])
        sa = torch.stack([m.model_.pair_score(e, a.expand(3, -1)) for a in m.anomaly_anchors_])
    np.testing.assert_allclose(s[:3], ((su.mean(0) + sa.mean(0)) / 2).numpy(), rtol=1e-5,
                               atol=1e-5)


def test_prenet_seeded_and_contract(problem):
    a = PReNet(**TINY).fit(problem.train).score(problem.test_images[:6])
    b = PReNet(**TINY).fit(problem.train).score(problem.test_images[:6])
    assert np.array_equal(a, b)
    with pytest.raises(NotFittedError):
        PReNet().score(problem.test_images)
    assert "mala-lab/PReNet" in PReNet.card.upstream and "tabular" in PReNet.card.notes
    assert "prenet" in list_methods() and "prenet" not in resolve_method_names("all")


def test_prenet_rejects_bad_input(problem):
    with pytest.raises(ValueError, match="targets='0,8,4'"):
        PReNet(targets="0,8,4", **TINY).fit(problem.train)
    no_shots = toy_problem(size=32, shots=0, n_normal=4, n_test=2)
    with pytest.raises(ValueError, match="shots"):
        PReNet(**TINY).fit(no_shots.train)
