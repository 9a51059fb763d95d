"""The anomalib adapter: registered only when anomalib is installed; then an anomalib model
trains on the normal images alone and detects the toy defects with its raw image score.
The training tests skip, naming the install command, where the optional extra is missing."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bench.methods import anomalib_adapter
from bench.methods.anomalib_adapter import (ANOMALIB_MODELS, INSTALL_HINT, AnomalibImageModel,
                                            anomalib_available)
from bench.registry import list_methods, resolve_method_names
from bench.testing import toy_problem

needs_anomalib = pytest.mark.skipif(not anomalib_available(),
                                    reason=f"anomalib is not installed: {INSTALL_HINT}")
SMALL = {"model_args": '{"backbone": "resnet18", "coreset_sampling_ratio": 0.05}',
         "max_epochs": 1, "batch_size": 8}


def test_registration_follows_the_optional_install():
    names = [f"anomalib:{m}" for m in ANOMALIB_MODELS]
    registered = set(list_methods("anomalib:*"))
    assert registered == (set(names) if anomalib_available() else set())
    assert not set(resolve_method_names("all")) & set(names)
    assert set(resolve_method_names("recent")) >= registered
    assert AnomalibImageModel.uses_labeled_anomalies is False  # shots = 0, like KDAD


def test_weights_rule_and_bad_arguments():
    assert AnomalibImageModel._weights_args("none") == {"pre_trained": False}
    assert AnomalibImageModel._weights_args("imagenet") == {"pre_trained": True}
    with pytest.raises(ValueError, match="--weights '/some/dir'"):
        AnomalibImageModel._weights_args("/some/dir")
    with pytest.raises(ValueError, match="not a JSON object"):
        AnomalibImageModel(model_args="{backbone")._args()


def test_missing_anomalib_fails_with_the_install_command(monkeypatch):
    monkeypatch.setattr(anomalib_adapter, "anomalib_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[anomalib\]'"):
        AnomalibImageModel()._build("none", 32)


@needs_anomalib
def test_patchcore_learns_toy_defects_from_normals_only(capfd):
    problem = toy_problem(size=32, seed=0, shots=0)
    m = AnomalibImageModel(model="patchcore", **SMALL).fit(problem.train, problem.context)
    printed = capfd.readouterr()
    assert "GPU available" not in printed.out + printed.err  # Lightning's info kept quiet
    s = m.score(problem.test_images)
    assert s.shape == (len(problem.test_images),) and np.isfinite(s).all()
    assert roc_auc_score(problem.test_labels, s) >= 0.8
    again = AnomalibImageModel(model="patchcore", **SMALL).fit(problem.train, problem.context)
    assert np.allclose(again.score(problem.test_images[:4]), s[:4])


@needs_anomalib
def test_anomalib_version_is_in_the_run_version():
    from importlib.metadata import version

    assert AnomalibImageModel.full_version() == f"1+anomalib{version('anomalib')}"


@needs_anomalib
def test_unknown_anomalib_model_is_named():
    problem = toy_problem(size=32, seed=0, shots=0, n_normal=2, n_test=1)
    with pytest.raises(ValueError, match="no image model 'nosuchmodel'"):
        AnomalibImageModel(model="nosuchmodel").fit(problem.train)
