"""Where unCLIP fails (Ramesh et al. 2022, §7), as numbers on Shapes.

* ``binding_retrieval``: does the CLIP image embedding z_i tell "a red circle to the left of a blue
  square" from "a blue circle to the left of a red square"? (§7 blames unCLIP's binding failures on
  z_i not binding attributes to objects.) Pairwise retrieval between each caption and its swap.
* ``typographic_decode``: what the decoder draws from the embedding of an image whose sticker names
  another shape (§7, Figure 14: from the apple labelled "iPod" the decoder draws apples, not iPods).
* ``detail``: how the 32 px base loses the shape of small objects and the upsamplers cannot bring it
  back (§7: "the decoder hierarchy ... produces images at a base resolution of 64 × 64").
  Shape is read by template matching: the closest of the five renders of the same colour, place
  and size (exact, since the scene is known), at the resolution being judged.
"""
from __future__ import annotations

import torch

from unclip_lite.clip.recipes import evaluate_pairs
from unclip_lite.clip.typographic import zero_shot_shapes
from unclip_lite.data import shapes
from unclip_lite.judge import judge_scenes
from unclip_lite.diffusion.samplers import ddim_sample_loop
from unclip_lite.unclip.manipulate import latent_model_fn

DETAIL_RADII = (0.02, 0.03, 0.045, 0.07, 0.1)  # of the image width: 0.6 to 3.2 px at 32 px (the world's small: 0.13-0.17)


@torch.no_grad()
def binding_retrieval(clip, n: int = 500) -> dict:
    """Two-object scenes: how often z_i is closer to its own caption than to the caption with the
    two colours (shapes; the relation) swapped — 0.5 means z_i cannot tell them apart."""
    metrics = evaluate_pairs(clip, n=n)
    return {k.replace("pairs_", ""): round(v, 4) for k, v in metrics.items() if k.startswith("pairs_swap")}


@torch.no_grad()
def typographic_decode(decoder, clip, judge, n: int = 64, steps: int = 50, guidance: float = 3.0, seed: int = 5,
                       reader=None) -> dict:
    """Decode the z_i of images whose sticker names another shape, from fresh noise: how often the
    judge reads the true shape in the drawing (the pixels won), the printed one (the text won), and
    how often the encoder itself reads the printed shape (zero-shot: the attack on CLIP).

    ``reader``: a CLIP whose image tower learned to read (trained with labels, text tower frozen in
    ``clip``'s space) encodes the attacked images instead of ``clip``; ``space_cosine`` is then the
    mean cosine between the two image towers' embeddings of the same unlabelled renders (1: one space)."""
    images, scenes = shapes.eval_set("train", n, resolution=decoder.image_size, seed=seed)
    truth = scenes.shape[:, 0]
    words, printed = shapes.wrong_labels(truth, generator=seed)
    attacked = shapes.print_labels(images, words, seed)
    encoder = reader or clip
    z_i = encoder.encode_images(attacked)
    x_T = torch.randn(attacked.shape, generator=torch.Generator().manual_seed(seed))
    x = ddim_sample_loop(decoder.diffusion, latent_model_fn(decoder, z_i, guidance), x_T.shape, steps=steps,
                         x_T=x_T, progress=False)
    read = judge_scenes(judge, ((x + 1) / 2).clamp(0, 1))["shape"]
    zero_shot = zero_shot_shapes(encoder, attacked)
    out = {"drawn_true_shape": (read == truth).float().mean().item(),
           "drawn_printed_shape": (read == printed).float().mean().item(),
           "clip_reads_printed": (zero_shot == printed).float().mean().item(),
           "clip_reads_true": (zero_shot == truth).float().mean().item()}
    if reader is not None:
        out["space_cosine"] = (reader.encode_images(images) * clip.encode_images(images)).sum(-1).mean().item()
    return {k: round(v, 4) for k, v in out.items()}


def shape_templates(scenes: shapes.Scenes, resolution: int) -> torch.Tensor:
    """Renders [B, 5, 3, R, R] of each scene's object as every shape (same colour, place and size)."""
    out = []
    for s in range(len(shapes.SHAPES)):
        fields = dict(scenes.__dict__)
        fields["shape"] = torch.full_like(scenes.shape, s)
        out.append(shapes.render(shapes.Scenes(**fields), resolution))
    return torch.stack(out, 1)


def shape_by_template(images: torch.Tensor, scenes: shapes.Scenes) -> torch.Tensor:
    """The shape index [B] whose template (:func:`shape_templates`) is closest in mean squared error
    to each single-object image [B, 3, R, R]."""
    templates = shape_templates(scenes, images.shape[-1])
    return (templates - images[:, None]).pow(2).flatten(2).mean(2).argmin(1)


def separation(scenes: shapes.Scenes, resolution: int) -> float:
    """Mean RMS pixel distance (in [0, 1] units) between each object's render and the nearest render
    of another shape: how much of the shape survives at ``resolution``."""
    templates = shape_templates(scenes, resolution)
    own = templates[torch.arange(len(scenes)), scenes.shape[:, 0]]  # [B, 3, R, R]
    rms = (templates - own[:, None]).pow(2).flatten(2).mean(2).sqrt()  # [B, 5]
    rms[torch.arange(len(scenes)), scenes.shape[:, 0]] = float("inf")
    return rms.min(1).values.mean().item()


def small_scenes(n: int, radius: float, seed: int = 0) -> shapes.Scenes:
    """Single objects of one ``radius`` (fraction of the width), anywhere at least a radius from the edge."""
    scenes = shapes.sample_scenes(n, seed)
    g = torch.Generator().manual_seed(seed + 1)
    fields = dict(scenes.__dict__)
    fields["radius"] = torch.full_like(scenes.radius, radius)
    fields["x"] = 0.15 + 0.7 * torch.rand(n, 1, generator=g)
    fields["y"] = 0.15 + 0.7 * torch.rand(n, 1, generator=g)
    return shapes.Scenes(**fields)


@torch.no_grad()
def detail(upsamplers, judge, n: int = 64, radii=DETAIL_RADII, base: int = 32, seed: int = 0) -> dict:
    """Per radius: ``separation_{R}px`` (:func:`separation`) at the base size and at each upsampler's;
    ``judge_{R}px``: the shipped judge's shape reading of the true base render (a learned reader, like
    the eye); ``upsampled_{S}px``: the shape read by template matching on each upsampler's output (the
    cascade fed the true base render), against templates at S px — did the cascade draw the right shape?"""
    out = {}
    for radius in radii:
        scenes = small_scenes(n, radius, seed)
        truth = scenes.shape[:, 0]
        image = shapes.render(scenes, base)
        row = {f"separation_{base}px": separation(scenes, base),
               f"judge_{base}px": (judge_scenes(judge, image)["shape"] == truth).float().mean().item()}
        for stage in upsamplers:
            image = stage.sample(image, seed=seed)
            size = image.shape[-1]
            row[f"separation_{size}px"] = separation(scenes, size)
            row[f"upsampled_{size}px"] = (shape_by_template(image, scenes) == truth).float().mean().item()
        out[f"{radius:g}"] = {k: round(v, 4) for k, v in row.items()}
    return out
