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
from unclip_lite.hardware import resolve_precision
from unclip_lite.judge import ShapesJudge, canonical_pairs, grade, judge_scenes, load_judge

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


def attribute_prompts(per_pair: int = 2) -> tuple[list[str], dict[str, torch.Tensor], torch.Tensor]:
    """``(prompts, targets, heldout [N])``: "a {size} {colour} {shape} in the {position}" for every
    colour × shape pair ``per_pair`` times, sizes and positions cycling so that each pair meets
    different ones; ``targets`` holds ``colour``, ``shape``, ``size``, ``position`` ``[N]`` each."""
    rows = []  # (colour, shape, size, position) indices
    for c in range(len(shapes.COLOURS)):
        for s in range(len(shapes.SHAPES)):
            for k in range(per_pair):  # every position once per (colour, k), across the shapes
                rows.append((c, s, (c + s + k) % len(shapes.SIZE_NAMES), (c + s + k) % len(shapes.POSITION_NAMES)))
    prompts = []
    for c, s, size, position in rows:  # the training template that names both, with "an" before a vowel
        scene = shapes.make_scenes(shapes.COLOURS[c], shapes.SHAPES[s], shapes.SIZE_NAMES[size],
                                   shapes.POSITION_NAMES[position])
        prompts += shapes.captions(scene, template="a {size} {colour} {shape} in the {position}")
    targets = {name: torch.tensor([r[i] for r in rows]) for i, name in enumerate(("colour", "shape", "size", "position"))}
    heldout = torch.tensor([(shapes.COLOURS[c], shapes.SHAPES[s]) in shapes.HELD_OUT_PAIRS for c, s, _, _ in rows])
    return prompts, targets, heldout


def judge_attributes(judge: ShapesJudge, images: torch.Tensor, targets: dict[str, torch.Tensor],
                     heldout: torch.Tensor) -> dict[str, float]:
    """``{all,seen,heldout}_{colour,shape,size,position,joint}``: the judge's reading of
    single-object images against every attribute the prompt named (joint: one object, all four;
    colour_shape: one object of the right colour and shape)."""
    pred = judge_scenes(judge, images)
    ok = {k: pred[k] == v for k, v in targets.items()}
    ok["joint"] = torch.stack([pred["n_objects"] == 1, *ok.values()]).all(0)
    ok["colour_shape"] = (pred["n_objects"] == 1) & ok["colour"] & ok["shape"]  # the object, wherever it is
    out = {"chance_position": 1 / len(shapes.POSITION_NAMES), "chance_size": 1 / len(shapes.SIZE_NAMES)}
    for split, rows in (("all", torch.ones_like(heldout)), ("seen", ~heldout), ("heldout", heldout)):
        for key, value in ok.items():
            out[f"{split}_{key}"] = value[rows].float().mean().item() if rows.any() else float("nan")
    return out


def pair_breakdown(judge: ShapesJudge, images: torch.Tensor, scenes: shapes.Scenes) -> dict[str, float]:
    """How two-object samples go wrong: ``both_right`` (both objects' colour and shape),
    ``colours_swapped`` / ``shapes_swapped`` (the right attributes on the wrong objects),
    ``relation``, ``two_objects``, ``binding`` (both right, relation right, two objects)."""
    pred, want = judge_scenes(judge, images), canonical_pairs(scenes)
    same = {k: pred[k] == want[k] for k in ("a_colour", "a_shape", "b_colour", "b_shape", "relation")}
    crossed = {"colour": (pred["a_colour"] == want["b_colour"]) & (pred["b_colour"] == want["a_colour"])
               & (want["a_colour"] != want["b_colour"]),
               "shape": (pred["a_shape"] == want["b_shape"]) & (pred["b_shape"] == want["a_shape"])
               & (want["a_shape"] != want["b_shape"])}
    both = same["a_colour"] & same["a_shape"] & same["b_colour"] & same["b_shape"]
    two = pred["n_objects"] == 2
    cases = {"both_right": both, "colours_swapped": crossed["colour"] & same["a_shape"] & same["b_shape"],
             "shapes_swapped": crossed["shape"] & same["a_colour"] & same["b_colour"],
             "relation": same["relation"], "two_objects": two, "binding": both & same["relation"] & two}
    return {k: v.float().mean().item() for k, v in cases.items()}


def two_object_prompts(n: int, seed: int = 5) -> tuple[list[str], shapes.Scenes]:
    """``n`` prompts "a {a} {relation} a {b}" (canonical relations: left of / above) and their scenes."""
    gen = torch.Generator().manual_seed(seed)
    scenes = shapes.sample_scenes(n, gen, n_objects=2, split="all")
    return shapes.captions(scenes, gen, template=0), scenes


def evaluate_glide(bundle: GlideBundle, judge: ShapesJudge | None = None, per_pair: int = 4,
                   guidance_scales=GUIDANCE_SCALES, steps: int = 50, ddpm_per_pair: int = 1,
                   pairs_n: int = 80, seed: int = 0, precision: str = "auto", progress: bool = True,
                   attr_per_pair: int = 2) -> dict:
    """The acceptance metrics of ``glide-shapes-tiny`` as one flat dict (keys in the README).

    * ``g{s}_{split}_{attr}``: DDIM-``steps`` at guidance ``s`` (``per_pair`` samples per pair);
    * ``best_guidance`` and ``best_*``: the scale with the highest ``all_joint``;
    * ``ddpm{T}_*`` / ``ddim{steps}_*``: DDPM through all T steps vs DDIM on the *same*
      prompts and seeds at the best scale (``ddpm_per_pair`` per pair), ``ddim_minus_ddpm_joint``;
    * ``attr_*``: prompts naming a size and a position too ("a small red star in the top
      left", ``attr_per_pair`` per pair) at the best scale: ``{all,seen,heldout}_{colour,shape,
      size,position,joint}`` and the chance levels;
    * ``pairs_*``: two-object prompts at the best scale: ``objects`` (both colours and shapes),
      ``relation``, ``binding`` (all of it), and how they fail: ``colours_swapped``,
      ``shapes_swapped`` (:func:`pair_breakdown`).
    """
    judge = judge or load_judge()
    prompts, colour, shape, heldout = single_object_prompts(per_pair)
    precision = resolve_precision(precision, bundle.device)  # recorded as what actually ran
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
    if attr_per_pair:
        prompts, targets, heldout = attribute_prompts(attr_per_pair)
        images = bundle.sample(prompts, best, "ddim", steps, seed=seed + 3, precision=precision, progress=progress)
        metrics.update({f"attr_{k}": round(v, 4) for k, v in judge_attributes(judge, images, targets, heldout).items()})
    if pairs_n:
        texts, scenes = two_object_prompts(pairs_n)
        images = bundle.sample(texts, best, "ddim", steps, seed=seed + 2, precision=precision, progress=progress)
        ok = grade(judge, images, scenes)
        for key in ("objects", "relation", "n_objects"):
            metrics[f"pairs_{key}"] = round(ok[key].float().mean().item(), 4)
        metrics["pairs_binding"] = round((ok["objects"] & ok["relation"] & ok["n_objects"]).float().mean().item(), 4)
        breakdown = pair_breakdown(judge, images, scenes)
        metrics.update({f"pairs_{k}": round(breakdown[k], 4) for k in ("colours_swapped", "shapes_swapped")})
    return metrics


def caption_following(bundle: GlideBundle, judge: ShapesJudge | None = None, attr_per_pair: int = 1,
                      pairs_n: int = 30, guidance: float = 3.0, steps: int = 20, seed: int = 0) -> dict[str, float]:
    """A small check of the whole caption, cheap enough to run during training (issue 11's
    curve): single-object prompts naming size and position (``attr_per_pair`` per pair) and
    ``pairs_n`` two-object prompts, DDIM-``steps`` at guidance ``guidance``. Keys ``colour``,
    ``shape``, ``size``, ``position`` and ``binding``, ``both_right``, ``colours_swapped``."""
    judge = judge or load_judge()
    prompts, targets, heldout = attribute_prompts(attr_per_pair)
    single = judge_attributes(judge, bundle.sample(prompts, guidance, "ddim", steps, seed=seed + 3),
                              targets, heldout)
    out = {k: single[f"all_{k}"] for k in ("colour", "shape", "size", "position")}
    if pairs_n:
        texts, scenes = two_object_prompts(pairs_n)
        pairs = pair_breakdown(judge, bundle.sample(texts, guidance, "ddim", steps, seed=seed + 2), scenes)
        out.update({k: pairs[k] for k in ("binding", "both_right", "colours_swapped")})
    return out


def quick_metrics(bundle: GlideBundle, judge: ShapesJudge | None = None) -> dict:
    """A one-minute check for the training command: guidance 3, DDIM-50, 2 samples per pair."""
    return evaluate_glide(bundle, judge, per_pair=2, guidance_scales=(3.0,), ddpm_per_pair=0, pairs_n=0)


# ----------------------------------------------------------------------------- chapter 06


def evaluate_guidance(bundle: GlideBundle, guide, name: str, scales=(1.0, 3.0, 10.0), per_pair: int = 2,
                      cfg_scales=(0.0, 1.0, 2.0), steps: int = 50, seed: int = 0, precision: str = "auto",
                      judge: ShapesJudge | None = None, progress: bool = True) -> dict:
    """Gradient guidance beside classifier-free guidance, on the same prompts and seeds.

    ``guide(prompts) -> log_prob_fn`` (CLIP or classifier guidance) steers the *unconditional*
    model (``guidance=0``: the empty caption), so the guide is the only source of the prompt;
    classifier-free guidance at ``cfg_scales`` is the baseline (scale 0 = no guidance at all).
    Keys: ``cfg_g{s}_*`` and ``{name}_s{scale}_*`` with ``all_colour``, ``all_shape``,
    ``all_joint``, ``heldout_joint``; ``{name}_best_scale``, ``{name}_best_all_joint``; and
    ``{name}_plus_text_*``: the guide at its best scale on top of the text-conditional model.
    """
    judge = judge or load_judge()
    prompts, colour, shape, heldout = single_object_prompts(per_pair)
    keep = ("all_colour", "all_shape", "all_joint", "heldout_joint")
    precision = resolve_precision(precision, bundle.device)
    metrics: dict = {"per_pair": per_pair, "steps": steps, "precision": precision}

    def run(key, **kwargs):
        start = time.perf_counter()
        images = bundle.sample(prompts, sampler="ddim", steps=steps, seed=seed, precision=precision,
                               progress=progress, **kwargs)
        result = judge_single(judge, images, colour, shape, heldout)
        metrics.update({f"{key}_{k}": round(result[k], 4) for k in keep})
        metrics[f"{key}_seconds_per_image"] = round((time.perf_counter() - start) / len(prompts), 3)
        return result["all_joint"]

    for s in cfg_scales:
        run(f"cfg_g{s:g}", guidance=s)
    best, best_joint = None, -1.0
    for s in scales:
        joint = run(f"{name}_s{s:g}", guidance=0.0, guide=guide, guide_scale=s)
        if joint > best_joint:
            best, best_joint = s, joint
    metrics[f"{name}_best_scale"], metrics[f"{name}_best_all_joint"] = best, round(best_joint, 4)
    run(f"{name}_plus_text", guidance=1.0, guide=guide, guide_scale=best)
    return metrics


def _box_masks(scenes: shapes.Scenes, k: int, size: int, pad: float = 0.06) -> torch.Tensor:
    """Masks ``[B, 1, size, size]`` (1 = keep) that erase the square around object ``k`` of each scene."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # pixel centres in [0, 1]
    half = (scenes.radius[:, k] + pad)[:, None]  # [B, 1]
    inside_x = (coords[None] - scenes.x[:, k:k + 1]).abs() < half  # [B, size]
    inside_y = (coords[None] - scenes.y[:, k:k + 1]).abs() < half
    return (~(inside_y[:, :, None] & inside_x[:, None, :])).float()[:, None]


def _only(scenes: shapes.Scenes, k: int) -> shapes.Scenes:
    """The scenes with object ``k`` alone (for rendering what is kept)."""
    pick = {f: getattr(scenes, f)[:, k:k + 1] for f in ("colour", "shape", "size", "radius", "x", "y")}
    return shapes.Scenes(**pick)


def drawn_in_hole(images: torch.Tensor, masks: torch.Tensor, threshold: float = 0.15, min_pixels: int = 6) -> torch.Tensor:
    """``[B]`` bool: at least ``min_pixels`` pixels inside the hole differ from the background."""
    bg = torch.tensor(shapes.BACKGROUND, dtype=torch.float32).view(1, 3, 1, 1) / 255
    differs = ((images - bg).abs().amax(1, keepdim=True) > threshold) & (masks == 0)  # [B, 1, H, W]
    return differs.flatten(1).sum(1) >= min_pixels


def evaluate_inpainting(bundle: GlideBundle, per_pair: int = 2, pairs_n: int = 80, guidance: float = 3.0,
                        steps: int = 50, seed: int = 0, precision: str = "auto",
                        judge: ShapesJudge | None = None, progress: bool = True) -> dict:
    """GLIDE-style edits on Shapes, judged. Two tasks, both masks erase a square around an object:

    * ``replace_*``: a single-object scene, its object erased, the prompt "a {colour} {shape}"
      over every pair ``per_pair`` times (always a different object from the one erased);
      right = the judge reads one object of the prompted colour and shape;
    * ``add_*``: a two-object scene with one object rendered and the hole where the other
      belongs, the prompt the full caption ("a red circle to the left of a blue star");
      right = both objects and the relation as the caption says.

    ``*_drawn``: something was drawn inside the hole; ``*_kept_exact``: every pixel outside
    the hole equals the input (max abs difference ``*_max_outside_change``, must be 0).
    """
    judge = judge or load_judge()
    size = bundle.image_size
    prompts, colour, shape, heldout = single_object_prompts(per_pair)
    gen = torch.Generator().manual_seed(seed + 11)
    original = shapes.sample_scenes(len(prompts), gen, split="all")
    # a different object from the one the prompt asks for: shift its colour and shape by 1..n-1
    original.colour[:, 0] = (colour + torch.randint(1, len(shapes.COLOURS), (len(prompts),), generator=gen)) % len(shapes.COLOURS)
    original.shape[:, 0] = (shape + torch.randint(1, len(shapes.SHAPES), (len(prompts),), generator=gen)) % len(shapes.SHAPES)
    tasks = {"replace": (prompts, shapes.render(original, size), _box_masks(original, 0, size))}
    texts, scenes = two_object_prompts(pairs_n, seed=seed + 12)
    tasks["add"] = (texts, shapes.render(_only(scenes, 0), size), _box_masks(scenes, 1, size))
    precision = resolve_precision(precision, bundle.device)
    metrics: dict = {"guidance": guidance, "steps": steps, "precision": precision}
    for task, (task_prompts, images, masks) in tasks.items():
        start = time.perf_counter()
        out = bundle.sample(task_prompts, guidance, "ddim", steps, seed=seed, precision=precision,
                            progress=progress, inpaint=(images, masks))
        change = ((out - images).abs() * masks).amax().item()
        metrics[f"{task}_max_outside_change"] = change
        metrics[f"{task}_kept_exact"] = change == 0.0
        metrics[f"{task}_drawn"] = round(drawn_in_hole(out, masks).float().mean().item(), 4)
        if task == "replace":
            result = judge_single(judge, out, colour, shape, heldout)
            metrics.update({f"replace_{k}": round(result[f"all_{k}"], 4) for k in ("colour", "shape", "joint")})
            metrics["replace_one_object"] = round(result["one_object"], 4)
        else:
            ok = grade(judge, out, scenes)
            metrics["add_joint"] = round(ok["joint"].float().mean().item(), 4)
            metrics["add_objects"] = round(ok["objects"].float().mean().item(), 4)
            metrics["add_relation"] = round(ok["relation"].float().mean().item(), 4)
        metrics[f"{task}_seconds_per_image"] = round((time.perf_counter() - start) / len(task_prompts), 3)
    return metrics


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images in [0, 1] against ``reference``, per image ``[B]``."""
    mse = ((images - reference) ** 2).flatten(1).mean(1).clamp(min=1e-10)
    return -10 * torch.log10(mse)


def evaluate_upsampler(bundle: GlideBundle, n: int = 100, respacing: str = "fast27", seed: int = 0,
                       precision: str = "auto", progress: bool = True) -> dict:
    """PSNR (dB) against the true render at the upsampler's size, of its samples and of
    bicubic / bilinear upsampling of the same low-res input (the render, area-downsampled
    as in training, no blur). Half the scenes have one object, half two; their captions
    are the prompts. DDIM on a ``respacing`` schedule, guidance 1 (the plain conditional model)."""
    import torch.nn.functional as F

    size = bundle.image_size
    low_size = bundle.low_res_size
    high, texts = [], []
    for k in (1, 2):
        images, scenes = shapes.eval_set("all", n // 2, resolution=size, n_objects=k, seed=seed)
        high.append(images)
        texts += shapes.captions(scenes, seed)
    high = torch.cat(high)  # [n, 3, S, S]
    low = F.interpolate(high, size=(low_size, low_size), mode="area")
    start = time.perf_counter()
    out = bundle.sample(texts, 1.0, "ddim", None, seed=seed, precision=precision, respacing=respacing,
                        progress=progress, low_res=low)
    seconds = (time.perf_counter() - start) / len(texts)
    metrics = {"n": len(texts), "low_res_size": low_size, "size": size, "respacing": respacing,
               "precision": resolve_precision(precision, bundle.device),
               "seconds_per_image": round(seconds, 3),
               "psnr_upsampler": round(psnr(out, high).mean().item(), 3)}
    for mode in ("bicubic", "bilinear"):
        base = F.interpolate(low, size=(size, size), mode=mode, align_corners=False).clamp(0, 1)
        metrics[f"psnr_{mode}"] = round(psnr(base, high).mean().item(), 3)
    metrics["gain_over_bicubic_db"] = round(metrics["psnr_upsampler"] - metrics["psnr_bicubic"], 3)
    return metrics
