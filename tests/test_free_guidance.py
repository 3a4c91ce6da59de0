"""Classifier-free guidance over any conditioning (unclip_lite.diffusion.free_guidance), checked
against the naive two-pass formula on a model conditioned on an embedding, as unCLIP's decoder is."""
import pytest
import torch
from torch import nn

from unclip_lite.diffusion.free_guidance import classifier_free_guidance


class EmbeddingModel(nn.Module):
    """A toy denoiser reading x, t, a [B, E] embedding and a shared [B, 1, H, W] map; its ∅ is the
    zero embedding (unCLIP's decoder drops z_i to zero 10% of the time)."""

    def __init__(self, channels: int = 3, embed: int = 8, learn_sigma: bool = False):
        super().__init__()
        self.proj = nn.Linear(embed, channels * (2 if learn_sigma else 1))

    def forward(self, x, t, embedding, extra):
        bias = self.proj(embedding)[:, :, None, None]  # [B, C or 2C, 1, 1]
        out = torch.cat([x, x], 1) if bias.shape[1] == 2 * x.shape[1] else x
        return out * (1 + t.float().view(-1, 1, 1, 1) / 1000) + bias + extra

    def null_conditioning(self, embedding):
        return {"embedding": torch.zeros_like(embedding)}


@pytest.mark.parametrize("learn_sigma", [False, True])
@pytest.mark.parametrize("scale", [0.0, 1.0, 2.5, 7.0])
def test_guided_output_is_the_two_pass_formula(scale, learn_sigma):
    torch.manual_seed(0)
    model = EmbeddingModel(learn_sigma=learn_sigma)
    x, t = torch.randn(2, 3, 4, 4), torch.tensor([10, 900])
    z, extra = torch.randn(2, 8), torch.randn(2, 1, 4, 4)
    with torch.no_grad():
        cond = model(x, t, z, extra)
        uncond = model(x, t, torch.zeros_like(z), extra)
        guided = classifier_free_guidance(model, scale, {"embedding": z}, learn_sigma, extra=extra)(x, t)
    expected = uncond[:, :3] + scale * (cond[:, :3] - uncond[:, :3])
    assert torch.allclose(guided[:, :3], expected, atol=1e-5)
    if learn_sigma:  # the variance half is the conditional one
        assert torch.allclose(guided[:, 3:], cond[:, 3:], atol=1e-6)
    wrong = cond[:, :3] + scale * (cond[:, :3] - uncond[:, :3])  # guiding away from the condition
    assert scale == 0.0 or not torch.allclose(guided[:, :3], wrong, atol=1e-3)


def test_one_batched_forward_and_one_half_where_the_formula_needs_one():
    model = EmbeddingModel()
    x, t, z, extra = torch.randn(2, 3, 4, 4), torch.tensor([1, 2]), torch.randn(2, 8), torch.zeros(2, 1, 4, 4)
    for scale, batch in ((3.0, 4), (1.0, 2), (0.0, 2)):  # both halves in one forward, or the one needed
        seen = []
        model.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
        out = classifier_free_guidance(model, scale, {"embedding": z}, extra=extra)(x, t)
        model._forward_hooks.clear()
        assert seen == [batch] and out.shape == x.shape, (scale, seen)


def test_bad_inputs_fail_before_sampling():
    model = EmbeddingModel()
    z = torch.randn(2, 8)
    with pytest.raises(ValueError, match="extra has batch 3"):
        classifier_free_guidance(model, 2.0, {"embedding": z}, extra=torch.zeros(3, 1, 4, 4))
    with pytest.raises(ValueError, match="guidance scale"):
        classifier_free_guidance(model, -1.0, {"embedding": z})
    with pytest.raises(ValueError, match="at least one conditioning"):
        classifier_free_guidance(model, 2.0, {})
    fn = classifier_free_guidance(model, 2.0, {"embedding": z}, extra=torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="built for a batch of 2"):
        fn(torch.zeros(3, 3, 4, 4), torch.zeros(3, dtype=torch.long))
