"""osad-bench: benchmark harness for open-set supervised anomaly detection.

The public API a plugin author needs::

    from bench import Method, TrainData, MethodCard, register_method, list_methods, create_method
    from bench import Dataset, register_dataset, list_datasets, get_dataset
"""
from .api import MAX_SHOTS, Method, MethodCard, NotFittedError, SplitInfo, TrainData
from .registry import (PAPER_METHODS, create_method, get_dataset, list_datasets, list_methods,
                       register_dataset, register_method)

__version__ = "0.1.0"


def __getattr__(name):  # Dataset lives in bench.datasets; import lazily (it imports plugins)
    if name == "Dataset":
        from .datasets.base import Dataset
        return Dataset
    if name == "check_method":  # the contract suite imports torch; load it on demand
        from .contract import check_method
        return check_method
    raise AttributeError(name)


__all__ = ["MAX_SHOTS", "Method", "MethodCard", "NotFittedError", "SplitInfo", "TrainData",
           "PAPER_METHODS", "create_method", "list_methods", "register_method",
           "register_dataset", "list_datasets", "get_dataset", "Dataset", "check_method",
           "__version__"]
