"""The noise-aware CLIP (a ViT that also reads t) and CLIP guidance (unclip_lite.clip.noised)."""
import pytest
import torch
from helpers import tiny_clip

from unclip_lite.clip.bundle import CLIPBundle
from unclip_lite.clip.configs import VisionConfig
from unclip_lite.clip.noised import clip_log_prob, noised_clip_batches, noised_contrastive_step
from unclip_lite.clip.recipes import ShapesData, shapes_batches
from unclip_lite.diffusion import GaussianDiffusion
from unclip_lite.diffusion.guidance import gradient_guidance


def test_the_noise_aware_tower_reads_t_and_refuses_to_run_without_it():
    bundle = tiny_clip()
    images = torch.randn(2, 3, 32, 32)
    a = bundle.model.encode_image(images, t=torch.tensor([0, 0]))
    b = bundle.model.encode_image(images, t=torch.tensor([900, 900]))
    assert a.shape == (2, 32) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="pass t"):
        bundle.model.encode_image(images)
    with pytest.raises(ValueError, match="not timestep_conditioned"):
        tiny_clip(noised=False).model.encode_image(images, t=torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="ViT image towers only"):
        VisionConfig(image_size=64, layers=(1, 1, 1, 1), width=8, heads=2, patch_size=None,
                     timestep_conditioned=True)


def test_a_noise_aware_clip_round_trips_through_its_config():
    bundle = tiny_clip()
    again = CLIPBundle.from_config(bundle.config_dict(), bundle.model.state_dict())
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([123])
    torch.testing.assert_close(again.model.encode_image(x, t=t), bundle.model.encode_image(x, t=t))


def test_clip_log_prob_is_the_scaled_cosine_and_its_gradient_guides():
    bundle = tiny_clip()
    texts = ["a red star", "a blue circle"]
    x, t = torch.rand(2, 3, 32, 32) * 2 - 1, torch.tensor([10, 700])
    log_prob = clip_log_prob(bundle, texts)(x, t)
    f = bundle.model.encode_image(bundle.normalize_pixels((x + 1) / 2), normalize=True, t=t)
    g = bundle.encode_texts(texts)
    torch.testing.assert_close(log_prob, bundle.model.scale() * (f * g).sum(-1))
    diffusion = GaussianDiffusion.from_schedule("cosine", 1000)
    eps = gradient_guidance(diffusion, lambda x, t: torch.zeros_like(x), clip_log_prob(bundle, texts), 5.0)(x, t)
    assert eps.shape == x.shape and eps.abs().sum() > 0
    with pytest.raises(ValueError, match="noise-aware"):
        clip_log_prob(tiny_clip(noised=False), texts)
    with pytest.raises(ValueError, match="batch 3"):
        clip_log_prob(bundle, texts)(torch.zeros(3, 3, 32, 32), torch.tensor([1, 1, 1]))


def test_noised_batches_are_seeded_and_the_loss_runs():
    bundle = tiny_clip()
    diffusion = GaussianDiffusion.from_schedule("cosine", 1000)
    clean = shapes_batches(bundle, ShapesData(batch_size=8))
    batches = noised_clip_batches(bundle, clean, diffusion, seed=1)
    pixels, tokens, t = batches(3)
    again = batches(3)
    assert torch.equal(pixels, again[0]) and torch.equal(t, again[2])
    assert t.shape == (8,) and t.min() >= 0 and t.max() < 1000
    # the images are noised, not the clean ones
    x0 = clean(3)[0]
    assert not torch.allclose(pixels, x0)
    loss, logs = noised_contrastive_step(bundle.model, (pixels, tokens, t))
    assert torch.isfinite(loss) and logs["scale"] > 0
