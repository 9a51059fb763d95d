"""Method tests train real (tiny) networks. One intra-op torch thread per test process is
several times faster than oversubscribed threads on a small shared CPU and keeps run time
predictable."""
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
