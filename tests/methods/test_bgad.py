"""BGAD at toy size: the flow is invertible-shaped with the right log-determinant, the
boundaries and the semi-push-pull loss follow their definitions, the pseudo mask picks the
least likely patches, and the method learns the toy defects under a seed."""
import math

from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bench.api import NotFittedError
from bench.methods.bgad import (BGAD, CouplingBlock, anomalous_patch_mask, bg_spp_loss,
                                cosine_lr, log_likelihood, logp_boundaries,
                                positional_encoding_2d)
from bench.registry import create_method, resolve_method_names
from bench.testing import toy_problem

BUDGET = {"epochs": 3, "steps_per_epoch": 6, "batch_size": 16, "coupling_layers": 4}
TINY = {"epochs": 2, "steps_per_epoch": 1, "batch_size": 4, "coupling_layers": 1}


@pytest.fixture(scope="module")
def problem():
    return toy_problem(size=32, seed=0)


def test_coupling_log_det_matches_the_jacobian():
    torch.manual_seed(0)
    block = CouplingBlock(4, 2, clamp=1.9, generator=torch.Generator().manual_seed(0))
    for p in block.subnet.parameters():  # leave the identity start: a real coupling
        torch.nn.init.normal_(p, std=0.5)
    x, c = torch.randn(1, 4, dtype=torch.float64), torch.randn(1, 2, dtype=torch.float64)
    block = block.double()
    jac = torch.autograd.functional.jacobian(lambda v: block(v, c)[0], x)[0, :, 0, :]
    _, log_det = block(x, c)
    assert log_det.item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-6)  # mix is float32-orthogonal


def test_log_likelihood_of_standard_normal():
    z = torch.zeros(2, 8)
    assert log_likelihood(z, torch.zeros(2)).tolist() == pytest.approx(
        [-0.5 * math.log(2 * math.pi)] * 2)


def test_positional_encoding_layout():
    p = positional_encoding_2d(8, 3, 5)
    assert p.shape == (8, 3, 5)
    assert torch.allclose(p[0], torch.sin(torch.arange(5.0))[None].expand(3, -1))  # columns
    assert torch.allclose(p[4], torch.sin(torch.arange(3.0))[:, None].expand(-1, 5))  # rows
    with pytest.raises(ValueError, match="multiple of 4"):
        positional_encoding_2d(6, 2, 2)


def test_boundaries_and_semi_push_pull_loss():
    normal = torch.arange(100.0) - 100  # -100 … -1
    b_n, b_a = logp_boundaries(normal, pos_beta=0.05, margin_tau=0.1, normalizer=10)
    assert b_n.item() == pytest.approx(-9.5) and b_a.item() == pytest.approx(-9.6)
    logps = torch.tensor([-100.0, -50.0, -90.0, -95.0])  # /10: -10, -5, -9, -9.5
    is_anom = torch.tensor([False, False, True, True])
    loss = bg_spp_loss(logps, is_anom, (b_n, b_a), normalizer=10)
    # pull: only -10 is below b_n (0.5); push: -9 and -9.5 are above b_a (0.6 and 0.1)
    assert loss.item() == pytest.approx(0.5 + (0.6 + 0.1) / 2)
    assert bg_spp_loss(torch.tensor([0.0]), torch.tensor([False]), (b_n, b_a), 10).item() == 0


def test_anomalous_patch_mask_picks_least_likely_patches_of_anomalies():
    logps = torch.arange(32.0).view(2, 4, 4)
    mask = anomalous_patch_mask(logps, torch.tensor([False, True]), rate=0.1)
    assert not mask[0].any()
    assert mask[1].sum() == 2 and mask[1].flatten()[:2].all()  # ceil(0.1·16) = 2 lowest


def test_cosine_lr_schedule():
    assert cosine_lr(1.0, 0, 10) == 1.0
    assert cosine_lr(1.0, 5, 10) == pytest.approx((1 + 1e-3) / 2)


def test_bgad_learns_toy_defects(problem):
    calls = []
    ctx = replace(problem.context, progress=lambda step, total: calls.append((step, total)))
    m = create_method("bgad", **BUDGET).fit(problem.train, ctx)
    s = m.score(problem.test_images)
    assert s.shape == (len(problem.test_images),) and s.dtype == np.float64
    assert roc_auc_score(problem.test_labels, s) >= 0.8
    assert calls[-1] == (18, 18)
    maps = m.anomaly_map(problem.test_images[:3])
    assert maps.shape == (3, 32, 32) and np.allclose(s[:3], maps.reshape(3, -1).max(1))
    # the score of an image does not depend on the other images scored with it
    assert np.allclose(m.score(problem.test_images[5:6]), s[5:6])


def test_bgad_seeded_contract_and_bad_input(problem):
    a = BGAD(**TINY).fit(problem.train).score(problem.test_images[:4])
    assert np.array_equal(a, BGAD(**TINY).fit(problem.train).score(problem.test_images[:4]))
    with pytest.raises(NotFittedError):
        BGAD().score(problem.test_images)
    with pytest.raises(ValueError, match="pos_beta=1.5"):
        BGAD(pos_beta=1.5, **TINY).fit(problem.train)
    with pytest.raises(ValueError, match="feature_levels must be 1-4"):
        BGAD(feature_levels=5, **TINY).fit(problem.train)
    no_shots = toy_problem(size=32, shots=0, n_normal=4, n_test=2)
    with pytest.raises(ValueError, match="shots"):
        BGAD(**TINY).fit(no_shots.train)
    assert "xcyao00/BGAD" in BGAD.card.upstream and "bgad" not in resolve_method_names("all")
