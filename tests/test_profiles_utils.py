import pytest
import torch

from unclip_lite import get_profile
from unclip_lite.utils import pick_device, seed_everything
from unclip_lite.viz import image_grid


def test_profiles(monkeypatch):
    monkeypatch.delenv("UNCLIP_LITE_PROFILE", raising=False)
    assert get_profile().name == "quick"
    monkeypatch.setenv("UNCLIP_LITE_PROFILE", "smoke")
    assert get_profile().smoke and get_profile().pick(1, 2, 3) == 1
    assert get_profile("full").pick(smoke=1, quick=2) == 2  # full falls back to quick
    with pytest.raises(ValueError, match="unknown profile 'fast'.*smoke, quick, full"):
        get_profile("fast")


def test_seed_and_device():
    g = seed_everything(5)
    a = torch.rand(3, generator=g), torch.rand(3)
    g = seed_everything(5)
    assert torch.equal(a[0], torch.rand(3, generator=g)) and torch.equal(a[1], torch.rand(3))
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")


def test_image_grid_layout():
    images = torch.stack([torch.full((3, 4, 4), i / 10) for i in range(5)])
    grid = image_grid(images, nrow=3, padding=1, pad_value=1.0)
    assert grid.shape == (3, 2 * 5 + 1, 3 * 5 + 1)
    assert torch.all(grid[:, 1:5, 1:5] == 0) and torch.allclose(grid[:, 6:10, 1:5], torch.tensor(0.3))
    with pytest.raises(ValueError, match="expected images"):
        image_grid(torch.zeros(3, 4, 4))
