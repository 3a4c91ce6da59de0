"""Chapter 06's guidance exercises agree with the package: ``guide_gradient`` is the gradient
:func:`unclip_lite.diffusion.guidance.gradient_guidance` follows (closed form, and the shipped noised
classifier), and ``guided_ddim_step``, looped over DDIM's timesteps, draws exactly what
``GlideBundle.sample(..., guide=...)`` draws."""
import pytest
import torch

from unclip_lite.diffusion import GaussianDiffusion
from unclip_lite.diffusion.guidance import gradient_guidance
from unclip_lite.diffusion.samplers import ddim_timesteps
from unclip_lite.exercises import ch06
from unclip_lite.glide.bundle import load_glide
from unclip_lite.glide.classifier import load_classifier
from unclip_lite.glide.guidance import classifier_free_guidance
from unclip_lite.glide.guide_recipes import classifier_guide


def g(seed):
    return torch.Generator().manual_seed(seed)


def gradient_followed_by_the_package(log_prob_fn, x, t):
    """The gradient gradient_guidance applies, read back from its ε shift on a model that predicts 0."""
    diffusion = GaussianDiffusion.from_schedule("cosine", 1000)
    shifted = gradient_guidance(diffusion, lambda x, t: torch.zeros_like(x), log_prob_fn, 1.0)(x, t)
    return -shifted / diffusion.sqrt_one_minus_alphas_cumprod[t].float().view(-1, 1, 1, 1)


def test_guide_gradient_is_the_closed_form_and_the_packages_gradient():
    x, mu = torch.randn(4, 3, 8, 8, generator=g(0)), torch.randn(4, 3, 8, 8, generator=g(1))
    t = torch.tensor([10, 200, 600, 990])
    log_prob = lambda x, t: -0.5 * ((x - mu) ** 2).flatten(1).sum(1)  # noqa: E731
    with torch.no_grad():  # as the samplers call it
        ours = ch06.guide_gradient(log_prob, x, t)
    torch.testing.assert_close(ours, mu - x)
    assert not ours.requires_grad and not x.requires_grad
    torch.testing.assert_close(ours, gradient_followed_by_the_package(log_prob, x, t), rtol=1e-4, atol=1e-4)


def test_guide_gradient_of_the_shipped_classifier_is_the_one_classifier_guidance_follows():
    guide = classifier_guide(load_classifier("classifier-noised-shapes-tiny"))
    log_prob = guide(["a red star", "a blue circle"])
    x, t = torch.randn(2, 3, 32, 32, generator=g(2)), torch.tensor([300, 700])
    with torch.no_grad():
        ours = ch06.guide_gradient(log_prob, x, t)
    assert ours.abs().sum() > 0
    torch.testing.assert_close(ours, gradient_followed_by_the_package(log_prob, x, t), rtol=1e-4, atol=1e-5)
    # the images are independent: the sum over the batch gives image 0 the gradient it has alone
    with torch.no_grad():
        alone = ch06.guide_gradient(guide(["a red star"]), x[:1], t[:1])
    torch.testing.assert_close(alone, ours[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scale", [0.0, 20.0])
def test_guided_ddim_steps_draw_what_glide_sample_draws(scale):
    glide = load_glide("glide-shapes-tiny")
    prompts, steps, seed = ["a red star", "a green circle"], 3, 4
    guide = classifier_guide(load_classifier("classifier-noised-shapes-tiny"))
    theirs = glide.sample(prompts, guidance=0.0, guide=guide, guide_scale=scale, steps=steps, seed=seed,
                          precision="fp32")
    model_fn = classifier_free_guidance(glide.model, glide.tokenize(prompts), 0.0)
    log_prob, diffusion = guide(prompts), glide.diffusion
    x = torch.randn(len(prompts), 3, glide.image_size, glide.image_size, generator=g(seed))
    ts = ddim_timesteps(diffusion.num_timesteps, steps)
    with torch.no_grad():
        for i in reversed(range(len(ts))):
            t = torch.full((len(x),), ts[i])
            t_prev = torch.full((len(x),), ts[i - 1] if i else -1)
            x = ch06.guided_ddim_step(diffusion, model_fn, log_prob, x, t, t_prev, scale)
    torch.testing.assert_close(((x + 1) / 2).clamp(0, 1), theirs, rtol=1e-4, atol=1e-5)
