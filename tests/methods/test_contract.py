"""The shared Method contract (bench.contract.check_method) on every registered method — ours
and any added later — and the suite's own ability to catch broken plugins."""
import numpy as np
import pytest

from bench import registry
from bench.api import Method, MethodCard
from bench.contract import check_method, contract_params
from bench.registry import MethodEntry, list_methods


@pytest.mark.parametrize("name", list_methods())
@pytest.mark.filterwarnings("ignore:KDAD with a random teacher")  # expected with weights none
def test_registered_method_meets_contract(name):
    check_method(name, size=32)


def test_contract_params_are_the_declared_test_budget():
    assert contract_params("kdad") == {"epochs": 2, "batch_size": 12}
    p = contract_params("saoe", overrides={"score_fn": "msp"})
    assert p == {**registry.method_class("saoe").test_params(), "score_fn": "msp"}
    with pytest.raises(AssertionError, match="unknown parameters"):
        contract_params("saoe", overrides={"nope": 1})


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


class _BadParams(_MeanDistance):
    def __init__(self, img_size: int = 32, noise: float = 0.0):
        super().__init__(img_size, noise)
        self.img_size = (img_size,)  # stored differently from what was passed


@pytest.mark.parametrize("cls, message", [
    (_MeanDistance, None),
    (_Unseeded, "same seed give different scores"),
    (_Remembers, "forget earlier fits"),
    (_NoNotFitted, "NotFittedError"),
    (_WrongShape, "shape"),
    (_PublicState, "must end in '_'"),
    (_ReturnsNone, "return self"),
    (_BadParams, "store every parameter unchanged"),
])
def test_contract_catches(cls, message, monkeypatch):
    name = "contract_probe"
    list_methods()  # load the builtin plugins first, so the probe is an extra entry
    monkeypatch.setitem(registry._METHODS, name, MethodEntry(name, cls))
    if message is None:
        check_method(name)
    else:
        with pytest.raises(AssertionError, match=message):
            check_method(name)
