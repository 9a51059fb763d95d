"""SAOE (methods.md §4, reconstructed): the three-class top-K head, the batch it trains on,
the outlier-exposure term, the scores, and toy-size training with and without outliers."""
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from bench.api import NotFittedError
from bench.methods.common.backbones import ResNetTrunk
from bench.methods.saoe import (NORMAL, PSEUDO, SAOE, SEEN, ThreeClassMILNet, anomaly_score,
                                oe_uniform_loss)
from bench.registry import create_method, method_class
from bench.testing import toy_problem

# 15 steps of 12 images at 32 px: a few seconds on one CPU thread.
BUDGET = {"epochs": 3, "steps_per_epoch": 5, "batch_size": 12}


@pytest.fixture(scope="module")
def problem():
    return toy_problem(size=32, seed=0, n_outliers=12)


def test_registration_and_defaults():
    cls = method_class("saoe")
    assert cls is SAOE and cls.uses_labeled_anomalies and cls.uses_outliers
    d = cls.default_params()
    assert (cls.input_size, d["epochs"], d["steps_per_epoch"], d["batch_size"]) == \
        (448, 30, 20, 48)
    assert (d["lr"], d["weight_decay"], d["lr_step_size"], d["lr_gamma"], d["grad_clip"]) == \
        (2e-4, 1e-5, 10, 0.1, 1.0)
    assert (d["aggregate"], d["topk_rate"], d["n_scales"], d["double_softmax"]) == \
        ("topk", 0.1, 2, False)
    assert (d["oe_weight"], d["oe_batch_ratio"], d["score_fn"]) == (0.5, 2.0, "p_anomaly")
    assert "[recon]" in cls.card.notes


def test_head_topk_and_gap_aggregation():
    torch.manual_seed(0)
    net = ThreeClassMILNet(ResNetTrunk("resnet18", "none"), "topk", 0.1, n_scales=1).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feat = net.trunk(x)
        patches = net.head(feat).flatten(2)  # 2×3×49
        logits = net(x)
    assert feat.shape == (2, 512, 7, 7) and logits.shape == (2, 3)
    k = 4  # floor(0.1·49)
    expected = patches.sort(dim=2, descending=True).values[:, :, :k].mean(2)
    assert torch.allclose(logits, expected, atol=1e-5)
    net.aggregate = "gap"
    with torch.no_grad():
        assert torch.allclose(net(x), patches.mean(2), atol=1e-5)
    # Two scales: the mean of the scale logits.
    net2 = ThreeClassMILNet(net.trunk, "gap", 0.1, n_scales=2).eval()
    net2.head = net.head
    with torch.no_grad():
        half = F.interpolate(x, size=(112, 112), mode="nearest")
        assert torch.allclose(net2(x), (net(x) + net(half)) / 2, atol=1e-5)


def test_oe_term_and_scores():
    # The OE term is the cross-entropy from the prediction to the uniform distribution:
    # log 3 (its minimum) for a uniform prediction, logsumexp − mean for a confident one.
    assert torch.isclose(oe_uniform_loss(torch.zeros(4, 3)), torch.log(torch.tensor(3.0)))
    z = torch.tensor([[4.0, 0.0, 0.0]])
    assert torch.isclose(oe_uniform_loss(z), torch.logsumexp(z, 1)[0] - 4.0 / 3)
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]])
    p = F.softmax(logits, 1)
    assert torch.allclose(anomaly_score(logits, "p_anomaly"), p[:, SEEN] + p[:, PSEUDO])
    assert torch.allclose(anomaly_score(logits, "max_anomaly"),
                          torch.maximum(p[:, SEEN], p[:, PSEUDO]))
    assert torch.allclose(anomaly_score(logits, "msp"), -p.max(1).values)
    assert NORMAL == 0


def test_batches_labels_and_pseudo_anomalies(problem, monkeypatch):
    """Intercept the model input and the cross-entropy targets of the first step."""
    seen = {}
    real_ce = F.cross_entropy

    def spy_ce(inp, target, *a, **k):
        seen.setdefault("labels", target.clone())
        return real_ce(inp, target, *a, **k)

    monkeypatch.setattr(F, "cross_entropy", spy_ce)
    m = SAOE(epochs=1, steps_per_epoch=1, batch_size=48)
    m.fit(problem.train)
    labels = seen["labels"]
    assert len(labels) == 48
    assert (labels[32:] == SEEN).all()  # 16 labelled-anomaly slots
    n_pseudo = int((labels[:32] == PSEUDO).sum())
    assert 4 <= n_pseudo <= 28 and int((labels[:32] == NORMAL).sum()) == 32 - n_pseudo
    assert m.used_outliers_


def test_saoe_learns_toy_defects_without_outliers():
    data = toy_problem(size=32, seed=0)
    m = create_method("saoe", **BUDGET).fit(data.train)
    s = m.score(data.test_images)
    assert s.shape == (len(data.test_images),) and ((s >= 0) & (s <= 1)).all()
    assert not m.used_outliers_  # trained on CutMix pseudo anomalies only
    # Measured 0.92 (seed 0; 0.92-0.99 over seeds 0-2), random-init ResNet-18.
    assert roc_auc_score(data.test_labels, s) >= 0.8
    assert m.loss_history_[-1] < m.loss_history_[0]


def test_outlier_exposure_flattens_outlier_predictions(problem):
    m = create_method("saoe", **BUDGET).fit(problem.train)
    assert m.used_outliers_
    model = m.model_

    def oe_term(x):
        z = model(x)
        return torch.logsumexp(z, 1) - z.mean(1)

    from bench.methods.common.training import predict_in_batches
    flat = predict_in_batches(oe_term, problem.train.outliers, 48, "cpu", modules=model)
    # Measured: 1.6 with OE (uniform = log 3 = 1.10) against 23.5 for the same budget
    # without outliers — the OE term does what it is for.
    assert flat.mean() < 3.0
    # The toy outliers are uniform noise, unlike real outlier sets (other MVTec categories,
    # LAG): filling 2/3 of every BatchNorm batch with them and pulling them to uniform slows
    # the classifier down in this 15-step budget from random init. Measured AUC 0.67 for
    # seed 0 (0.95 and 0.57 for seeds 1 and 2; 0.71-1.0 at 48 steps) against 0.92 without
    # outliers, so only better than chance is asserted here.
    auc = roc_auc_score(problem.test_labels, m.score(problem.test_images))
    assert auc > 0.5


def test_options_run_and_errors(problem):
    tiny = dict(epochs=1, steps_per_epoch=1, batch_size=6)
    m = SAOE(**tiny, aggregate="gap", double_softmax=True, score_fn="msp").fit(problem.train)
    s = m.score(problem.test_images)
    assert ((s >= -1) & (s <= -1 / 3)).all()  # −max softmax of 3 classes
    assert set(m.state_dict()) == {"model"}
    with pytest.raises(NotFittedError):
        SAOE().score(problem.test_images)
    with pytest.raises(ValueError, match="aggregate"):
        SAOE(aggregate="max").fit(problem.train)
    no_shots = toy_problem(size=32, seed=0, shots=0)
    with pytest.raises(ValueError, match="shots"):
        SAOE(**tiny).fit(no_shots.train)
