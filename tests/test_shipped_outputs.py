"""Every shipped checkpoint still computes what it computed when its outputs were pinned.

``tests/shipped_outputs.py`` defines the outputs (embeddings, logits, fixed-seed samples, all
fp32) and recorded them into ``tests/data/shipped_outputs.safetensors``. On the recording
machine they reproduce bit for bit (``shipped_outputs.py check``); here they must agree to
float32 rounding, because another CPU's kernels sum in another order. Embeddings and logits
are single forward passes: 1e-4 relative to their scale. Samples pass through 4 guided DDIM
steps, each of which can amplify a rounding difference a little, so they get 1e-3 on pixels
in [0, 1] — still a thousand times below what a changed model or sampler produces.
"""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from shipped_outputs import CHECKPOINTS, compute

pytestmark = pytest.mark.slow
RECORDED = Path(__file__).parent / "data" / "shipped_outputs.safetensors"


@pytest.fixture(scope="module")
def outputs():
    return compute()


def test_every_checkpoint_has_recorded_outputs():
    recorded = load_file(RECORDED)
    assert {key.split("/")[0] for key in recorded} == set(CHECKPOINTS)


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_outputs_match_the_recorded_ones(outputs, name):
    recorded = {k: v for k, v in load_file(RECORDED).items() if k.startswith(name + "/")}
    assert recorded and set(recorded) == {k for k in outputs if k.startswith(name + "/")}
    for key, expected in recorded.items():
        tolerance = 1e-3 if key.endswith("/sample") else 1e-4 * max(1.0, expected.abs().max().item())
        difference = (outputs[key] - expected).abs().max().item()
        assert difference <= tolerance, f"{key}: max |difference| {difference:.2e} > {tolerance:.0e}"


def test_a_slightly_changed_model_is_caught():
    """The tolerance is not vacuous: scaling one layer of the GLIDE by 1% moves its sample
    far outside it."""
    from unclip_lite.glide.bundle import load_glide

    glide = load_glide("glide-shapes-tiny")
    with torch.no_grad():
        next(p for n, p in glide.model.named_parameters() if n.endswith("weight") and p.dim() == 4).mul_(1.01)
    sample = glide.sample(["a red star", "a blue circle to the left of a green square"], 3.0, "ddim", 4,
                          seed=0, precision="fp32")
    assert (sample - load_file(RECORDED)["glide-shapes-tiny/sample"]).abs().max() > 1e-2
