"""MINNS [recon] (methods.md §7): mi-Net MIL head with max/mean/LSE pooling on DevNet's
pipeline, BCE on the image label."""
import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from bench.methods.minns import MINetHead, MINNS
from bench.registry import method_class
from bench.testing import toy_problem

TINY = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4}


@pytest.fixture(scope="module")
def problem():
    return toy_problem(size=32, seed=0)


def test_minns_learns_toy_defects(problem):
    m = MINNS(epochs=3, steps_per_epoch=8, batch_size=16).fit(problem.train)
    s = m.score(problem.test_images)
    assert ((s >= 0) & (s <= 1)).all()  # bag probability
    assert roc_auc_score(problem.test_labels, s) >= 0.9


@pytest.mark.parametrize("pooling", ["mean", "lse"])
def test_minns_other_poolings_train_and_score(problem, pooling):
    m = MINNS(pooling=pooling, **TINY).fit(problem.train)
    s = m.score(problem.test_images[:6])
    assert s.shape == (6,) and ((s >= 0) & (s <= 1)).all()


def test_mil_pooling_values(monkeypatch):
    probs = torch.tensor([[[0.1, 0.9], [0.2, 0.4]]])
    expect = {"max": 0.9, "mean": 0.4,
              "lse": math.log(sum(math.exp(v) for v in (0.1, 0.9, 0.2, 0.4)) / 4)}
    for pooling, value in expect.items():
        head = MINetHead(4, pooling=pooling)
        monkeypatch.setattr(head, "instance_probs", lambda feat: probs)
        assert head(torch.zeros(1, 4, 2, 2)).item() == pytest.approx(value, rel=1e-6)
    # lse lies between mean and max (it is log-MEAN-exp, not log-sum-exp)
    assert expect["mean"] < expect["lse"] < expect["max"]


def test_mil_head_architecture():
    head = MINetHead(512)
    convs = [m for m in head.mlp if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == \
        [(512, 256), (256, 128), (128, 64), (64, 1)]
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in head.mlp)
    with pytest.raises(ValueError, match="'sum'"):
        MINetHead(512, pooling="sum")


def test_minns_card_and_params(problem):
    assert method_class("minns") is MINNS
    assert "[recon]" in MINNS.card.notes
    assert MINNS().get_params()["pooling"] == "max"
    with pytest.raises(ValueError, match="pooling='sum'"):
        MINNS(pooling="sum", **TINY).fit(problem.train)
    with pytest.raises(ValueError, match="dropout"):
        MINNS(dropout=1.0, **TINY).fit(problem.train)
