"""The contract every method must meet, ours or a plugin's, as named checks — the counterpart
of scikit-learn's ``check_estimator`` / ``parametrize_with_checks``.

Each check is a function named after its rule, whose docstring states the rule; it raises
``AssertionError`` with the reason when the method breaks it. The checks fit the method on
tiny :func:`bench.testing.toy_problem` data (32 px, ten normal images) with the method's
declared :meth:`~bench.api.Method.test_params` plus the caller's ``overrides``; the fits are
shared between checks (one instance fitted on A then B, a fresh one on B; a third fit only
to tell apart "not deterministic" from "remembers the previous fit").

Use::

    from bench.contract import assert_contract, check_method, parametrize_with_checks

    assert_contract("mymethod")                     # one AssertionError naming every failure
    for name, result in check_method("mymethod"):   # one (check name, CheckResult) per check
        print(name, result.passed, result.reason)

    @parametrize_with_checks(["mymethod"])          # one pytest test per check
    def test_contract(method, check):
        check(method)

``bench check-method NAME|--all|module:Class`` prints the same checks, one line each.
"""
from __future__ import annotations

import importlib
import io
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np

from .api import OUTLIER_POLICIES, Method, MethodCard, NotFittedError, Resources, SplitInfo
from .registry import create_method, get_method_entry, list_methods
from .testing import toy_problem

# Tolerance for "the same scores": CPU runs under one seed repeat exactly; this only absorbs
# harmless float reordering.
_RTOL, _ATOL = 1e-5, 1e-6


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: passed, or the reason it failed."""

    passed: bool
    reason: str = ""


class MethodUnderTest:
    """One method as the checks see it: how to build it, with which parameters, and the fits
    the checks share (computed on first use, so a check that fails to fit fails alone)."""

    def __init__(self, target: Union[str, type], overrides: Optional[dict] = None,
                 size: int = 32):
        self.label, self.cls, self.defaults, self.build = resolve_target(target)
        self.overrides = dict(overrides or {})
        self.size = size

    def fail(self, msg: str) -> None:
        raise AssertionError(f"method {self.label!r}: {msg}")

    @cached_property
    def params(self) -> dict:
        valid = self.cls.param_names()
        params = dict(self.cls.test_params())
        for what, keys in (("test_params()", params), ("overrides", self.overrides)):
            unknown = set(keys) - set(valid)
            if unknown:
                self.fail(f"{what} names unknown parameters {sorted(unknown)}; valid: "
                          f"{', '.join(valid)}")
        params.update(self.overrides)
        return params

    def new(self) -> Method:
        return self.build(**self.params)

    @cached_property
    def data_a(self):
        n_out = 6 if self.cls.uses_outliers else 0
        return toy_problem(seed=1, n_outliers=n_out, **self._common)

    @cached_property
    def data_b(self):
        return toy_problem(seed=2, **self._common)

    @property
    def _common(self) -> dict:
        shots = 2 if self.cls.uses_labeled_anomalies else 0
        return dict(size=self.size, n_normal=10, shots=shots, n_test=4)

    @cached_property
    def first(self) -> Method:
        """One instance fitted on A (with outliers when the method uses them)..."""
        return _fit(self, self.new(), self.data_a)

    @cached_property
    def first_scores_a(self) -> np.ndarray:
        return _score(self, self.first, self.data_a.test_images, "after fit(A)")

    @cached_property
    def refit_scores(self) -> np.ndarray:
        """... then on B: its scores must equal a fresh fit on B."""
        self.first_scores_a  # noqa: B018 — scored after fit(A), before fit(B)
        self.used_outliers_after_a = getattr(self.first, "used_outliers_", None)
        _fit(self, self.first, self.data_b)
        return _score(self, self.first, self.data_b.test_images, "after fit(A) then fit(B)")

    @cached_property
    def fresh(self) -> Method:
        return _fit(self, self.new(), self.data_b)

    @cached_property
    def fresh_scores(self) -> np.ndarray:
        return _score(self, self.fresh, self.data_b.test_images, "after fit(B)")

    def same(self, a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.allclose(a, b, rtol=_RTOL, atol=_ATOL))


def resolve_target(target: Union[str, type]) -> tuple[str, type, dict, Callable[..., Method]]:
    """A registered name, ``"module:Class"`` or a Method subclass → (label, class, variant
    defaults, constructor). A registered name wins over ``module:Class`` (adapter names such
    as ``anomalib:patchcore`` have a colon too). Raises ValueError naming what could not be
    found."""
    if isinstance(target, type):
        return target.__name__, target, {}, target
    if ":" in target and target not in list_methods():
        module, _, attr = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"{target!r}: cannot import {attr} from module {module} "
                             f"({exc}); give module:Class of a bench.Method subclass") from None
        return target, cls, {}, cls
    entry = get_method_entry(target)
    return target, entry.cls, dict(entry.defaults), \
        (lambda **params: create_method(target, **params))


def _check_scores(m: MethodUnderTest, scores: Any, n: int, when: str) -> np.ndarray:
    if not isinstance(scores, np.ndarray):
        m.fail(f"score() {when} returned {type(scores).__name__}, expected np.ndarray")
    if scores.shape != (n,):
        m.fail(f"score() {when} returned shape {scores.shape} for {n} images, expected ({n},)")
    if not np.issubdtype(scores.dtype, np.floating):
        m.fail(f"score() {when} returned dtype {scores.dtype}, expected floats")
    if not np.all(np.isfinite(scores)):
        m.fail(f"score() {when} returned non-finite values: {scores!r}")
    return scores


def _fit(m: MethodUnderTest, method: Method, problem) -> Method:
    """Fit and check the rules of ``fit`` itself (see :func:`check_fit_rules`)."""
    train = problem.train
    before = set(vars(method))
    params = method.get_params()
    copies = {k: getattr(train, k).copy() for k in ("normal", "anomalies")}
    if train.outliers is not None:
        copies["outliers"] = train.outliers.copy()
    out = method.fit(train, problem.context)
    if out is not method:
        m.fail(f"fit() must return self, returned {type(out).__name__}")
    for k, arr in copies.items():
        if not np.array_equal(arr, getattr(train, k)):
            m.fail(f"fit() modified TrainData.{k} in place")
    added = [a for a in set(vars(method)) - before
             if not (a.endswith("_") or a.startswith("_"))]
    if added:
        m.fail(f"fit() set attributes {sorted(added)}; learned state must end in '_' "
               f"(scikit-learn convention) so it is not mistaken for a parameter")
    if method.get_params() != params:
        m.fail(f"fit() changed the parameters from {params!r} to {method.get_params()!r}")
    return method


def _score(m: MethodUnderTest, method: Method, images: np.ndarray, when: str) -> np.ndarray:
    copy = images.copy()
    scores = method.score(images)
    if not np.array_equal(copy, images):
        m.fail(f"score() {when} modified its input images in place")
    return _check_scores(m, scores, len(images), when)


# -- the checks, in the order they run ---------------------------------------------------------
def check_class_attributes(m: MethodUnderTest) -> None:
    """The class is a ``bench.Method`` with a ``MethodCard`` naming its paper, boolean
    ``uses_labeled_anomalies`` / ``uses_outliers``, a non-empty string ``version`` and a
    known ``outlier_policy``."""
    cls = m.cls
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        m.fail(f"{cls!r} is not a bench.Method subclass")
    card = getattr(cls, "card", None)
    if not isinstance(card, MethodCard) or not card.paper:
        m.fail("the class needs a `card = MethodCard(paper=...)` naming its paper")
    for attr in ("uses_labeled_anomalies", "uses_outliers"):
        if not isinstance(getattr(cls, attr, None), bool):
            m.fail(f"class attribute {attr} must be a bool, got {getattr(cls, attr, None)!r}")
    if not isinstance(cls.version, str) or not cls.version:
        m.fail(f"class attribute version must be a non-empty string, got {cls.version!r}")
    if cls.outlier_policy not in OUTLIER_POLICIES:
        m.fail(f"outlier_policy {cls.outlier_policy!r} is not one of "
               f"{', '.join(OUTLIER_POLICIES)}")


def check_declared_properties(m: MethodUnderTest) -> None:
    """``input_size`` is a positive int; ``resources`` a ``bench.api.Resources``;
    ``test_params()``, ``quick_params`` and ``budget_params()`` name real parameters with
    JSON values."""
    cls = m.cls
    size = cls.input_size
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        m.fail(f"input_size must be a positive int (pixels), got {size!r}")
    if not isinstance(cls.resources, Resources):
        m.fail(f"resources must be a bench.api.Resources, got {cls.resources!r}")
    valid = set(cls.param_names())
    for what, params in (("test_params()", cls.test_params()),
                         ("quick_params", cls.quick_params),
                         ("budget_params(2)", cls.budget_params(2))):
        if not isinstance(params, dict):
            m.fail(f"{what} must be a dict, got {type(params).__name__}")
        unknown = set(params) - valid
        if unknown:
            m.fail(f"{what} names unknown parameters {sorted(unknown)}; valid: "
                   f"{', '.join(sorted(valid))}")
        try:
            json.dumps(params)
        except (TypeError, ValueError) as exc:
            m.fail(f"{what} is not JSON-serialisable ({exc}): {params!r}")


def check_params_round_trip(m: MethodUnderTest) -> None:
    """``__init__`` stores every parameter unchanged: ``get_params()`` is JSON-serialisable,
    equals the defaults updated with the constructor's arguments, and building the method
    from it gives the same parameters again."""
    method = m.new()
    params = method.get_params()
    try:
        json.dumps(params)
    except (TypeError, ValueError) as exc:
        m.fail(f"get_params() is not JSON-serialisable ({exc}): {params!r}")
    given = {**m.cls.default_params(), **m.defaults, **m.params}
    for k, v in given.items():
        if params.get(k) != v:
            m.fail(f"get_params()[{k!r}] is {params.get(k)!r} but the constructor got "
                   f"{v!r}; __init__ must store every parameter unchanged")
    again = m.build(**params).get_params()
    if again != params:
        m.fail(f"get_params() does not round-trip through the constructor: {params!r} "
               f"became {again!r}")


def check_score_before_fit(m: MethodUnderTest) -> None:
    """``score`` before ``fit`` raises ``bench.api.NotFittedError``."""
    try:
        m.new().score(m.data_b.test_images)
    except NotFittedError:
        return
    except Exception as exc:
        m.fail(f"score() before fit() raised {type(exc).__name__}: {exc} — expected "
               f"bench.api.NotFittedError (use self._check_fitted(...))")
    m.fail("score() before fit() returned scores; it must raise bench.api.NotFittedError "
           "(use self._check_fitted(...))")


def check_fit_rules(m: MethodUnderTest) -> None:
    """``fit(train, ctx)`` returns ``self``, leaves the training arrays and the parameters
    unchanged, and only adds attributes whose names end (or start) with ``_``."""
    m.fresh  # noqa: B018 — the fit checks its own rules


def check_score_output(m: MethodUnderTest) -> None:
    """``score`` returns a float ``np.ndarray`` of shape (n,), finite, for n images and for
    one image, and leaves its input unchanged."""
    m.fresh_scores  # noqa: B018
    _score(m, m.fresh, m.data_b.test_images[:1], "on a single image")


def check_deterministic(m: MethodUnderTest) -> None:
    """Two fresh instances fitted on the same data under the same seed give the same scores:
    every random draw comes from ``RunContext.seed``."""
    if m.same(m.fresh_scores, m.refit_scores):
        return  # fresh and refitted agree: both are reproducible
    other = _fit(m, m.new(), m.data_b)
    scores = _score(m, other, m.data_b.test_images, "after fit(B)")
    if not m.same(scores, m.fresh_scores):
        m.fail(f"two fresh instances fitted on the same data with the same seed give "
               f"different scores (max difference "
               f"{np.max(np.abs(scores - m.fresh_scores)):.3g}); seed every random draw from "
               f"RunContext.seed (seed_everything + explicit generators)")


def check_refit_resets(m: MethodUnderTest) -> None:
    """Fitting again forgets the first fit: scores after fit(A), fit(B) equal those of a
    fresh fit(B) (A has external outliers when the method uses them, B has none)."""
    if not m.same(m.refit_scores, m.fresh_scores):
        check_deterministic(m)  # a clearer reason when the method is not deterministic
        m.fail(f"fit(B) after fit(A) gives other scores than a fresh fit(B) (max difference "
               f"{np.max(np.abs(m.refit_scores - m.fresh_scores)):.3g}); fit() must start "
               f"from scratch and forget earlier fits")


def check_used_outliers(m: MethodUnderTest) -> None:
    """A ``used_outliers_`` attribute, if the method sets one, is true after a fit with
    outliers for a method that uses them, and false after a fit without any."""
    m.refit_scores  # noqa: B018 — records used_outliers_ after fit(A)
    after_a = m.used_outliers_after_a
    if after_a is not None and bool(after_a) != m.cls.uses_outliers:
        m.fail(f"used_outliers_ is {after_a!r} after a fit with outliers, expected "
               f"{m.cls.uses_outliers}")
    after_b = getattr(m.first, "used_outliers_", None)
    if after_b is not None and bool(after_b):
        m.fail(f"used_outliers_ is {after_b!r} after a fit without outliers, expected False")


def check_state_dict(m: MethodUnderTest) -> None:
    """``state_dict()`` of a fitted method is a dict that survives ``torch.save`` and
    ``torch.load(weights_only=True)`` (what ``--save-models`` writes)."""
    import torch

    state = m.fresh.state_dict()
    if not isinstance(state, dict):
        m.fail(f"state_dict() returned {type(state).__name__}, expected a dict")
    buf = io.BytesIO()
    try:
        torch.save(state, buf)
        buf.seek(0)
        torch.load(buf, weights_only=True)
    except Exception as exc:  # any failure here means --save-models would break
        m.fail(f"state_dict() does not survive torch.save/torch.load(weights_only=True): "
               f"{exc!r}; keep it to tensors and plain containers")


def check_skip(m: MethodUnderTest) -> None:
    """``skip(split)`` returns None (the method runs) or a non-empty reason string, for the
    splits the harness gives the method (with and without outliers)."""
    shots = 10 if m.cls.uses_labeled_anomalies else 0
    for outliers in (False, True):
        info = SplitInfo(dataset="synthetic", subset="alpha", setting="general",
                         known_class=None, shots=shots, n_train_normal=10,
                         n_train_anomalies=shots, has_outliers=outliers)
        reason = m.new().skip(info)
        if reason is not None and not (isinstance(reason, str) and reason.strip()):
            m.fail(f"skip() returned {reason!r}; return None to run or a non-empty reason")


def check_adapts(m: MethodUnderTest) -> None:
    """A method that declares ``adapts`` fits from another fit's saved model
    (``ctx.inputs['model.pt']``) on normal images alone (the cross-domain stage) and scores.
    (The planner gives such inputs to adapting methods only.)"""
    import dataclasses
    import os
    import tempfile

    import torch

    from .api import MODEL_ARTEFACT, TrainData

    if not m.cls.adapts:
        return
    problem = m.data_b
    train = TrainData(normal=problem.train.normal,
                      anomalies=problem.train.normal[:0], anomaly_classes=[])
    fd, path = tempfile.mkstemp(suffix=".pt")
    os.close(fd)
    try:
        torch.save(m.fresh.state_dict(), path)
        ctx = dataclasses.replace(problem.context, inputs={MODEL_ARTEFACT: path})
        try:
            adapted = m.new().fit(train, ctx)
        except Exception as exc:
            m.fail(f"adapts = True, but fit() from a saved model on normal images only "
                   f"raised {exc!r}")
        _check_scores(m, adapted.score(problem.test_images), len(problem.test_images),
                      "after an adapting fit")
    finally:
        os.unlink(path)


def check_embed(m: MethodUnderTest) -> None:
    """A method that declares ``embeds`` returns (N, d) finite features per image from
    ``embed(images)``, the same on a second call (Fig. 1's t-SNE reads them)."""
    if not m.cls.embeds:
        return
    images = m.data_b.test_images
    try:
        feats = m.fresh.embed(images)
    except Exception as exc:
        m.fail(f"embeds = True, but embed(images) raised {exc!r}")
    if not isinstance(feats, np.ndarray) or feats.ndim != 2 or len(feats) != len(images) \
            or feats.shape[1] < 1:
        m.fail(f"embed() returned {getattr(feats, 'shape', type(feats))} for {len(images)} "
               f"images, expected an array (N, d)")
    if not np.isfinite(feats).all():
        m.fail("embed() returned non-finite features")
    if not m.same(feats, m.fresh.embed(images)):
        m.fail("embed() gave other features on a second call with the same images")


CHECKS: tuple[Callable[[MethodUnderTest], None], ...] = (
    check_class_attributes, check_declared_properties, check_params_round_trip,
    check_score_before_fit, check_fit_rules, check_score_output, check_deterministic,
    check_refit_resets, check_used_outliers, check_state_dict, check_skip, check_adapts,
    check_embed)


def check_name(check: Callable) -> str:
    return check.__name__.removeprefix("check_")


def check_method(target: Union[str, type], *, overrides: Optional[dict] = None,
                 size: int = 32) -> Iterator[tuple[str, CheckResult]]:
    """Run every check on ``target`` (a registered name, ``"module:Class"`` or a Method
    subclass) and yield ``(check name, CheckResult)`` in order. ``overrides``: parameters
    applied after ``test_params()``; ``size``: toy image side in pixels."""
    m = MethodUnderTest(target, overrides, size)
    for check in CHECKS:
        yield check_name(check), run_one(m, check)


def run_one(m: MethodUnderTest, check: Callable[[MethodUnderTest], None]) -> CheckResult:
    try:
        check(m)
    except AssertionError as exc:
        return CheckResult(False, str(exc))
    except Exception as exc:  # the method raised: that is the check's failure
        return CheckResult(False, f"method {m.label!r}: {type(exc).__name__}: {exc}")
    return CheckResult(True)


def assert_contract(target: Union[str, type], *, overrides: Optional[dict] = None,
                    size: int = 32) -> None:
    """Raise one AssertionError naming every failed check and its reason; None if all
    pass."""
    failed = [f"{name}: {r.reason}" for name, r in check_method(target, overrides=overrides,
                                                               size=size) if not r.passed]
    if failed:
        raise AssertionError("contract checks failed:\n" + "\n".join(failed))


_SUBJECTS: dict[tuple, MethodUnderTest] = {}


def run_check(target: Union[str, type], check: Callable[[MethodUnderTest], None],
              overrides: Optional[dict] = None) -> None:
    """Run one check, sharing the fits with the other checks of the same target (the
    pytest form); raises AssertionError with the reason."""
    key = (target, json.dumps(overrides or {}, sort_keys=True, default=str))
    if key not in _SUBJECTS:
        _SUBJECTS.clear()  # one method's fits at a time: memory stays small
        _SUBJECTS[key] = MethodUnderTest(target, overrides)
    result = run_one(_SUBJECTS[key], check)
    if not result.passed:
        raise AssertionError(f"{check_name(check)}: {result.reason}")


def parametrize_with_checks(targets: Optional[list] = None, overrides: Optional[dict] = None):
    """A ``pytest.mark.parametrize`` over (method, check) for every check and every target
    (default: every registered method). The test receives ``method`` (the target) and
    ``check`` (a callable running that check on it)."""
    import pytest

    targets = list_methods() if targets is None else list(targets)
    cases = [pytest.param(t, _bound(c, overrides),
                          id=f"{t if isinstance(t, str) else t.__name__}-{check_name(c)}")
             for t in targets for c in CHECKS]
    return pytest.mark.parametrize("method, check", cases)


def _bound(check: Callable[[MethodUnderTest], None], overrides: Optional[dict]):
    def run(target):
        run_check(target, check, overrides)

    run.__name__ = check.__name__
    return run
