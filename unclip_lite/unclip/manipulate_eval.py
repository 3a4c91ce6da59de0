"""Measuring unCLIP's manipulations (§3) on Shapes: every figure of the paper's §3 as a number.

* ``reconstruction``: PSNR of decode(encode(x)) at η = 0, with and without fixed-point iterations;
* ``variations``: per η, how often the judged colour and shape stay the source's (what z_i keeps),
  how often position and size change, and the pixel distance between variations (what η redraws);
* ``interpolation``: 9 points of slerp between two images' z_i, x_T slerped or held fixed — the
  judged colour and shape along the path, the judge's confidence at each point;
* ``text_diffs``: slerp(z_i, z_d, θ) toward a caption that changes the colour (or the shape): how
  often the judge reads the target, and how often the other attribute and the position are kept.

All on renders of single objects, judged by the shipped judge; the decoder reads the empty caption.
"""
from __future__ import annotations

import torch

from unclip_lite.data import shapes
from unclip_lite.glide.evaluate import psnr
from unclip_lite.judge import judge_scenes
from unclip_lite.unclip.compare import mean_pairwise_distance
from unclip_lite.unclip.manipulate import decode, encode, flat_slerp, slerp, text_diff

ETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
THETAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


@torch.no_grad()
def reconstruction(decoder, clip, images: torch.Tensor, steps: int = 50, iters=(0, 2)) -> dict:
    """PSNR (dB) of the η = 0 round trip, for each number of fixed-point iterations."""
    out = {}
    for k in iters:
        z_i, x_T = encode(decoder, clip, images, steps=steps, fixed_point_iters=k)
        out[f"psnr_fixed_point_{k}"] = round(psnr(decode(decoder, z_i, x_T, steps=steps), images).mean().item(), 3)
    return out


@torch.no_grad()
def variations(decoder, clip, judge, images: torch.Tensor, k: int = 4, steps: int = 50, etas=ETAS) -> dict:
    """Per η: ``kept`` (judged colour and shape as the source's), ``moved`` (position changed),
    ``resized`` (size changed), ``pixel_distance`` among the k variations of each source."""
    z_i, x_T = encode(decoder, clip, images, steps=steps)
    source = judge_scenes(judge, images)
    B = len(images)
    out = {}
    for eta in etas:
        draws = torch.stack([decode(decoder, z_i, x_T, eta=eta, steps=steps, seed=s) for s in range(k)], 1)  # [B, k, ...]
        read = judge_scenes(judge, draws.flatten(0, 1))
        same = lambda key: (read[key].view(B, k) == source[key][:, None]).float().mean().item()  # noqa: E731
        out[f"{eta:g}"] = {"kept": round(((read["colour"].view(B, k) == source["colour"][:, None])
                                          & (read["shape"].view(B, k) == source["shape"][:, None])).float().mean().item(), 4),
                           "moved": round(1 - same("position"), 4), "resized": round(1 - same("size"), 4),
                           "pixel_distance": round(sum(mean_pairwise_distance(d) for d in draws) / B, 4)}
    return out


@torch.no_grad()
def interpolation(decoder, clip, judge, a: torch.Tensor, b: torch.Tensor, points: int = 9, steps: int = 50) -> dict:
    """Along slerp(z_a, z_b, θ) for ``points`` θ in [0, 1], with x_T slerped and x_T fixed (a's): the
    share of pairs read as a's colour / b's colour, a's shape / b's shape, and the judge's mean
    top-class probability (a low one: the midpoint is no clear object)."""
    za, xa = encode(decoder, clip, a, steps=steps)
    zb, xb = encode(decoder, clip, b, steps=steps)
    ra, rb = judge_scenes(judge, a), judge_scenes(judge, b)
    out = {}
    for mode in ("x_T slerped", "x_T fixed"):
        rows = []
        for theta in torch.linspace(0, 1, points).tolist():
            x_T = flat_slerp(xa, xb, theta) if mode == "x_T slerped" else xa
            images = decode(decoder, slerp(za, zb, theta), x_T, steps=steps)
            read = judge_scenes(judge, images)
            logits = judge(images.float())
            confidence = torch.stack([logits[k].softmax(-1).amax(-1) for k in ("colour", "shape")]).mean().item()
            rows.append({"theta": round(theta, 3), **{f"{attr}_{side}": round((read[attr] == r[attr]).float().mean().item(), 4)
                                                     for attr in ("colour", "shape") for side, r in (("a", ra), ("b", rb))},
                         "confidence": round(confidence, 4)})
        out[mode] = rows
    return out


def edit_pairs(scenes: shapes.Scenes, change: str) -> tuple[list[str], list[str], torch.Tensor]:
    """For each single-object scene: its caption, a caption with the colour (or shape) changed to the
    next one, and the target index [N]."""
    names = shapes.COLOURS if change == "colour" else shapes.SHAPES
    sources, targets, index = [], [], []
    colours, kinds = scenes.colour[:, 0].tolist(), scenes.shape[:, 0].tolist()
    for c, s in zip(colours, kinds):
        new = ((c if change == "colour" else s) + 1) % len(names)
        colour, shape = (new, s) if change == "colour" else (c, new)
        sources.append(shapes.zero_shot_prompt(shapes.COLOURS[c], shapes.SHAPES[s]))
        targets.append(shapes.zero_shot_prompt(shapes.COLOURS[colour], shapes.SHAPES[shape]))
        index.append(new)
    return sources, targets, torch.tensor(index)


@torch.no_grad()
def text_diffs(decoder, clip, judge, images: torch.Tensor, scenes: shapes.Scenes, thetas=THETAS, steps: int = 50) -> dict:
    """Per change (colour, shape) and θ: ``success`` (the judge reads the target), ``kept_other``
    (the other attribute unchanged), ``kept_position``."""
    z_i, x_T = encode(decoder, clip, images, steps=steps)
    source = judge_scenes(judge, images)
    out = {}
    for change, other in (("colour", "shape"), ("shape", "colour")):
        captions, targets, index = edit_pairs(scenes, change)
        z_d = text_diff(clip, targets, captions)
        out[change] = {}
        for theta in thetas:
            read = judge_scenes(judge, decode(decoder, slerp(z_i, z_d, theta), x_T, steps=steps))
            out[change][f"{theta:g}"] = {
                "success": round((read[change] == index).float().mean().item(), 4),
                "kept_other": round((read[other] == source[other]).float().mean().item(), 4),
                "kept_position": round((read["position"] == source["position"]).float().mean().item(), 4)}
    return out


def every_edit(change: str, resolution: int = 32) -> tuple[torch.Tensor, shapes.Scenes, list[str], list[str], torch.Tensor]:
    """Every colour (or shape) change once: one large render per source colour (shape) on a shape
    (colour) that makes a training pair, repeated for each other colour (shape) — 8 × 7 = 56 colour
    edits, 5 × 4 = 20 shape edits. Returns the renders [N, 3, R, R], their scenes, the source and
    target captions, and the target index [N]. Positions cycle through the five named ones."""
    names = shapes.COLOURS if change == "colour" else shapes.SHAPES
    colours, kinds, targets = [], [], []
    for i, name in enumerate(names):
        partner = next(o for o in (shapes.SHAPES if change == "colour" else shapes.COLOURS)
                       if ((name, o) if change == "colour" else (o, name)) not in shapes.HELD_OUT_PAIRS)
        for j in range(len(names)):
            if j != i:
                colours.append(name if change == "colour" else partner)
                kinds.append(partner if change == "colour" else name)
                targets.append(j)
    scenes = shapes.make_scenes(colours, kinds, size="large")
    positions = torch.arange(len(colours)) % len(shapes.POSITION_NAMES)
    xy = torch.tensor([shapes.POSITIONS[p] for p in shapes.POSITION_NAMES])[positions]  # [N, 2]
    scenes = shapes.Scenes(**{**scenes.__dict__, "x": xy[:, :1], "y": xy[:, 1:], "position": positions})
    sources = [shapes.zero_shot_prompt(c, k) for c, k in zip(colours, kinds)]
    wanted = [shapes.zero_shot_prompt(names[t], k) if change == "colour" else shapes.zero_shot_prompt(c, names[t])
              for c, k, t in zip(colours, kinds, targets)]
    return shapes.render(scenes, resolution), scenes, sources, wanted, torch.tensor(targets)


@torch.no_grad()
def text_diffs_all(decoder, clip, judge, thetas=THETAS, steps: int = 50) -> dict:
    """:func:`text_diffs` over :func:`every_edit`: per change and θ, ``success``, ``kept_other``,
    ``kept_position``, and ``success_to_heldout`` (edits whose target pair is held out of training)."""
    out = {}
    for change, other in (("colour", "shape"), ("shape", "colour")):
        images, scenes, sources, wanted, index = every_edit(change, decoder.image_size)
        z_i, x_T = encode(decoder, clip, images, steps=steps)
        source = judge_scenes(judge, images)
        z_d = text_diff(clip, wanted, sources)
        colour = index if change == "colour" else scenes.colour[:, 0]
        shape = scenes.shape[:, 0] if change == "colour" else index
        heldout = shapes.HELD_OUT_TABLE[colour, shape]  # [N]
        out[change] = {"n": len(images), "n_to_heldout": int(heldout.sum())}
        for theta in thetas:
            read = judge_scenes(judge, decode(decoder, slerp(z_i, z_d, theta), x_T, steps=steps))
            hit = read[change] == index
            out[change][f"{theta:g}"] = {
                "success": round(hit.float().mean().item(), 4),
                "success_to_heldout": round(hit[heldout].float().mean().item(), 4) if heldout.any() else None,
                "kept_other": round((read[other] == source[other]).float().mean().item(), 4),
                "kept_position": round((read["position"] == source["position"]).float().mean().item(), 4)}
    return out


@torch.no_grad()
def concept_arithmetic(decoder, clip, judge, images: torch.Tensor, scenes: shapes.Scenes, steps: int = 50) -> dict:
    """Word arithmetic on z_i, x_T fixed: z = norm(z_i + z_t("blue") − z_t("red")) for each source's
    colour (shape) word and the next colour (shape) word. Per change: ``success`` (the judge reads the
    new word), ``kept_other``, ``kept_position``."""
    z_i, x_T = encode(decoder, clip, images, steps=steps)
    source = judge_scenes(judge, images)
    out = {}
    for change, other, names in (("colour", "shape", shapes.COLOURS), ("shape", "colour", shapes.SHAPES)):
        old = scenes.__dict__[change][:, 0]
        new = (old + 1) % len(names)
        shift = clip.encode_texts([names[i] for i in new.tolist()]) - clip.encode_texts([names[i] for i in old.tolist()])
        read = judge_scenes(judge, decode(decoder, torch.nn.functional.normalize(z_i + shift, dim=-1), x_T, steps=steps))
        out[change] = {"success": round((read[change] == new).float().mean().item(), 4),
                       "kept_other": round((read[other] == source[other]).float().mean().item(), 4),
                       "kept_position": round((read["position"] == source["position"]).float().mean().item(), 4)}
    return out


PARTS = ("reconstruction", "variations", "interpolation", "text_diffs", "text_diffs_all", "concept_arithmetic",
         "binding_retrieval",
         "typographic_decode", "typographic_decode_reader", "detail")


@torch.no_grad()
def evaluate_manipulations(decoder, clip, judge, upsamplers=(), reader=None, n: int = 100, steps: int = 50,
                           seed: int = 11, parts=PARTS) -> dict:
    """Every number of chapter 09 in one dict (or the named ``parts``): the §3 manipulations on
    single-object renders of training pairs, and the §7 failures (:mod:`unclip_lite.unclip.failures`);
    ``typographic_decode_reader`` needs ``reader``, a CLIP that learned to read in ``clip``'s space."""
    from unclip_lite.unclip import failures

    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    if "typographic_decode_reader" in parts and reader is None:
        raise ValueError("typographic_decode_reader needs a reader CLIP")
    images, scenes = shapes.eval_set("train", n, resolution=decoder.image_size, seed=seed)
    half = min(n, 40)  # the costlier sweeps run on the first 40 renders
    a, b = images[:half // 2], images[half // 2:half]
    jobs = {
        "reconstruction": lambda: reconstruction(decoder, clip, images, steps=steps),
        "variations": lambda: variations(decoder, clip, judge, images[:half], steps=steps),
        "interpolation": lambda: interpolation(decoder, clip, judge, a, b, steps=steps),
        "text_diffs": lambda: text_diffs(decoder, clip, judge, images[:half], scenes[:half], steps=steps),
        "text_diffs_all": lambda: text_diffs_all(decoder, clip, judge, steps=steps),
        "concept_arithmetic": lambda: concept_arithmetic(decoder, clip, judge, images[:half], scenes[:half], steps=steps),
        "binding_retrieval": lambda: failures.binding_retrieval(clip, n=max(n, 100)),
        "typographic_decode": lambda: failures.typographic_decode(decoder, clip, judge, n=min(n, 64), steps=steps),
        "typographic_decode_reader": lambda: {**failures.typographic_decode(decoder, clip, judge, n=min(n, 64),
                                                                            steps=steps, reader=reader),
                                              "reader": reader.manifest.get("name", "")},
        "detail": lambda: failures.detail(list(upsamplers), judge, n=min(n, 64)),
    }
    out = {"settings": {"n": n, "swept_n": half, "steps": steps, "seed": seed, "guidance": 1.0, "caption": ""}}
    return {**out, **{part: jobs[part]() for part in parts}}


def main(argv: list[str] | None = None) -> None:
    """``python -m unclip_lite.unclip.manipulate_eval [--record]``: print chapter 09's numbers as one
    JSON object; ``--record`` stores them as ``manipulations`` in the decoder's manifest."""
    import argparse
    import json
    import shlex
    import sys
    import time

    from unclip_lite.checkpoints import read_manifest, update_manifest
    from unclip_lite.clip.bundle import CLIPBundle
    from unclip_lite.hardware import hardware
    from unclip_lite.judge import load_judge
    from unclip_lite.unclip.decoder import load_decoder
    from unclip_lite.unclip.upsampler import load_upsampler

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--decoder", default="decoder-shapes-tiny")
    parser.add_argument("--upsampler", default="upsampler-shapes-64", help="the stage fed the base renders in 'detail'")
    parser.add_argument("--reader", default="clip-shapes-tiny-pairs-typo50",
                        help="a CLIP that learned to read, in the decoder CLIP's space ('' skips that part)")
    parser.add_argument("--parts", default=",".join(PARTS), help="recompute only these and merge them into the record")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    decoder = load_decoder(args.decoder)
    clip = CLIPBundle.load(decoder.clip_name)
    parts = [p for p in args.parts.split(",") if args.reader or p != "typographic_decode_reader"]
    reader = CLIPBundle.load(args.reader) if "typographic_decode_reader" in parts else None
    start = time.perf_counter()
    metrics = evaluate_manipulations(decoder, clip, load_judge(), [load_upsampler(args.upsampler)], reader,
                                     n=args.n, steps=args.steps, parts=parts)
    seconds = round(time.perf_counter() - start, 1)
    print(json.dumps(metrics, sort_keys=True))
    if args.record:
        command = ("python -m unclip_lite.unclip.manipulate_eval " + " ".join(
            shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))).strip()
        record = read_manifest(args.decoder).get("manipulations", {})
        commands = record.get("commands", {})
        commands.update({part: command for part in parts})
        record.update(metrics, commands=commands, hardware=hardware())
        partial = set(parts) != set(PARTS)  # a partial rerun adds its time to the record's
        record["seconds"] = round((record.get("seconds", 0) if partial else 0) + seconds, 1)
        update_manifest(args.decoder, manipulations=record)


if __name__ == "__main__":
    main()
