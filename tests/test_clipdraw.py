"""CLIPDraw: augmentations, the CLIP loss and the optimisation loop (unclip_lite.clipdraw.optimize)."""

import pytest
import torch
import torch.nn.functional as F

from unclip_lite.clipdraw import (ClipDrawConfig, augment_views, augmentation_grids, clip_scores, clipdraw,
                                  evaluate_clipdraw, image_encoder, random_strokes, rasterize, render_size)


@pytest.fixture(scope="module")
def clip():
    from unclip_lite.clip.bundle import load_clip
    return load_clip("clip-shapes-tiny")


def _image(size=32, seed=0):
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


def test_augmented_views_have_the_clip_input_shape_and_carry_gradient():
    g = torch.Generator().manual_seed(0)
    for render in (32, 64):
        image = _image(render).requires_grad_(True)
        views = augment_views(image, 32, 4, g)
        assert views.shape == (4, 3, 32, 32)
        assert not torch.allclose(views[0], views[1])  # each view is its own random warp
        views.sum().backward()
        assert image.grad is not None and image.grad.abs().sum() > 0


def test_without_augmentation_every_view_is_the_image_resized():
    g = torch.Generator().manual_seed(0)
    image = _image(32)
    assert torch.equal(augment_views(image, 32, 3, g, augment=False), image.expand(3, -1, -1, -1))
    big = _image(64)
    resized = F.interpolate(big[None], size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(augment_views(big, 32, 2, g, augment=False), resized.expand(2, -1, -1, -1))


def test_no_distortion_and_a_full_square_crop_is_the_identity_warp():
    grid = augmentation_grids(2, 16, torch.Generator().manual_seed(1), distortion=0.0,
                              crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    images = torch.rand(2, 3, 16, 16)
    assert torch.allclose(F.grid_sample(images, grid, align_corners=False), images, atol=1e-5)


def test_the_area_a_warp_uncovers_is_filled_with_the_background():
    fill = (0.2, 0.4, 0.6)
    flat = torch.tensor(fill).view(3, 1, 1).expand(3, 32, 32)
    views = augment_views(flat, 32, 4, torch.Generator().manual_seed(2), fill=fill)
    assert torch.allclose(views, flat.expand(4, -1, -1, -1), atol=1e-6)
    black = augment_views(torch.zeros(3, 32, 32), 32, 8, torch.Generator().manual_seed(2), fill=(1.0, 1.0, 1.0))
    assert black.amax() > 0.5  # some corner the perspective uncovered reads as the white fill


def test_the_image_encoder_is_differentiable_and_agrees_with_encode_images(clip):
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    z = image_encoder(clip)(images)
    assert torch.allclose(z.detach(), clip.encode_images(images.detach()), atol=1e-5)
    z.sum().backward()
    assert images.grad.abs().sum() > 0
    with pytest.raises(TypeError, match="differentiable image tower"):
        image_encoder(object())


def test_render_size_rules(clip):
    assert render_size(clip, ClipDrawConfig()) == 32
    assert render_size(clip, ClipDrawConfig(size=64)) == 64
    for augment in (True, False):
        with pytest.raises(ValueError, match="smaller than the CLIP's input"):
            render_size(clip, ClipDrawConfig(size=16, augment=augment))


@pytest.mark.parametrize("kwargs, match", [
    (dict(strokes=0), "strokes must be >= 1"),
    (dict(segments=4), r"segments must be in 1\.\.3"),
    (dict(num_augs=0), "num_augs >= 1"),
    (dict(min_width=0.2, max_width=0.1), "min_width <= max_width"),
    (dict(crop_scale=(0.9, 0.7)), "crop_scale"),
])
def test_config_refuses_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClipDrawConfig(**kwargs)


def test_the_loss_is_minus_the_prompt_cosine_plus_the_weighted_negative_cosine(clip):
    """One step, no augmentation: the recorded loss is exactly −cos(prompt) + 0.3·cos(negative)
    of the initial drawing, and the recorded clip_score is that cosine."""
    config = ClipDrawConfig(steps=1, augment=False, negative_prompts=("a blue square",), seed=3)
    _, _, history = clipdraw(clip, "a red circle", config)
    init = rasterize(random_strokes(config.strokes, config.segments, torch.Generator().manual_seed(3),
                                    config.init_radius, config.init_width), 32, config.background)
    positive, negative = clip_scores(clip, init[None].expand(2, -1, -1, -1), ["a red circle", "a blue square"])
    assert history[0]["clip_score"] == pytest.approx(float(positive), abs=1e-5)
    assert history[0]["loss"] == pytest.approx(float(-positive + 0.3 * negative), abs=1e-5)


def test_clipdraw_keeps_widths_and_colours_in_range_and_returns_a_drawing(clip):
    config = ClipDrawConfig(steps=5, strokes=4, segments=2, max_width=0.05, size=48)
    image, strokes, history = clipdraw(clip, "a green star", config)
    assert image.shape == (3, 48, 48) and image.min() >= 0 and image.max() <= 1
    assert strokes.points.shape == (4, 7, 2) and not strokes.points.requires_grad
    assert strokes.widths.min() >= config.min_width and strokes.widths.max() <= 0.05
    assert strokes.colours.min() >= 0 and strokes.colours.max() <= 1
    assert strokes.points.min() >= 0 and strokes.points.max() <= 1  # clamp_points
    assert [h["step"] for h in history] == list(range(5))
    assert torch.allclose(image, rasterize(strokes, 48, config.background), atol=1e-6)


def test_a_short_run_raises_the_clip_score_over_the_random_strokes(clip):
    """Behavioural: 30 steps with the paper's augmentations must move the drawing towards
    "a red circle" in CLIP's eyes (over seeds 0-4: -0.35 to -0.06 at the random init,
    0.32 to 0.67 after 30 steps)."""
    config = ClipDrawConfig(steps=30, seed=0)
    image, _, history = clipdraw(clip, "a red circle", config)
    final = float(clip_scores(clip, image[None], ["a red circle"]))
    assert final > history[0]["clip_score"] + 0.2, (history[0]["clip_score"], final)


def test_evaluate_clipdraw_reports_clip_score_and_the_judges_reading(clip):
    from unclip_lite.judge import load_judge
    judge = load_judge()
    result = evaluate_clipdraw(clip, judge, ClipDrawConfig(steps=3, strokes=4),
                               prompts=["a red circle", ("blue", "star")], seeds=(0,))
    assert set(result) == {"augment", "no_augment"}
    for mode in result.values():
        assert mode["n"] == 2 and mode["images"].shape == (2, 3, 32, 32)
        for key in ("colour", "shape", "joint", "one_object"):
            assert 0.0 <= mode[key] <= 1.0
        assert mode["joint"] <= min(mode["colour"], mode["shape"])
        assert -1.0 <= mode["clip_score"] <= 1.0 and -1.0 <= mode["clip_score_init"] <= 1.0
    with pytest.raises(ValueError, match="one colour and one shape"):
        evaluate_clipdraw(clip, judge, ClipDrawConfig(steps=1), prompts=["a red thing"], seeds=(0,))
