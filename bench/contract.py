"""The shared contract suite every method plugin must pass, ours or a third party's — the
counterpart of scikit-learn's ``check_estimator``.

Usage in a plugin's tests::

    from bench.contract import check_method

    def test_my_method_contract():
        import my_plugin  # registers "mymethod"
        check_method("mymethod")

:func:`check_method` builds the method from the registry with its declared ``test_params()``
(a toy budget) plus the caller's ``overrides``, fits it on tiny
:func:`bench.testing.toy_problem` data and raises ``AssertionError`` naming the method and
the broken rule. It fits the method three times in all (fit A then B on one instance, B on a
fresh one) so that determinism and forgetting share the fits. What it checks:

* class attributes: a :class:`~bench.api.MethodCard` naming the paper, boolean
  ``uses_labeled_anomalies``/``uses_outliers``, ``quick_params`` naming real parameters;
* ``get_params()`` is JSON-serialisable, reflects the constructor arguments and round-trips
  through ``create_method``; ``fit`` does not change it;
* ``score`` before ``fit`` raises :class:`~bench.api.NotFittedError`;
* ``fit`` returns ``self``, leaves its input arrays unchanged and only adds attributes whose
  names end (or start) with ``_``;
* ``score`` returns a float ``np.ndarray`` of shape (n,), finite, for n images and for one,
  and leaves its input unchanged;
* the same data and seed give the same scores (fresh instances);
* fitting again forgets the first fit: scores after fit(A), fit(B) equal those after a fresh
  fit(B). A uses external outliers when the method consumes them, B does not, and a
  ``used_outliers_`` attribute, if the method has one, must follow;
* methods with ``uses_labeled_anomalies = False`` are fitted with zero labelled anomalies
  (how the harness runs them); the others with two;
* ``state_dict()`` is a dict that survives ``torch.save`` / ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import io
import json
from typing import Any, Optional

import numpy as np

from .api import Method, MethodCard, NotFittedError
from .registry import create_method, get_method_entry
from .testing import toy_problem

# Tolerance for "the same scores": CPU runs under one seed repeat exactly; this only absorbs
# harmless float reordering.
_RTOL, _ATOL = 1e-5, 1e-6


def _fail(name: str, msg: str) -> None:
    raise AssertionError(f"method {name!r}: {msg}")


def contract_params(name: str, overrides: Optional[dict] = None) -> dict:
    """The parameters :func:`check_method` uses for ``name``: the method's declared
    ``test_params()``, then ``overrides``."""
    cls = get_method_entry(name).cls
    valid = cls.param_names()
    params = dict(cls.test_params())
    unknown = set(params) - set(valid)
    if unknown:
        _fail(name, f"test_params() names unknown parameters {sorted(unknown)}; valid: "
                    f"{', '.join(valid)}")
    unknown = set(overrides or {}) - set(valid)
    if unknown:
        _fail(name, f"overrides name unknown parameters {sorted(unknown)}; valid: "
                    f"{', '.join(valid)}")
    params.update(overrides or {})
    return params


def _check_class(name: str, cls: type) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        _fail(name, f"{cls!r} is not a bench.Method subclass")
    card = getattr(cls, "card", None)
    if not isinstance(card, MethodCard) or not card.paper:
        _fail(name, "the class needs a `card = MethodCard(paper=...)` naming its paper")
    for attr in ("uses_labeled_anomalies", "uses_outliers"):
        if not isinstance(getattr(cls, attr, None), bool):
            _fail(name, f"class attribute {attr} must be a bool, got "
                        f"{getattr(cls, attr, None)!r}")
    if not isinstance(cls.version, str) or not cls.version:
        _fail(name, f"class attribute version must be a non-empty string, got {cls.version!r}")
    unknown = set(cls.quick_params) - set(cls.param_names())
    if unknown:
        _fail(name, f"quick_params names unknown parameters {sorted(unknown)}")


def _check_params(name: str, method: Method, given: dict) -> dict:
    params = method.get_params()
    try:
        json.dumps(params)
    except (TypeError, ValueError) as exc:
        _fail(name, f"get_params() is not JSON-serialisable ({exc}): {params!r}")
    for k, v in given.items():
        if params.get(k) != v:
            _fail(name, f"get_params()[{k!r}] is {params.get(k)!r} but the constructor got "
                        f"{v!r}; __init__ must store every parameter unchanged")
    again = create_method(name, **params).get_params()
    if again != params:
        _fail(name, f"get_params() does not round-trip through create_method: {params!r} "
                    f"became {again!r}")
    return params


def _check_scores(name: str, scores: Any, n: int, when: str) -> np.ndarray:
    if not isinstance(scores, np.ndarray):
        _fail(name, f"score() {when} returned {type(scores).__name__}, expected np.ndarray")
    if scores.shape != (n,):
        _fail(name, f"score() {when} returned shape {scores.shape} for {n} images, expected "
                    f"({n},)")
    if not np.issubdtype(scores.dtype, np.floating):
        _fail(name, f"score() {when} returned dtype {scores.dtype}, expected floats")
    if not np.all(np.isfinite(scores)):
        _fail(name, f"score() {when} returned non-finite values: {scores!r}")
    return scores


def _fit(name: str, method: Method, problem) -> None:
    train = problem.train
    before = set(vars(method))
    params = method.get_params()
    copies = {k: getattr(train, k).copy() for k in ("normal", "anomalies")}
    if train.outliers is not None:
        copies["outliers"] = train.outliers.copy()
    out = method.fit(train, problem.context)
    if out is not method:
        _fail(name, f"fit() must return self, returned {type(out).__name__}")
    for k, arr in copies.items():
        if not np.array_equal(arr, getattr(train, k)):
            _fail(name, f"fit() modified TrainData.{k} in place")
    added = [a for a in set(vars(method)) - before
             if not (a.endswith("_") or a.startswith("_"))]
    if added:
        _fail(name, f"fit() set attributes {sorted(added)}; learned state must end in '_' "
                    f"(scikit-learn convention) so it is not mistaken for a parameter")
    if method.get_params() != params:
        _fail(name, f"fit() changed the parameters from {params!r} to {method.get_params()!r}")


def _score(name: str, method: Method, images: np.ndarray, when: str) -> np.ndarray:
    copy = images.copy()
    scores = method.score(images)
    if not np.array_equal(copy, images):
        _fail(name, f"score() {when} modified its input images in place")
    return _check_scores(name, scores, len(images), when)


def _check_used_outliers(name: str, method: Method, expected: bool, when: str) -> None:
    if hasattr(method, "used_outliers_") and bool(method.used_outliers_) != expected:
        _fail(name, f"used_outliers_ is {method.used_outliers_!r} {when}, expected {expected}")


def _check_state_dict(name: str, method: Method) -> None:
    import torch

    state = method.state_dict()
    if not isinstance(state, dict):
        _fail(name, f"state_dict() returned {type(state).__name__}, expected a dict")
    buf = io.BytesIO()
    try:
        torch.save(state, buf)
        buf.seek(0)
        torch.load(buf, weights_only=True)
    except Exception as exc:  # any failure here means --save-models would break
        _fail(name, f"state_dict() does not survive torch.save/torch.load(weights_only=True): "
                    f"{exc!r}; keep it to tensors and plain containers")


def check_method(name: str, *, overrides: Optional[dict] = None, size: int = 32) -> None:
    """Run the method contract on the registered method ``name`` (see the module docstring).

    ``overrides``: parameters applied last (e.g. a smaller budget, or a value the plugin
    needs on a CPU); ``size``: toy image side in pixels. Raises AssertionError naming the
    method and the rule it breaks; returns None when every check passes."""
    cls = get_method_entry(name).cls
    _check_class(name, cls)
    params = contract_params(name, overrides)
    fresh = create_method(name, **params)
    entry = get_method_entry(name)
    _check_params(name, fresh, {**cls.default_params(), **entry.defaults, **params})

    shots = 2 if cls.uses_labeled_anomalies else 0
    n_out = 6 if cls.uses_outliers else 0
    common = dict(size=size, n_normal=10, shots=shots, n_test=4)
    data_a = toy_problem(seed=1, n_outliers=n_out, **common)
    data_b = toy_problem(seed=2, **common)
    test = data_b.test_images

    try:
        fresh.score(test)
    except NotFittedError:
        pass
    except Exception as exc:
        _fail(name, f"score() before fit() raised {type(exc).__name__}: {exc} — expected "
                    f"bench.api.NotFittedError (use self._check_fitted(...))")
    else:
        _fail(name, "score() before fit() returned scores; it must raise "
                    "bench.api.NotFittedError (use self._check_fitted(...))")

    # One instance fitted on A then B; a fresh instance fitted on B. Equal scores show both
    # determinism under the seed and that the second fit forgot the first.
    first = create_method(name, **params)
    _fit(name, first, data_a)
    _check_used_outliers(name, first, cls.uses_outliers, "after a fit with outliers")
    _score(name, first, data_a.test_images, "after fit(A)")
    _fit(name, first, data_b)
    _check_used_outliers(name, first, False, "after a fit without outliers")
    refit_scores = _score(name, first, test, "after fit(A) then fit(B)")

    _fit(name, fresh, data_b)
    fresh_scores = _score(name, fresh, test, "after fit(B)")
    _score(name, fresh, test[:1], "on a single image")
    if not np.allclose(refit_scores, fresh_scores, rtol=_RTOL, atol=_ATOL):
        # Tell apart "not deterministic" from "remembers the previous fit" with one more fit.
        third = create_method(name, **params)
        _fit(name, third, data_b)
        third_scores = _score(name, third, test, "after fit(B)")
        if not np.allclose(third_scores, fresh_scores, rtol=_RTOL, atol=_ATOL):
            _fail(name, f"two fresh instances fitted on the same data with the same seed give "
                        f"different scores (max difference "
                        f"{np.max(np.abs(third_scores - fresh_scores)):.3g}); seed every random "
                        f"draw from TrainData.seed (seed_everything + explicit generators)")
        _fail(name, f"fit(B) after fit(A) gives other scores than a fresh fit(B) (max "
                    f"difference {np.max(np.abs(refit_scores - fresh_scores)):.3g}); fit() "
                    f"must start from scratch and forget earlier fits")
    _check_state_dict(name, fresh)
