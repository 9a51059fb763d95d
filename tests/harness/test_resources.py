"""Cluster executors ask for what each method declares (`Method.resources`), not a
one-size default."""
from bench.api import Resources
from bench.executors import resources_for
from bench.methods.common.torch_method import TorchMethod
from bench.plan import SweepConfig, expand
from bench.registry import method_class


def test_requests_follow_the_declared_resources(toy_root):
    plan = expand(SweepConfig(methods=["devnet", "pixelknn"], datasets=[str(toy_root)],
                              subsets=["alpha"], setting="general", seeds=1, shots=[1]))
    by_method = {s.method: s for s in plan.specs}
    devnet = resources_for(by_method["devnet"], use_gpu=True)
    assert devnet == TorchMethod.resources and devnet.gpu_fraction < 1  # packs on a GPU
    assert resources_for(by_method["pixelknn"], use_gpu=True) == \
        method_class("pixelknn").resources
    cpu = resources_for(by_method["devnet"], use_gpu=False)
    assert cpu == Resources(gpu_fraction=0.0, cpus=1, memory_gb=devnet.memory_gb)
