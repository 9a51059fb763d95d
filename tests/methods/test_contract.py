"""The shared Method contract (bench.contract.check_method) on every registered method — ours
and any added later — and the suite's own ability to catch broken plugins."""
import numpy as np
import pytest

from bench import registry
from bench.api import Method, MethodCard
from bench.contract import (CHECKS, MethodUnderTest, assert_contract, check_method,
                            parametrize_with_checks)
from bench.registry import MethodEntry, list_methods


@pytest.mark.filterwarnings("ignore:KDAD with a random teacher")  # expected with weights none
@parametrize_with_checks()
def test_registered_method_meets_contract(method, check):
    check(method)


def test_contract_params_are_the_declared_test_budget():
    assert MethodUnderTest("kdad").params == {"epochs": 2, "batch_size": 12}
    m = MethodUnderTest("saoe", overrides={"score_fn": "msp"})
    assert m.params == {**registry.method_class("saoe").test_params(), "score_fn": "msp"}
    with pytest.raises(AssertionError, match="unknown parameters"):
        MethodUnderTest("saoe", overrides={"nope": 1}).params


# -- the suite catches broken plugins --------------------------------------------------------
class _MeanDistance(Method):
    """A correct tiny method: distance to the mean normal image."""

    card = MethodCard(paper="test method")
    uses_labeled_anomalies = False

    def __init__(self, img_size: int = 32, noise: float = 0.0):
        self.img_size = img_size
        self.noise = noise

    def fit(self, train, ctx=None):
        self.mean_ = train.normal.reshape(len(train.normal), -1).mean(0)
        return self

    def score(self, images):
        self._check_fitted("mean_")
        return np.abs(images.reshape(len(images), -1) - self.mean_).mean(1)


class _Unseeded(_MeanDistance):
    def fit(self, train, ctx=None):
        super().fit(train)
        self.mean_ = self.mean_ + np.random.default_rng().normal(size=self.mean_.shape)
        return self


class _Remembers(_MeanDistance):
    def fit(self, train, ctx=None):
        previous = getattr(self, "mean_", None)
        super().fit(train)
        if previous is not None:
            self.mean_ = (self.mean_ + previous) / 2
        return self


class _NoNotFitted(_MeanDistance):
    def score(self, images):
        if not hasattr(self, "mean_"):
            return np.zeros(len(images))
        return super().score(images)


class _WrongShape(_MeanDistance):
    def score(self, images):
        return super().score(images)[:, None]


class _PublicState(_MeanDistance):
    def fit(self, train, ctx=None):
        super().fit(train)
        self.center = self.mean_
        return self


class _ReturnsNone(_MeanDistance):
    def fit(self, train, ctx=None):
        super().fit(train)


class _BadSize(_MeanDistance):
    input_size = 0


class _BadParams(_MeanDistance):
    def __init__(self, img_size: int = 32, noise: float = 0.0):
        super().__init__(img_size, noise)
        self.img_size = (img_size,)  # stored differently from what was passed


@pytest.mark.parametrize("cls, failing, message", [
    (_MeanDistance, None, None),
    (_Unseeded, "deterministic", "same seed give different scores"),
    (_Remembers, "refit_resets", "forget earlier fits"),
    (_NoNotFitted, "score_before_fit", "NotFittedError"),
    (_WrongShape, "score_output", "shape"),
    (_PublicState, "fit_rules", "must end in '_'"),
    (_ReturnsNone, "fit_rules", "return self"),
    (_BadParams, "params_round_trip", "store every parameter unchanged"),
    (_BadSize, "declared_properties", "input_size"),
])
def test_contract_catches_naming_the_check(cls, failing, message, monkeypatch):
    name = "contract_probe"
    list_methods()  # load the builtin plugins first, so the probe is an extra entry
    monkeypatch.setitem(registry._METHODS, name, MethodEntry(name, cls))
    results = dict(check_method(name))
    assert list(results) == [c.__name__.removeprefix("check_") for c in CHECKS]
    if failing is None:
        assert all(r.passed for r in results.values()), results
        assert_contract(name)
        assert_contract(cls)  # a class, unregistered, works the same
        return
    assert not results[failing].passed and message in results[failing].reason
    with pytest.raises(AssertionError, match=failing):
        assert_contract(name)


def test_every_check_states_its_rule():
    for check in CHECKS:
        assert check.__name__.startswith("check_") and len(check.__doc__ or "") > 40


def test_check_method_cli(capsys, monkeypatch):
    from bench.cli import main

    assert main(["check-method", f"{__name__}:_MeanDistance"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "all checks passed" in out
    assert main(["check-method", f"{__name__}:_Remembers"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "refit_resets" in out and "forget earlier fits" in out
    assert main(["check-method", "nosuch.module:Thing"]) == 2
    assert main(["check-method"]) == 2
