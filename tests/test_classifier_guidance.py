"""Gradient guidance (unclip_lite.diffusion.guidance) and ADM's noised classifier (unclip_lite.glide.classifier)."""
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_classifier

from unclip_lite.diffusion import GaussianDiffusion
from unclip_lite.diffusion.guidance import gradient_guidance
from unclip_lite.glide.classifier import (CLASSIFIER_CONFIGS, ClassifierConfig, NoisedClassifier,
                                          get_classifier_config)
from unclip_lite.unet import UNet, count_parameters


def toy_model(x, t):
    return 0.3 * x + 0.01 * t.view(-1, 1, 1, 1).float() / 1000


def test_gaussian_log_prob_shifts_eps_by_the_closed_form():
    """log p(y | x) = -|x - μ|² / (2 s²) has gradient -(x - μ)/s², so
    ε̂ = ε + √(1-ᾱ_t) · scale · (x - μ)/s², per element."""
    diffusion = GaussianDiffusion.from_schedule("cosine", 1000)
    mu, s2 = torch.randn(1, 3, 4, 4), 0.5

    def log_prob(x, t):
        return -((x - mu) ** 2).sum((1, 2, 3)) / (2 * s2)

    x, t = torch.randn(3, 3, 4, 4, dtype=torch.float64), torch.tensor([0, 400, 999])
    for scale in (0.0, 1.0, 4.0):
        got = gradient_guidance(diffusion, toy_model, log_prob, scale)(x, t)
        sigma = (1 - diffusion.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
        expected = toy_model(x, t) + sigma * scale * (x - mu) / s2
        torch.testing.assert_close(got, expected)


def test_guidance_reads_the_trained_process_timestep_and_keeps_a_variance_half():
    diffusion = GaussianDiffusion.from_schedule("linear", 1000)
    x, t = torch.randn(2, 3, 2, 2, dtype=torch.float64), torch.tensor([999, 10])

    def with_variance(x, t):
        return torch.cat([toy_model(x, t), torch.full_like(x, 0.25)], dim=1)

    out = gradient_guidance(diffusion, with_variance, lambda x, t: x.sum((1, 2, 3)), 2.0)(x, t)
    sigma = diffusion.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(out[:, :3], toy_model(x, t) - 2.0 * sigma * torch.ones_like(x))
    assert torch.equal(out[:, 3:], torch.full_like(x, 0.25))


@pytest.mark.parametrize("scale", [-1.0, float("nan"), 1e6, "strong"])
def test_gradient_guidance_rejects_bad_scales(scale):
    with pytest.raises(ValueError, match="scale"):
        gradient_guidance(GaussianDiffusion.from_schedule("cosine", 10), toy_model, lambda x, t: x.sum(), scale)


def test_gradient_guidance_takes_any_parameterisation_and_needs_one_log_prob_per_image():
    """x_0- and v-models are guided through ε (closed-form checks: test_guidance_parameterisations)."""
    x, t = torch.randn(2, 3, 2, 2, dtype=torch.float64), torch.tensor([3, 7])
    for parameterization in ("x0", "v"):
        diffusion = GaussianDiffusion.from_schedule("cosine", 10, parameterization=parameterization)
        out = gradient_guidance(diffusion, toy_model, lambda x, t: x.sum((1, 2, 3)), 1.0)(x, t)
        assert out.shape == x.shape and not torch.allclose(out, toy_model(x, t))
    fn = gradient_guidance(GaussianDiffusion.from_schedule("cosine", 10), toy_model, lambda x, t: x.sum(), 1.0)
    with pytest.raises(ValueError, match="one value per image"):
        fn(torch.randn(2, 3, 2, 2), torch.tensor([1, 2]))


def test_classifier_is_the_unets_down_half_with_an_attention_pool():
    clf = tiny_classifier()
    full = UNet(clf.config.unet)
    assert not hasattr(clf.encoder, "output_blocks")
    down = {k: v.shape for k, v in full.state_dict().items()
            if k.startswith(("time_embed", "input_blocks", "middle_block"))}
    assert {k: v.shape for k, v in clf.encoder.state_dict().items()} == down  # same layers, same names
    with pytest.raises(RuntimeError, match="encoder_only"):
        clf.encoder(torch.randn(1, 3, 16, 16), torch.tensor([1]))
    logits = clf(torch.randn(4, 3, 16, 16), torch.tensor([0, 10, 500, 999]))
    assert {k: v.shape for k, v in logits.items()} == {"colour": (4, 8), "shape": (4, 5)}


def test_log_prob_is_the_sum_of_head_log_softmaxes_and_differentiable():
    clf = tiny_classifier()
    x, t = torch.randn(3, 3, 16, 16, requires_grad=True), torch.tensor([5, 50, 500])
    labels = {"colour": torch.tensor([0, 3, 7]), "shape": torch.tensor([4, 0, 2])}
    logits = clf(x, t)
    expected = sum(F.log_softmax(logits[k], -1)[torch.arange(3), labels[k]] for k in labels)
    got = clf.log_prob(x, t, labels)
    torch.testing.assert_close(got, expected)
    (grad,) = torch.autograd.grad(got.sum(), x)
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown label heads"):
        clf.log_prob(x, t, {"size": torch.tensor([0, 1, 0])})


def test_classifier_presets_build_and_validate():
    assert set(CLASSIFIER_CONFIGS) == {"shapes-tiny", "adm-imagenet-128"}
    assert count_parameters(NoisedClassifier(get_classifier_config("shapes-tiny"))) < 2_000_000
    with torch.device("meta"):
        big = NoisedClassifier(get_classifier_config("adm-imagenet-128"))
    assert count_parameters(big) > 10_000_000
    cfg = get_classifier_config("shapes-tiny")
    assert ClassifierConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown classifier config"):
        get_classifier_config("resnet")
    with pytest.raises(ValueError, match="heads"):
        ClassifierConfig(cfg.unet, {"colour": 1})
