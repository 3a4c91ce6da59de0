"""Probes of a Shapes GLIDE that ignores (or follows) the position its caption names (chapter 05 §8).

Issue 11's diagnosis of "left and right are never learnt" was made with these four readings,
taken from a training state's EMA weights (``runs/NAME/train_state.pt``) or a shipped checkpoint:

* ``confusion``: "a {large,small} {red star, blue square} in the {position}", 2 seeds each,
  DDIM-20 at guidance 3, judged by ``judge-shapes``: rows the position asked for, columns the
  position read (order of ``shapes.POSITION_NAMES``);
* ``output_cos``: the cosine of the text encoder's outputs for "a large red star in the top left"
  and "... top right" (and "... bottom left") at the slot of the last word;
* ``x0_centroid_t900``: where the red is, in pixels, in the model's estimate of x_0 at t = 900
  for each position, averaged over 16 noise images (does "right" move it at all?);
* ``map_column_norms``: the mean norm of the position maps' columns for the x and the y
  Fourier features, gain included (which axis do the maps use?).

Usage::

    .venv/bin/python tools/position_probe.py runs/glide-shapes-tiny-positions-x10/train_state.pt \
        --model shapes-tiny-positions-x10
    .venv/bin/python tools/position_probe.py glide-shapes-tiny-positions

It prints one JSON object.
"""
from __future__ import annotations

import argparse
import json

import torch

from unclip_lite.data import shapes
from unclip_lite.glide.bundle import GlideBundle, load_glide
from unclip_lite.glide.recipes import new_glide
from unclip_lite.judge import judge_scenes, load_judge
from unclip_lite.unet_attention import POSITION_FREQUENCIES, AttentionBlock


def load(source: str, model: str) -> GlideBundle:
    """A shipped checkpoint name, or a training state whose EMA weights fill the preset ``model``."""
    if not source.endswith(".pt"):
        return load_glide(source)
    state = torch.load(source, map_location="cpu", weights_only=True)
    bundle = new_glide(model)
    bundle.model.load_state_dict({k: v.float() for k, v in state["ema"].items()})
    bundle.model.eval()
    return bundle


@torch.no_grad()
def probe(bundle: GlideBundle, steps: int = 20, seeds: int = 2) -> dict:
    names = shapes.POSITION_NAMES
    prompts = [f"a {size} {obj} in the {p}" for p in names for size in ("large", "small")
               for obj in ("red star", "blue square")]
    wanted = [i for i in range(len(names)) for _ in range(4)] * seeds
    read = judge_scenes(load_judge(), bundle.sample(prompts * seeds, 3.0, "ddim", steps, seed=11, progress=False))
    confusion = torch.zeros(len(names), len(names), dtype=torch.long)
    for w, r in zip(wanted, read["position"].tolist()):
        confusion[w, r] += 1

    model = bundle.model
    tokens = bundle.tokenize([f"a large red star in the {p}" for p in names])  # [5, L]
    out, _, _ = model.text(tokens)  # [5, L, W]
    slot = int((tokens[1] != 0).sum()) - 2  # the last word of "... top left", before EOT
    unit = torch.nn.functional.normalize(out[:, slot], dim=-1)
    cos = unit @ unit.T  # [5, 5]

    x = torch.randn(16, 3, bundle.image_size, bundle.image_size, generator=torch.Generator().manual_seed(0))
    t = torch.full((16,), 900)
    ys, xs = torch.meshgrid(torch.arange(float(bundle.image_size)), torch.arange(float(bundle.image_size)),
                            indexing="ij")
    centroid = {}
    for name in names:
        out = model(x, t, bundle.tokenize([f"a large red star in the {name}"] * 16))
        x0 = bundle.diffusion.predict_x0_eps(out, x, t, clip_denoised=False)[0]  # [16, 3, R, R], unclipped
        red = (x0[:, 0] - x0[:, 1:].mean(1)).clamp(min=0)  # [16, R, R]
        mass = red.sum((1, 2))
        centroid[name] = [round(((red * xs).sum((1, 2)) / mass).mean().item(), 1),
                          round(((red * ys).sum((1, 2)) / mass).mean().item(), 1)]

    norms = {"x": [], "y": []}
    k = len(POSITION_FREQUENCIES)
    for block in model.modules():
        if isinstance(block, AttentionBlock) and block.position is not None:
            column = (block.position_gain * block.position.weight).norm(dim=0)  # [4k]: sin x, y per k, then cos
            for axis, offset in (("x", 0), ("y", 1)):
                norms[axis] += [column[offset + 2 * i].item() for i in range(2 * k)]
    return {"confusion": confusion.tolist(), "accuracy": round((confusion.trace() / confusion.sum()).item(), 4),
            "output_cos": {"top left vs top right": round(cos[1, 2].item(), 4),
                           "top left vs bottom left": round(cos[1, 3].item(), 4)},
            "x0_centroid_t900": centroid,
            "map_column_norms": {a: round(sum(v) / len(v), 3) for a, v in norms.items() if v}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a shipped GLIDE name, or a train_state.pt (its EMA weights)")
    parser.add_argument("--model", default="shapes-tiny-positions", help="the preset of a train_state.pt")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(probe(load(args.source, args.model), steps=args.steps)))


if __name__ == "__main__":
    main()
