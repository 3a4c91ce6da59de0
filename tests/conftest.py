import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("UNCLIP_LITE_PROFILE", "smoke")


@pytest.fixture(autouse=True)
def _small_torch():
    """Tests run on a 2-core machine beside other work: keep torch to one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
