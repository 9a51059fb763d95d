"""bf16 autocast and channels-last on the TorchMethod base, at toy size on the CPU (bf16
autocast runs there too): the precision changes the arithmetic, not the weights' dtype, and
channels-last changes the layout, not the arithmetic."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from bench.api import RunContext
from bench.registry import create_method, method_class
from bench.testing import toy_problem


@pytest.fixture(scope="module")
def problem():
    return toy_problem(size=32, seed=0)


def test_bf16_autocasts_forward_passes_and_keeps_fp32_weights(problem):
    params = method_class("devnet").test_params()
    fp32 = create_method("devnet", **params).fit(problem.train, problem.context)
    ctx16 = replace(problem.context, precision="bf16")
    bf16 = create_method("devnet", **params).fit(problem.train, ctx16)
    s32, s16 = fp32.score(problem.test_images), bf16.score(problem.test_images)
    assert s16.dtype == np.float64 and np.isfinite(s16).all()
    assert not np.array_equal(s32, s16)  # bfloat16 arithmetic really ran
    assert all(p.dtype == torch.float32 for p in bf16.model_.parameters())
    seen = {}
    for name, m in (("fp32", fp32), ("bf16", bf16)):
        conv = next(c for c in m.model_.modules() if isinstance(c, torch.nn.Conv2d))

        def record(mod, inputs, out, name=name):  # returns None: the output is kept
            seen.setdefault(name, out.dtype)

        hook = conv.register_forward_hook(record)
        m.score(problem.test_images[:2])
        hook.remove()
    assert seen == {"fp32": torch.float32, "bf16": torch.bfloat16}
    assert np.array_equal(s16, create_method("devnet", **params).fit(
        problem.train, ctx16).score(problem.test_images))  # seeded: repeats exactly


def test_channels_last_changes_layout_not_scores(problem):
    params = method_class("devnet").test_params()
    b = create_method("devnet", **params).fit(problem.train,
                                              replace(problem.context, channels_last=True))
    conv = next(m for m in b.model_.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # The same weights scored in both layouts agree up to float summation order (training
    # in another layout drifts further, as another GPU kernel would: not in the run id).
    channels_last = b.score(problem.test_images)
    b.model_.to(memory_format=torch.contiguous_format)
    np.testing.assert_allclose(channels_last, b.score(problem.test_images), rtol=1e-4,
                               atol=1e-5)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision='fp16'"):
        RunContext(precision="fp16")
