"""osad-bench: benchmark harness for open-set supervised anomaly detection.

The public API a plugin author needs::

    from bench import Method, TrainData, RunContext, MethodCard, register_method, list_methods
    from bench import create_method, Resources
    from bench.methods.common.torch_method import TorchMethod   # imports torch
    from bench import Dataset, register_dataset, list_datasets, get_dataset
"""
from .api import (DEFAULT_INPUT_SIZE, MAX_SHOTS, Method, MethodCard, NotFittedError, Resources,
                  RunContext, SplitInfo, TrainData)
from .registry import (PAPER_METHODS, create_method, get_dataset, list_datasets, list_methods,
                       register_dataset, register_method)

__version__ = "0.1.0"


def __getattr__(name):  # Dataset lives in bench.datasets; import lazily (it imports plugins)
    if name == "Dataset":
        from .datasets.base import Dataset
        return Dataset
    if name in ("check_method", "assert_contract"):  # the contract suite: load on demand
        from . import contract
        return getattr(contract, name)
    raise AttributeError(name)


__all__ = ["DEFAULT_INPUT_SIZE", "MAX_SHOTS", "Method", "MethodCard", "NotFittedError",
           "Resources", "RunContext", "SplitInfo", "TrainData",
           "PAPER_METHODS", "create_method", "list_methods", "register_method",
           "register_dataset", "list_datasets", "get_dataset", "Dataset", "check_method",
           "assert_contract",
           "__version__"]
