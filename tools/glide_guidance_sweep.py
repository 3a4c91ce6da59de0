"""Classifier-free guidance, measured: what a larger scale buys and what it costs (chapter 05).

GLIDE (Nichol et al. 2022, §2.4 and §5.2) describes guidance as a trade of diversity for
fidelity. On Shapes both sides can be counted. The shipped ``glide-shapes-tiny`` is sampled
at several guidance scales s, every scale from the same starting noise x_T:

* **fidelity** on two-object prompts ("a red star above a blue circle"), read by the shipped
  ``judge-shapes`` exactly as ``unclip-lite eval`` reads them
  (:func:`unclip_lite.glide.evaluate.two_object_prompts`, :func:`unclip_lite.judge.grade`,
  :func:`unclip_lite.glide.evaluate.pair_breakdown`): both objects' colour and shape right
  (``objects``), that plus the relation and two objects seen (``binding``), the relation alone,
  and the colours swapped between the shapes. Single-object accuracy is not the measure: it is
  1.0 from s = 2 on in the checkpoint's own evaluation.
* **diversity** among several samples of the *same* single-object prompt: the mean pairwise
  RMS pixel distance, the mean pairwise cosine distance of their ``clip-shapes-tiny`` image
  embeddings, and the entropy (bits) of the position and the size the judge reads — the prompts
  name neither, so both are free for the model to vary.

Usage (the chapter's record was made with exactly this)::

    .venv/bin/python tools/glide_guidance_sweep.py --threads 1

It writes ``data/experiments/glide-guidance-sweep.json`` (``--out``): the command, date,
machine, threads, precision, seeds, prompts, and per-scale numbers and timings. (``runs/`` is
git-ignored; the committed experiment records live in ``data/experiments``.)
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from unclip_lite.checkpoints import REGISTRY_DIR, read_manifest
from unclip_lite.clip.bundle import load_clip
from unclip_lite.data import shapes
from unclip_lite.glide.bundle import load_glide
from unclip_lite.glide.evaluate import pair_breakdown, two_object_prompts
from unclip_lite.hardware import hardware, resolve_precision
from unclip_lite.judge import grade, judge_scenes, load_judge

DEFAULT_OUT = REGISTRY_DIR.parent / "experiments" / "glide-guidance-sweep.json"
# two seen pairs and two held-out ones (chapter 00's split); none names a size or a position
SINGLE_PROMPTS = ("a red star", "a blue square", "a green star", "a pink triangle")


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson 95% interval of a binomial proportion (how far ``successes / n`` can be trusted)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(centre - half, 4), round(centre + half, 4)


def entropy_bits(labels: torch.Tensor, classes: int) -> float:
    """Entropy in bits of the empirical distribution of ``labels`` [N] over ``classes`` values."""
    p = torch.bincount(labels, minlength=classes).float() / len(labels)
    p = p[p > 0]
    return max(0.0, float(-(p * p.log2()).sum()))  # never "-0.0"


def mean_pairwise(x: torch.Tensor, distance) -> float:
    """Mean of ``distance(a, b)`` over the unordered pairs of the rows of ``x`` [M, ...]."""
    M = len(x)
    values = [distance(x[i], x[j]) for i in range(M) for j in range(i + 1, M)]
    return float(torch.stack(values).mean())


def diversity(images: torch.Tensor, embeddings: torch.Tensor, per_prompt: int, judge) -> dict[str, float]:
    """``images`` [P * M, 3, R, R] in [0, 1], M = ``per_prompt`` consecutive samples per prompt;
    ``embeddings`` [P * M, E] their unit CLIP image embeddings."""
    rms = lambda a, b: ((a - b) ** 2).mean().sqrt()  # noqa: E731  RMS pixel distance, in [0, 1] units
    cosine = lambda a, b: 1 - (a * b).sum()  # noqa: E731  cosine distance of unit vectors
    groups = images.split(per_prompt)
    pixel = [mean_pairwise(g, rms) for g in groups]
    clip = [mean_pairwise(e, cosine) for e in embeddings.split(per_prompt)]
    read = judge_scenes(judge, images)
    return {"pixel_distance": round(sum(pixel) / len(pixel), 4),
            "clip_distance": round(sum(clip) / len(clip), 4),
            # pooled over every single-object sample at this scale: the prompts name no place or size
            "position_entropy_bits": round(entropy_bits(read["position"], len(shapes.POSITION_NAMES)), 4),
            "size_entropy_bits": round(entropy_bits(read["size"], len(shapes.SIZE_NAMES)), 4)}


def single_accuracy(images: torch.Tensor, prompts: list[str], judge) -> float:
    """Share of single-object samples the judge reads as one object of the prompt's colour and shape."""
    read = judge_scenes(judge, images)
    want = [shapes.parse_caption(p)["objects"][0] for p in prompts]
    colour = torch.tensor([shapes.colour_index(o["colour"]) for o in want])
    shape = torch.tensor([shapes.shape_index(o["shape"]) for o in want])
    ok = (read["n_objects"] == 1) & (read["colour"] == colour) & (read["shape"] == shape)
    return round(ok.float().mean().item(), 4)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="glide-shapes-tiny")
    p.add_argument("--scales", default="0,1,2,3,5,8", help="comma-separated guidance scales")
    p.add_argument("--pairs", type=int, default=32, help="two-object prompts per scale")
    p.add_argument("--per-prompt", type=int, default=4, help="samples of each single-object prompt")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16"))
    p.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    scales = [float(s) for s in args.scales.split(",")]
    started = time.perf_counter()

    glide, judge, clip = load_glide(args.checkpoint), load_judge(), load_clip("clip-shapes-tiny")
    precision = resolve_precision(args.precision, glide.device)
    pair_texts, pair_scenes = two_object_prompts(args.pairs, seed=5)
    singles = [prompt for prompt in SINGLE_PROMPTS for _ in range(args.per_prompt)]  # M in a row per prompt
    seeds = {"pairs": args.seed + 2, "singles": args.seed + 1, "two_object_prompts": 5}
    rows = []
    for s in scales:
        t0 = time.perf_counter()
        images = glide.sample(pair_texts, s, "ddim", args.steps, seed=seeds["pairs"], precision=precision)
        t_pairs = time.perf_counter() - t0
        ok = grade(judge, images, pair_scenes)
        breakdown = pair_breakdown(judge, images, pair_scenes)
        n_objects_ok = int(ok["objects"].sum())
        bound = ok["objects"] & ok["relation"] & ok["n_objects"]
        t1 = time.perf_counter()
        single_images = glide.sample(singles, s, "ddim", args.steps, seed=seeds["singles"], precision=precision)
        t_single = time.perf_counter() - t1
        row = {"scale": s,
               "pairs_objects": round(n_objects_ok / args.pairs, 4),
               "pairs_objects_ci95": wilson(n_objects_ok, args.pairs),
               "pairs_binding": round(bound.float().mean().item(), 4),
               "pairs_relation": round(ok["relation"].float().mean().item(), 4),
               "pairs_two_objects": round(ok["n_objects"].float().mean().item(), 4),
               "pairs_colours_swapped": round(breakdown["colours_swapped"], 4),
               "single_colour_shape": single_accuracy(single_images, singles, judge),
               **diversity(single_images, clip.embed_image(single_images), args.per_prompt, judge),
               "seconds_per_image_pairs": round(t_pairs / len(pair_texts), 3),
               "seconds_per_image_single": round(t_single / len(singles), 3)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    record = {
        "question": "chapter 05: how do fidelity (two-object prompts) and diversity (samples of one prompt) "
                    "change with the classifier-free guidance scale?",
        "command": ".venv/bin/python tools/glide_guidance_sweep.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "hardware": hardware(), "threads": args.threads, "precision": precision,
        "checkpoint": args.checkpoint, "checkpoint_sha256": read_manifest(args.checkpoint).get("sha256"),
        "judged_by": "judge-shapes (unclip_lite.judge.grade, unclip_lite.glide.evaluate.pair_breakdown)",
        "embedded_by": "clip-shapes-tiny image tower",
        "sampler": "ddim", "steps": args.steps, "seeds": seeds,
        "pair_prompts": pair_texts, "single_prompts": list(SINGLE_PROMPTS), "per_prompt": args.per_prompt,
        "definitions": {
            "pairs_objects": "both objects' colour and shape right (judge.grade 'objects'), ignoring the relation",
            "pairs_binding": "objects right, the relation right and two objects seen",
            "pixel_distance": "mean over prompts of the mean pairwise RMS distance of samples, pixels in [0, 1]",
            "clip_distance": "mean over prompts of the mean pairwise 1 - cosine of the samples' CLIP image embeddings",
            "position_entropy_bits": f"entropy of the judge-read position over all single-object samples "
                                     f"(max log2 {len(shapes.POSITION_NAMES)})",
            "size_entropy_bits": "entropy of the judge-read size over all single-object samples (max 1)",
        },
        "scales": rows,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out} after {record['total_seconds']:.0f} s", flush=True)
    return record


if __name__ == "__main__":
    main()
