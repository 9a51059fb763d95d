"""The method registry: duplicate names, wildcards, variants, construction checks."""
import pytest

import bench
from bench import Method, create_method, list_methods, register_method
from bench.registry import RegistryError, method_defaults, resolve_method_names


class _Toy(Method):
    def __init__(self, alpha: float = 1.0, mode: str = "a"):
        self.alpha = alpha
        self.mode = mode

    def fit(self, train, ctx=None):
        return self

    def score(self, images):
        return images.reshape(len(images), -1).mean(1)


def test_public_api_importable_from_top():
    for name in ("Method", "register_method", "list_methods", "create_method", "TrainData",
                 "register_dataset", "list_datasets", "get_dataset", "Dataset"):
        assert hasattr(bench, name), name


def test_duplicate_name_raises():
    register_method("zz_toy_dup")(_Toy)
    with pytest.raises(RegistryError, match="already registered"):
        register_method("zz_toy_dup")(_Toy)


def test_variant_defaults_and_params():
    register_method("zz_toy_b", defaults={"mode": "b"}, variant_of="zz_toy_dup")(_Toy)
    m = create_method("zz_toy_b")
    assert m.get_params() == {"alpha": 1.0, "mode": "b"} and m.name == "zz_toy_b"
    assert create_method("zz_toy_b", mode="c").mode == "c"
    assert method_defaults("zz_toy_b")["mode"] == "b"
    with pytest.raises(RegistryError, match="no parameter"):
        create_method("zz_toy_b", beta=2)
    with pytest.raises(RegistryError, match="unknown parameters"):
        register_method("zz_toy_c", defaults={"nope": 1})(_Toy)


def test_wildcards_and_unknown_names():
    assert set(list_methods("zz_toy_*")) >= {"zz_toy_dup", "zz_toy_b"}
    assert resolve_method_names("zz_toy_*,pixelknn")[-1] == "pixelknn"
    with pytest.raises(RegistryError, match="matches no registered method"):
        resolve_method_names("nothing_like_this*")
    with pytest.raises(RegistryError, match="unknown method 'devnett'"):
        resolve_method_names("devnett")


def test_bad_names_and_classes():
    with pytest.raises(RegistryError):
        register_method("Bad Name")
    with pytest.raises(RegistryError, match="not a bench.Method"):
        register_method("zz_notamethod")(object)

    class NoKw(Method):
        def __init__(self, **kw):
            pass
    with pytest.raises(TypeError, match="explicitly"):
        NoKw.param_names()

    class NoScore(Method):
        def fit(self, train, ctx=None):
            return self
    register_method("zz_noscore")(NoScore)
    with pytest.raises(TypeError, match="abstract"):
        create_method("zz_noscore")
