"""CLIP's loss against a naive reference, and its distributed form under torchrun."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from unclip_lite.clip.loss import clip_loss


def naive_clip_loss(images, texts, scale):
    """Loop form of the paper's pseudo-code (Figure 3): one softmax per row and per column."""
    n = len(images)
    total = 0.0
    for i in range(n):
        row = torch.stack([scale * images[i] @ texts[j] for j in range(n)])
        col = torch.stack([scale * images[j] @ texts[i] for j in range(n)])
        total = total - row.log_softmax(0)[i] - col.log_softmax(0)[i]
    return total / (2 * n)


def test_clip_loss_equals_the_naive_loop():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(6, 5, generator=g), dim=-1)
    txt = F.normalize(torch.randn(6, 5, generator=g), dim=-1)
    torch.testing.assert_close(clip_loss(img, txt, 7.0), naive_clip_loss(img, txt, 7.0))
    # Perfectly aligned, well-separated pairs with a large scale: loss near zero.
    eye = torch.eye(4)
    assert clip_loss(eye, eye, 100.0) < 1e-6
    # Random features at scale 1: loss near log(N).
    assert abs(clip_loss(img, txt, 1.0).item() - torch.log(torch.tensor(6.0)).item()) < 0.5


def test_clip_loss_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"one shape \[N, E\]"):
        clip_loss(torch.zeros(4, 8), torch.zeros(5, 8), 1.0)


@pytest.mark.dist
def test_two_process_loss_and_gradients_equal_single_process(tmp_path):
    out = tmp_path / "result.pt"
    worker = Path(__file__).parent / "dist" / "clip_loss_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(worker), str(out)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    r = torch.load(out, weights_only=True)
    assert r["world"] == 2
    torch.testing.assert_close(r["loss"], r["ref_loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r["grads"], r["ref_grads"], rtol=1e-4, atol=1e-6)
    assert r["grads"].abs().sum() > 0
