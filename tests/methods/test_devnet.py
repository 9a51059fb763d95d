"""DevNet (methods.md §2) at toy size: learns the toy defects, repeats exactly under a seed,
follows the Method contract."""
from dataclasses import replace
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bench.api import NotFittedError, RunContext
from bench.registry import create_method, method_class
from bench.testing import toy_problem
from bench.methods.devnet import DevNet

# 24 steps of 16 images at 32 px: a few seconds on two CPU cores.
BUDGET = {"epochs": 3, "steps_per_epoch": 8, "batch_size": 16}
TINY = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4}


@pytest.fixture(scope="module")
def problem():
    return toy_problem(size=32, seed=0)


@pytest.fixture(scope="module")
def fitted(problem):
    calls = []
    ctx = replace(problem.context, progress=lambda step, total: calls.append((step, total)))
    m = create_method("devnet", **BUDGET).fit(problem.train, ctx)
    return m, calls


def test_devnet_learns_toy_defects(problem, fitted):
    m, calls = fitted
    s = m.score(problem.test_images)
    assert s.shape == (len(problem.test_images),) and s.dtype == np.float64
    assert (s >= 0).all()  # |patch score| top-K mean is non-negative
    assert roc_auc_score(problem.test_labels, s) >= 0.9
    assert calls[-1] == (24, 24)
    assert m.loss_history_[-1] < m.loss_history_[0]


def test_devnet_same_seed_same_scores(problem):
    a = DevNet(**TINY).fit(problem.train).score(problem.test_images)
    b = DevNet(**TINY).fit(problem.train).score(problem.test_images)
    assert np.array_equal(a, b)
    c = DevNet(**TINY).fit(problem.train, RunContext(seed=1)).score(problem.test_images)
    assert not np.array_equal(a, c)


def test_devnet_contract(problem, fitted):
    m, _ = fitted
    with pytest.raises(NotFittedError):
        DevNet().score(problem.test_images)
    state = m.state_dict()
    assert set(state) == {"model"} and all(isinstance(v, torch.Tensor)
                                           for v in state["model"].values())
    assert method_class("devnet") is DevNet
    assert set(DevNet.quick_params) <= set(DevNet.param_names())
    assert m.get_params()["epochs"] == 3 and DevNet().get_params()["lr"] == 2e-4
    assert "mala-lab/deviation-network-image" in DevNet.card.upstream
    with pytest.raises(ValueError, match="fitted on 32 px"):
        m.score(np.zeros((2, 64, 64, 3), np.uint8))


def test_devnet_rejects_bad_input(problem):
    with pytest.raises(ValueError, match="criterion='hinge'"):
        DevNet(criterion="hinge", **TINY).fit(problem.train)
    with pytest.raises(ValueError, match="backbone='vgg11'"):
        DevNet(backbone="vgg11", **TINY).fit(problem.train)
    with pytest.raises(ValueError, match="batch_size"):
        DevNet(epochs=1, steps_per_epoch=1, batch_size=1).fit(problem.train)
    no_shots = toy_problem(size=32, shots=0, n_normal=4, n_test=2)
    with pytest.raises(ValueError, match="shots"):
        DevNet(**TINY).fit(no_shots.train)


@pytest.mark.parametrize("criterion", ["bce", "focal"])
def test_devnet_other_criteria_run(problem, criterion):
    m = DevNet(criterion=criterion, **TINY).fit(problem.train)
    assert np.isfinite(m.score(problem.test_images[:4])).all()
