"""``unclip-lite eval unclip-shapes-tiny``: unCLIP beside GLIDE on the paper's questions (Ramesh et al. 2022, §5).

Both models draw from the same prompts and seeds, judged at the base resolution by the shipped
judge (unCLIP's base image is its decoder's, from the prior's z_i):

* accuracy — colour, shape and both (``joint``) on "a {colour} {shape}" for all 40
  pairs, at each guidance of a sweep, and at each model's best; held-out pairs apart;
* what the caption names beyond them — size and position on prompts naming both;
* diversity of what the caption leaves unsaid (§5.1, Table 1): over 16 seeds per prompt, the
  entropy (bits) of the judged position and size, and the mean pairwise RMS pixel distance —
  per guidance, so GLIDE's diversity can be read at unCLIP's accuracy (matched);
* binding — two-object prompts, both objects' colour and shape and their relation right;
* a Fréchet distance between samples and renders of the same captions, on the judge's features;
* seconds per image of every stage of the pipeline.
"""
from __future__ import annotations

import math
import time

import torch

from unclip_lite.data import shapes
from unclip_lite.glide.bundle import load_glide
from unclip_lite.glide.evaluate import (attribute_prompts, judge_attributes, judge_single, pair_breakdown,
                                        single_object_prompts, two_object_prompts)
from unclip_lite.judge import ShapesJudge, judge_scenes, load_judge
from unclip_lite.unclip.decoder_recipes import DecoderView, prior_embeddings


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^½ Σ_b Σ_a^½)^½) between Gaussians fitted to the
    rows of ``a`` [N, D] and ``b`` [M, D] (FID's formula, Heusel et al. 2017), in float64; the
    matrix square roots by symmetric eigendecomposition (no scipy)."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"expected feature matrices [N, D] and [M, D] with N, M >= 2, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.double(), b.double()
    mu = a.mean(0) - b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)

    def sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
        values, vectors = torch.linalg.eigh((m + m.T) / 2)
        return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T

    root_a = sqrtm_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float(mu @ mu + cov_a.trace() + cov_b.trace() - 2 * cross)


@torch.no_grad()
def judge_features(judge: ShapesJudge, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The judge's last hidden layer [N, hidden] (what its heads read), for a Fréchet distance."""
    judge.check_images(images)
    judge.eval()
    return torch.cat([judge.mlp(judge.features(images[i:i + batch_size].float() * 2 - 1))
                      for i in range(0, len(images), batch_size)])


def entropy_bits(labels: torch.Tensor, classes: int) -> float:
    """The entropy (bits) of the empirical distribution of integer ``labels`` over ``classes``."""
    p = torch.bincount(labels, minlength=classes).double() / len(labels)
    return float(-(p[p > 0] * p[p > 0].log2()).sum())


def mean_pairwise_distance(images: torch.Tensor) -> float:
    """Mean RMS pixel distance over all pairs of ``images`` [K, 3, R, R] in [0, 1]."""
    flat = images.flatten(1).double()
    d = torch.cdist(flat, flat) / math.sqrt(flat.shape[1])  # [K, K]
    k = len(images)
    return float(d.sum() / (k * (k - 1)))


def diversity(judge: ShapesJudge, images: torch.Tensor) -> dict[str, float]:
    """Per prompt over its seeds (``images`` [P, K, 3, R, R]), averaged over prompts."""
    P, K = images.shape[:2]
    read = judge_scenes(judge, images.flatten(0, 1))
    pos, size = read["position"].view(P, K), read["size"].view(P, K)
    return {"position_entropy": sum(entropy_bits(pos[p], len(shapes.POSITION_NAMES)) for p in range(P)) / P,
            "size_entropy": sum(entropy_bits(size[p], len(shapes.SIZE_NAMES)) for p in range(P)) / P,
            "pixel_distance": sum(mean_pairwise_distance(images[p]) for p in range(P)) / P}


def diversity_prompts(n: int) -> list[str]:
    """``n`` "a {colour} {shape}" prompts, spread over colours and shapes (held-out pairs among them)."""
    rows = [(c, (c * 3 + k) % len(shapes.SHAPES)) for k in range(len(shapes.SHAPES)) for c in range(len(shapes.COLOURS))]
    return [shapes.zero_shot_prompt(shapes.COLOURS[c], shapes.SHAPES[s]) for c, s in rows[:n]]


@torch.no_grad()
def compare_model(model, judge: ShapesJudge, guidances=(1.0, 3.0, 5.0), per_pair: int = 2, seeds: int = 16,
                  n_diversity: int = 8, attr_per_pair: int = 1, pairs_n: int = 60, steps: int = 20) -> dict:
    """One model's row of the comparison (a GLIDE, or a :class:`DecoderView` of unCLIP)."""
    prompts, colour, shape, heldout = single_object_prompts(per_pair)
    div_prompts = [p for p in diversity_prompts(n_diversity) for _ in range(seeds)]
    out: dict = {"sweep": {}}
    for g in guidances:
        single = judge_single(judge, model.sample(prompts, g, "ddim", steps, seed=11), colour, shape, heldout)
        images = torch.cat([model.sample(div_prompts[i:i + seeds], g, "ddim", steps, seed=1000 + i)
                            for i in range(0, len(div_prompts), seeds)])  # a seed per image, as sampled
        row = {k: round(v, 4) for k, v in single.items() if k.split("_", 1)[1] in ("colour", "shape", "joint")}
        row.update({k: round(v, 4) for k, v in diversity(judge, images.view(n_diversity, seeds, *images.shape[1:])).items()})
        out["sweep"][f"{g:g}"] = row
    best = max(guidances, key=lambda g: out["sweep"][f"{g:g}"]["all_joint"])
    out["best_guidance"] = best
    out.update({k: v for k, v in out["sweep"][f"{best:g}"].items()})
    # at the best guidance: named size and position, binding, the distance to renders
    a_prompts, targets, a_heldout = attribute_prompts(attr_per_pair)
    attrs = judge_attributes(judge, model.sample(a_prompts, best, "ddim", steps, seed=13), targets, a_heldout)
    out.update({f"named_{k}": round(attrs[k], 4) for k in ("all_size", "all_position", "all_joint")})
    texts, scenes = two_object_prompts(pairs_n)
    out.update({f"pairs_{k}": round(v, 4) for k, v in
                pair_breakdown(judge, model.sample(texts, best, "ddim", steps, seed=12), scenes).items()})
    samples = model.sample(prompts, best, "ddim", steps, seed=14)
    renders = shapes.render(shapes.scenes_for_captions(prompts, 15), samples.shape[-1])
    out["frechet_judge"] = round(frechet_distance(judge_features(judge, samples), judge_features(judge, renders)), 3)
    return out


def matched(glide: dict, unclip: dict) -> dict:
    """GLIDE's diversity at the guidance whose accuracy is closest to unCLIP's best (matched accuracy)."""
    target = unclip["all_joint"]
    g = min(glide["sweep"], key=lambda k: abs(glide["sweep"][k]["all_joint"] - target))
    return {"glide_guidance": float(g), **{f"glide_{k}": v for k, v in glide["sweep"][g].items()},
            "unclip_guidance": unclip["best_guidance"],
            **{f"unclip_{k}": unclip[k] for k in ("all_joint", "position_entropy", "size_entropy", "pixel_distance")}}


@torch.no_grad()
def evaluate_unclip(bundle, glide: str = "glide-shapes-tiny-positions", guidances=(1.0, 3.0, 5.0), per_pair: int = 2,
                    seeds: int = 16, n_diversity: int = 8, pairs_n: int = 60, steps: int = 20, prior_steps: int = 64,
                    precision: str = "auto") -> dict:
    """The comparison as one JSON object (module docstring); ``bundle``: an :class:`~.pipeline.UnCLIPBundle`."""
    pipe, judge = bundle.model, load_judge()
    start = time.perf_counter()
    options = dict(judge=judge, guidances=guidances, per_pair=per_pair, seeds=seeds, n_diversity=n_diversity,
                   pairs_n=pairs_n, steps=steps)
    prior_options = {"steps": prior_steps} if bundle.prior_kind == "diffusion" else {}
    unclip = compare_model(DecoderView(pipe.decoder, prior_embeddings(pipe.prior, **prior_options)), **options)
    base = load_glide(glide)
    glide_row = compare_model(base, **options)
    timing = pipe(diversity_prompts(4), seed=0, decoder_num_inference_steps=steps, prior_num_inference_steps=prior_steps,
                  precision=precision)
    return {"settings": {"glide": glide, "prior": bundle.prior_kind, "guidances": list(guidances), "per_pair": per_pair,
                         "seeds": seeds, "n_diversity": n_diversity, "pairs_n": pairs_n, "steps": steps,
                         "prior_steps": prior_steps,
                         "judged_at_px": pipe.decoder.image_size},
            "unclip": unclip, "glide": glide_row, "matched": matched(glide_row, unclip),
            "seconds_per_image": timing.seconds_per_image, "eval_seconds": round(time.perf_counter() - start, 1)}
