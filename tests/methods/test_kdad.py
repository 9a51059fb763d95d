"""KDAD (methods.md §8): the cloner's architecture, the distillation loss and score, the frozen
teacher, the clear failure without ImageNet weights, and toy-size training.

The tests use a *randomly initialised* VGG16 teacher (no ImageNet weights offline). That
exercises every line of the method, but distilling random features is not KDAD as published:
its accuracy needs the ImageNet teacher, so the toy AUC below only shows the pipeline works.
"""
from dataclasses import replace
from urllib.error import URLError

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from bench.api import NotFittedError, TrainData
from bench.methods.common.backbones import WeightsUnavailable, weights_filename
from bench.methods.kdad import (KDAD, SCORE_LAYERS, TRAIN_LAYERS, Cloner, VGGTeacher, kd_terms,
                                vgg16_features)
from bench.registry import create_method, method_class
from bench.testing import toy_problem

pytestmark = pytest.mark.filterwarnings("ignore:KDAD with a random teacher")

# 20 passes over 24 normal 32-px images: ~3 s on one CPU thread (+ building VGG16 once).
BUDGET = {"epochs": 20}


@pytest.fixture(scope="module")
def problem():
    return toy_problem(size=32, seed=0, shots=0)


@pytest.fixture(scope="module")
def fitted(problem):
    calls = []
    ctx = replace(problem.context, progress=lambda step, total: calls.append((step, total)))
    return create_method("kdad", **BUDGET).fit(problem.train, ctx), calls


def test_registration_and_defaults():
    cls = method_class("kdad")
    assert cls is KDAD and not cls.uses_labeled_anomalies and not cls.uses_outliers
    d = cls.default_params()
    assert (cls.input_size, d["epochs"], d["batch_size"], d["lr"], d["lam"]) == \
        (128, 601, 64, 1e-3, 0.5)
    assert d["cloner"] == "small" and d["direction_only"] is False
    assert "602" in cls.card.notes and "601" in cls.card.notes  # the pass-count quirk


def test_cloner_architecture():
    net = Cloner("small")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    widths = [c.out_channels for c in convs]
    assert widths == [16, 16, 16, 128, 16, 16, 256, 16, 16, 512, 16, 16, 512]
    assert all(c.bias is None for c in convs)
    for c in convs:  # Xavier-uniform bound sqrt(6 / (fan_in + fan_out))
        fan_in, fan_out = c.in_channels * 9, c.out_channels * 9
        assert c.weight.abs().max() <= (6 / (fan_in + fan_out)) ** 0.5 + 1e-6
    # BatchNorm after every conv except the last of each block (the one before the max-pool).
    for block in net.blocks:
        kinds = [type(m).__name__ for m in block]
        n_conv = kinds.count("Conv2d")
        assert kinds.count("BatchNorm2d") == n_conv - 1
        assert kinds[-3:] == ["Conv2d", "ReLU", "MaxPool2d"]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 8


def test_cloner_maps_match_teacher():
    torch.manual_seed(0)
    teacher = VGGTeacher(vgg16_features("none", 0)).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        t_maps, s_maps = teacher(x), Cloner("small").eval()(x)
    shapes = [tuple(t.shape[1:]) for t in t_maps]
    # Max-pool outputs of blocks 2-5: 128 ch at /4, 256 at /8, 512 at /16, 512 at /32.
    assert shapes == [(128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]
    assert [tuple(s.shape[1:]) for s in s_maps] == shapes
    assert all(not p.requires_grad for p in teacher.parameters())


def test_kd_terms_values():
    torch.manual_seed(0)
    t = [torch.rand(3, 4, 2, 2) for _ in range(4)]
    # Identical maps: no discrepancy.
    assert torch.allclose(kd_terms(t, t, TRAIN_LAYERS, 0.5, False), torch.zeros(3), atol=1e-6)
    # Same direction, twice the length: cosine term 0, MSE term = λ·mean(t²) per layer.
    s = [2 * m for m in t]
    expected = sum(0.5 * t[l].flatten(1).pow(2).mean(1) for l in TRAIN_LAYERS)
    assert torch.allclose(kd_terms(s, t, TRAIN_LAYERS, 0.5, False), expected, atol=1e-6)
    assert torch.allclose(kd_terms(s, t, TRAIN_LAYERS, 0.5, True), torch.zeros(3), atol=1e-6)
    # Opposite direction: 1 − cos = 2 per layer (direction only).
    neg = [-m for m in t]
    assert torch.allclose(kd_terms(neg, t, TRAIN_LAYERS, 0.5, True), torch.full((3,), 8.0))
    # The score ignores block 2 (layer index 0).
    assert SCORE_LAYERS == (1, 2, 3)
    changed = [t[0] * -1] + t[1:]
    assert torch.allclose(kd_terms(changed, t, SCORE_LAYERS, 0.5, False), torch.zeros(3),
                          atol=1e-6)


def test_kdad_on_toy_defects(problem, fitted):
    m, calls = fitted
    s = m.score(problem.test_images)
    assert s.shape == (len(problem.test_images),) and s.dtype == np.float64
    assert np.isfinite(s).all() and (s >= 0).all()
    # Measured 0.90 (seed 0; 0.85-1.0 over seeds 0-3) with a random teacher at 32 px. With a
    # random teacher this is not a statement about KDAD's accuracy, only that the cloner
    # learns the teacher's map on normals and diverges on large defects.
    assert roc_auc_score(problem.test_labels, s) >= 0.8
    assert calls == [(e, 20) for e in range(1, 21)]  # one per step = one per pass here


def test_teacher_stays_frozen(problem, fitted):
    m, _ = fitted
    ref = vgg16_features("none", problem.context.seed)
    for (k, a), b in zip(m.teacher_.features.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), k
    assert not m.model_.training
    state = m.state_dict()
    assert set(state) == {"model", "teacher"}  # a random teacher travels with the cloner


def test_cached_teacher_maps_change_nothing(problem):
    kw = dict(epochs=2)
    a = KDAD(**kw, cache_teacher=True).fit(problem.train).score(problem.test_images)
    b = KDAD(**kw, cache_teacher=False).fit(problem.train).score(problem.test_images)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_labelled_anomalies_are_ignored(problem):
    with_anomalies = toy_problem(size=32, seed=0, shots=4).train
    train = TrainData(normal=problem.train.normal, anomalies=with_anomalies.anomalies,
                      anomaly_classes=with_anomalies.anomaly_classes, outliers=None)
    a = KDAD(epochs=2).fit(problem.train).score(problem.test_images)
    b = KDAD(epochs=2).fit(train).score(problem.test_images)
    assert np.array_equal(a, b)


def test_random_teacher_warns(problem):
    with pytest.warns(UserWarning, match="random teacher"):
        KDAD(epochs=1).fit(problem.train)


def test_not_fitted_and_bad_params(problem):
    with pytest.raises(NotFittedError):
        KDAD().score(problem.test_images)
    with pytest.raises(ValueError, match="cloner"):
        KDAD(cloner="huge").fit(problem.train)
    with pytest.raises(ValueError, match="epochs must be an integer ≥ 1"):
        KDAD(epochs=0).fit(problem.train)


def test_imagenet_teacher_offline_fails_clearly(problem, tmp_path, monkeypatch):
    # An empty hub cache and a download that fails as it does offline.
    import torchvision.models._api as tv_api

    def offline(*args, **kwargs):
        raise URLError("no network (test)")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailable, match=weights_filename("vgg16")):
        KDAD(epochs=1).fit(problem.train, replace(problem.context, weights="imagenet"))
    assert weights_filename("vgg16") == "vgg16-397923af.pth"


def test_a_pass_is_ceil_n_over_batch_steps_with_the_last_batch_incomplete(problem, monkeypatch):
    n = len(problem.train.normal)
    sizes, calls = [], []
    real = Cloner.forward
    monkeypatch.setattr(Cloner, "forward", lambda self, x: sizes.append(len(x)) or real(self, x))
    ctx = replace(problem.context, progress=lambda step, total: calls.append((step, total)))
    m = KDAD(epochs=2, batch_size=10).fit(problem.train, ctx)
    per_pass = [10] * (n // 10) + ([n % 10] if n % 10 else [])
    assert n % 10 and sizes == per_pass * 2            # the released loader: no drop_last
    assert m.train_steps_ == 2 * len(per_pass) and calls[-1] == (m.train_steps_,) * 2
    assert len(m.loss_history_) == 2 and m.lr_history_ == [1e-3, 1e-3]  # no schedule
