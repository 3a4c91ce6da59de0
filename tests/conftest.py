import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import kernel_polling  # noqa: E402

# nbmake executes the chapters with nbclient in this process: poll the kernel in short slices,
# or a missed wake-up stalls a cell until its timeout (see tools/kernel_polling.py)
kernel_polling.install()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("UNCLIP_LITE_PROFILE", "smoke")
# Under pytest-xdist each worker (and each notebook kernel it starts, which inherits this
# environment) takes one thread: two workers of two threads each on a 2-core machine spend
# their time in each other's spin-waits (we measured notebooks running 5x slower).
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"


def pytest_collection_modifyitems(config, items):
    """Notebooks run one after another on one xdist worker (``--dist loadgroup``): never two
    Jupyter kernels at once beside the unit tests, so a notebook's time is its own."""
    for item in items:
        if str(item.path).endswith(".ipynb"):
            item.add_marker(pytest.mark.xdist_group("notebooks"))


@pytest.fixture(autouse=True)
def _small_torch():
    """Tests run on a 2-core machine beside other work: keep torch to one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
