"""Judging what a Shapes GLIDE draws: does the picture show what the prompt says?

Samples are read by the shipped ``judge-shapes`` classifier (its own accuracy on clean
renders is 1.000 on every head, see ``unclip-lite eval judge-shapes``), never by CLIP.

* single-object prompts "a {colour} {shape}" over all 40 colour × shape pairs, scored on
  colour, shape and both, separately for the pairs seen in training and the held-out ones;
* two-object prompts "a {a} {relation} a {b}": binding = both objects' colour and shape
  right and the relation right;
* the same prompts and seeds under several guidance scales and samplers.
"""
from __future__ import annotations

import time

import torch

from unclip_lite.data import shapes
from unclip_lite.glide.bundle import GlideBundle
from unclip_lite.judge import ShapesJudge, grade, judge_scenes, load_judge

GUIDANCE_SCALES = (1.0, 2.0, 3.0, 5.0)


def single_object_prompts(per_pair: int = 1) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(prompts, colour [N], shape [N], heldout [N] bool)``: every colour × shape pair ``per_pair`` times."""
    prompts, colours, shape_ids, heldout = [], [], [], []
    for c, colour in enumerate(shapes.COLOURS):
        for s, shape in enumerate(shapes.SHAPES):
            for _ in range(per_pair):
                prompts.append(shapes.zero_shot_prompt(colour, shape))
                colours.append(c)
                shape_ids.append(s)
                heldout.append((colour, shape) in shapes.HELD_OUT_PAIRS)
    return prompts, torch.tensor(colours), torch.tensor(shape_ids), torch.tensor(heldout)


def judge_single(judge: ShapesJudge, images: torch.Tensor, colour: torch.Tensor, shape: torch.Tensor,
                 heldout: torch.Tensor) -> dict[str, float]:
    """Accuracies ``{seen,heldout,all}_{colour,shape,joint}`` plus ``one_object`` (the judge sees one object)."""
    pred = judge_scenes(judge, images)
    ok = {"colour": pred["colour"] == colour, "shape": pred["shape"] == shape}
    ok["joint"] = ok["colour"] & ok["shape"]
    out = {"one_object": (pred["n_objects"] == 1).float().mean().item()}
    for split, rows in (("all", torch.ones_like(heldout)), ("seen", ~heldout), ("heldout", heldout)):
        for key, value in ok.items():
            out[f"{split}_{key}"] = value[rows].float().mean().item() if rows.any() else float("nan")
    return out


def two_object_prompts(n: int, seed: int = 5) -> tuple[list[str], shapes.Scenes]:
    """``n`` prompts "a {a} {relation} a {b}" (canonical relations: left of / above) and their scenes."""
    gen = torch.Generator().manual_seed(seed)
    scenes = shapes.sample_scenes(n, gen, n_objects=2, split="all")
    return shapes.captions(scenes, gen, template=0), scenes


def evaluate_glide(bundle: GlideBundle, judge: ShapesJudge | None = None, per_pair: int = 4,
                   guidance_scales=GUIDANCE_SCALES, steps: int = 50, ddpm_per_pair: int = 1,
                   pairs_n: int = 80, seed: int = 0, precision: str = "bf16", progress: bool = True) -> dict:
    """The acceptance metrics of ``glide-shapes-tiny`` as one flat dict (keys in the README).

    * ``g{s}_{split}_{attr}``: DDIM-``steps`` at guidance ``s`` (``per_pair`` samples per pair);
    * ``best_guidance`` and ``best_*``: the scale with the highest ``all_joint``;
    * ``ddpm{T}_*`` / ``ddim{steps}_*``: DDPM through all T steps vs DDIM on the *same*
      prompts and seeds at the best scale (``ddpm_per_pair`` per pair), ``ddim_minus_ddpm_joint``;
    * ``pairs_*``: two-object prompts at the best scale: ``objects`` (both colours and shapes),
      ``relation``, ``binding`` (all of it).
    """
    judge = judge or load_judge()
    prompts, colour, shape, heldout = single_object_prompts(per_pair)
    metrics: dict = {"per_pair": per_pair, "steps": steps, "precision": precision}
    best, best_joint = None, -1.0
    for scale in guidance_scales:
        start = time.perf_counter()
        images = bundle.sample(prompts, scale, "ddim", steps, seed=seed, precision=precision, progress=progress)
        result = judge_single(judge, images, colour, shape, heldout)
        metrics.update({f"g{scale:g}_{k}": round(v, 4) for k, v in result.items()})
        metrics[f"g{scale:g}_seconds_per_image"] = round((time.perf_counter() - start) / len(prompts), 3)
        if result["all_joint"] > best_joint:
            best, best_joint = scale, result["all_joint"]
    metrics["best_guidance"] = best
    metrics.update({f"best_{k}": metrics[f"g{best:g}_{k}"] for k in
                    ("seen_colour", "seen_shape", "heldout_colour", "heldout_shape", "all_colour", "all_shape",
                     "all_joint", "seen_joint", "heldout_joint")})
    if ddpm_per_pair:
        prompts, colour, shape, heldout = single_object_prompts(ddpm_per_pair)
        T = bundle.diffusion.num_timesteps
        for name, sampler, n_steps in ((f"ddpm{T}", "ddpm", None), (f"ddim{steps}", "ddim", steps)):
            start = time.perf_counter()
            images = bundle.sample(prompts, best, sampler, n_steps, seed=seed + 1, precision=precision,
                                   progress=progress)
            result = judge_single(judge, images, colour, shape, heldout)
            metrics.update({f"{name}_{k}": round(result[k], 4) for k in ("all_colour", "all_shape", "all_joint")})
            metrics[f"{name}_seconds_per_image"] = round((time.perf_counter() - start) / len(prompts), 3)
        metrics["ddim_minus_ddpm_joint"] = round(metrics[f"ddim{steps}_all_joint"] - metrics[f"ddpm{T}_all_joint"], 4)
    if pairs_n:
        texts, scenes = two_object_prompts(pairs_n)
        images = bundle.sample(texts, best, "ddim", steps, seed=seed + 2, precision=precision, progress=progress)
        ok = grade(judge, images, scenes)
        for key in ("objects", "relation", "n_objects"):
            metrics[f"pairs_{key}"] = round(ok[key].float().mean().item(), 4)
        metrics["pairs_binding"] = round((ok["objects"] & ok["relation"] & ok["n_objects"]).float().mean().item(), 4)
    return metrics


def quick_metrics(bundle: GlideBundle, judge: ShapesJudge | None = None) -> dict:
    """A one-minute check for the training command: guidance 3, DDIM-50, 2 samples per pair."""
    return evaluate_glide(bundle, judge, per_pair=2, guidance_scales=(3.0,), ddpm_per_pair=0, pairs_n=0)
