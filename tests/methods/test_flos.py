"""FLOS (methods.md §3): DevNet trained with the binary focal loss (α = 1, γ = 2)."""
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bench.methods.devnet import BalancedPyramidMethod
from bench.methods.flos import FLOS
from bench.registry import method_class
from bench.testing import toy_problem


@pytest.fixture(scope="module")
def problem():
    return toy_problem(size=32, seed=0)


def test_flos_code_profile_learns_toy_defects(problem):
    # With the released code's abs() the logit is ≥ 0, so normals can only be pushed to
    # z = 0 and the focal loss (whose gradient shrinks as samples get easy) moves slowly:
    # 24 steps, which are enough for DevNet, leave FLOS near AUC 0.7 on this toy problem;
    # 48 steps reach > 0.9.
    m = FLOS(epochs=6, steps_per_epoch=8, batch_size=16).fit(problem.train)
    s = m.score(problem.test_images)
    assert (s >= 0).all()  # sigmoid(z) ≥ 0.5 for every image: the documented quirk
    assert roc_auc_score(problem.test_labels, s) >= 0.9


def test_flos_corrected_variant_learns_faster(problem):
    # Without abs the logit can go negative, so normals are not stuck at p = 0.5 and the
    # same 24-step budget as DevNet suffices.
    m = FLOS(nonneg_logits=False, epochs=3, steps_per_epoch=8, batch_size=16).fit(problem.train)
    assert not m.model_.head.absolute
    s = m.score(problem.test_images)
    assert roc_auc_score(problem.test_labels, s) >= 0.9


def test_flos_shares_devnet_pipeline_and_card(problem):
    assert method_class("flos") is FLOS
    assert issubclass(FLOS, BalancedPyramidMethod)  # DevNet's loop, not a copy
    assert "nonneg_logits" in FLOS.card.notes
    assert FLOS().get_params()["nonneg_logits"] is True
    assert "criterion" not in FLOS.param_names()
    with pytest.raises(ValueError, match="focal_alpha"):
        FLOS(focal_alpha=0, epochs=1, steps_per_epoch=1, batch_size=4).fit(problem.train)
    m = FLOS(epochs=1, steps_per_epoch=2, batch_size=4).fit(problem.train)
    assert set(m.state_dict()) == {"model"}
    assert isinstance(m.model_.head.conv, torch.nn.Conv2d) and m.model_.head.absolute
