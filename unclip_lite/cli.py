"""The ``unclip-lite`` command line (also ``python -m unclip_lite``).

Subcommands are small functions registered in :data:`COMMANDS`; later chapters add
``train``, ``sample`` and ``eval`` beside the ones here.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_info(args) -> int:
    """Print the profile, the device and library versions as JSON."""
    import torch

    from unclip_lite import __version__, get_profile
    from unclip_lite.utils import pick_device

    print(json.dumps({"unclip_lite": __version__, "torch": torch.__version__,
                      "profile": get_profile().name, "device": str(pick_device())}, indent=2))
    return 0


def cmd_checkpoints(args) -> int:
    """List the shipped checkpoints with their headline metrics."""
    from unclip_lite.checkpoints import REGISTRY_DIR, list_checkpoints, read_manifest

    names = list_checkpoints()
    if not names:
        print(f"no checkpoints shipped yet in {REGISTRY_DIR}")
    for name in names:
        manifest = read_manifest(name)
        print(f"{name:32s} {manifest.get('kind', '?'):8s} {json.dumps(manifest.get('metrics', {}))}")
    return 0


def cmd_shapes(args) -> int:
    """Render a grid of random Shapes scenes (or named ones) to a PNG."""
    from torchvision.utils import save_image

    from unclip_lite.data import shapes

    if args.colour or args.shape:
        scenes = shapes.make_scenes(args.colour or "red", args.shape or "circle", size=args.size)
    else:
        scenes = shapes.sample_scenes(args.n, args.seed, n_objects=args.objects, split=args.split)
    images = shapes.render(scenes, args.resolution)
    save_image(images, args.out, nrow=min(8, len(images)), padding=2)
    for text in shapes.captions(scenes, args.seed):
        print(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def cmd_train(args) -> int:
    """Train a model from its recipe and save it as a checkpoint with a manifest."""
    import shlex

    import torch

    from unclip_lite.checkpoints import REGISTRY_DIR
    from unclip_lite.clip import recipes as clip_recipes
    from unclip_lite.glide import guide_recipes
    from unclip_lite.glide import recipes as glide_recipes

    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = {"clip": clip_recipes.RECIPES, "glide": glide_recipes.RECIPES,
             "classifier": guide_recipes.CLASSIFIER_RECIPES}
    if args.model not in kinds:
        raise ValueError(f"unknown model kind {args.model!r}; trainable here: {', '.join(kinds)}")
    if args.config not in kinds[args.model]:
        raise ValueError(f"no {args.model} training recipe for config {args.config!r}; "
                         f"recipes: {', '.join(kinds[args.model])}")
    recipe = kinds[args.model][args.config]()
    if args.steps:
        recipe.train.steps = args.steps
    if args.precision:
        recipe.train.precision = args.precision
    name = args.name or f"{args.model}-{args.config}"
    out = Path(args.out) if args.out else REGISTRY_DIR / f"{name}.safetensors"
    run_dir = Path(args.run_dir or Path("runs") / name)
    command = "unclip-lite " + " ".join(shlex.quote(a) for a in args.argv)
    run = dict(out_dir=run_dir, resume=not args.fresh, max_minutes=args.max_minutes)
    if args.model == "clip":
        bundle, trainer = clip_recipes.train(args.config, recipe, **run)
    elif args.model == "classifier":
        bundle, trainer = guide_recipes.train_noised_classifier(recipe, **run)
    else:
        bundle, trainer = glide_recipes.train_shapes_glide(recipe, **run)
    if trainer.rank != 0:
        return 0
    if trainer.step < recipe.train.steps:
        print(f"stopped at step {trainer.step} of {recipe.train.steps} (--max-minutes); "
              f"run the same command again to resume from {run_dir}", file=sys.stderr)
        return 0
    metrics = evaluate_trained(args.model, args.config, bundle)
    path = bundle.save(out, manifest=clip_recipes.manifest_for(trainer, command, metrics),
                       dtype=torch.float16 if args.fp16 else None)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {path}", file=sys.stderr)
    return 0


def evaluate_trained(kind: str, config: str, bundle) -> dict:
    """The quick metrics a training command records; ``unclip-lite eval`` computes the full ones."""
    if kind == "clip":
        from unclip_lite.clip import recipes

        return recipes.evaluate(config, bundle)
    if kind == "classifier":
        from unclip_lite.glide.guide_recipes import evaluate_classifier

        return evaluate_classifier(bundle)
    if bundle.extra_channels == 0:
        from unclip_lite.glide.evaluate import quick_metrics

        return quick_metrics(bundle)
    return {}  # inpainting and upsampling models: see unclip-lite eval


def load_guide(name: str):
    """``(guide, kind)`` for a shipped noise-aware CLIP or noised classifier (name or path)."""
    from unclip_lite.checkpoints import read_manifest
    from unclip_lite.glide import guide_recipes

    kind = read_manifest(name).get("kind")
    if kind == "clip":
        from unclip_lite.clip.bundle import load_clip

        return guide_recipes.clip_guide(load_clip(name)), "clip"
    if kind == "classifier":
        from unclip_lite.glide.classifier import load_classifier

        return guide_recipes.classifier_guide(load_classifier(name)), "classifier"
    raise ValueError(f"{name}: not a guide (a noise-aware CLIP or a noised classifier); its kind is {kind!r}")


def cmd_eval(args) -> int:
    """Recompute a checkpoint's metrics; print them as one JSON object on stdout."""
    import shlex
    import time

    import torch

    from unclip_lite.checkpoints import read_manifest, update_manifest

    if args.threads:
        torch.set_num_threads(args.threads)
    manifest = read_manifest(args.checkpoint)
    if not manifest:
        raise FileNotFoundError(f"no checkpoint manifest for {args.checkpoint!r}")
    kind, start = manifest.get("kind"), time.perf_counter()
    scales = [float(s) for s in args.scales.split(",")] if args.scales else None
    if kind == "judge":
        from unclip_lite.judge import evaluate_judge, load_judge

        metrics = evaluate_judge(load_judge(args.checkpoint), n=args.n)
    elif kind == "glide":
        from unclip_lite.glide import evaluate
        from unclip_lite.glide.bundle import load_glide

        bundle = load_glide(args.checkpoint)
        if bundle.extra_channels == 4:
            metrics = evaluate.evaluate_inpainting(bundle, per_pair=args.per_pair, pairs_n=args.pairs_n,
                                                   steps=args.steps, precision=args.precision, progress=False)
        elif bundle.extra_channels == 3:
            metrics = evaluate.evaluate_upsampler(bundle, n=min(args.n, 100), respacing=args.respacing,
                                                  precision=args.precision, progress=False)
        else:
            metrics = evaluate.evaluate_glide(bundle, per_pair=args.per_pair, steps=args.steps,
                                              ddpm_per_pair=args.ddpm_per_pair, pairs_n=args.pairs_n,
                                              precision=args.precision, progress=False)
    elif kind in ("clip", "classifier"):
        from unclip_lite.clip.bundle import load_clip
        from unclip_lite.glide import guide_recipes

        if kind == "clip":
            bundle = load_clip(args.checkpoint)
            if not bundle.model.config.vision.timestep_conditioned:
                from unclip_lite.clip import recipes

                world = bundle.extra.get("recipe", {}).get("model", "shapes-tiny")
                print(json.dumps(recipes.evaluate(world, bundle, n=args.n), sort_keys=True))
                return 0
            metrics = guide_recipes.evaluate_noised_clip(bundle, n=min(args.n, 500))
        else:
            from unclip_lite.glide.classifier import load_classifier

            metrics = guide_recipes.evaluate_classifier(load_classifier(args.checkpoint), n=min(args.n, 500))
        if args.pairs_n:  # the guide at work: judged samples beside classifier-free guidance
            from unclip_lite.glide.bundle import load_glide
            from unclip_lite.glide.evaluate import evaluate_guidance

            guide, _ = load_guide(args.checkpoint)
            metrics.update(evaluate_guidance(load_glide(args.base), guide, kind, scales=scales or (1.0, 3.0, 10.0),
                                             per_pair=args.per_pair, steps=args.steps, precision=args.precision,
                                             progress=False))
            metrics["base"] = args.base
    else:
        raise ValueError(f"{args.checkpoint}: no evaluation for a checkpoint of kind {kind!r}")
    print(json.dumps(metrics, sort_keys=True))
    if args.record:
        command = "unclip-lite " + " ".join(shlex.quote(a) for a in args.argv)
        update_manifest(args.checkpoint, metrics=metrics, eval_command=command,
                        eval_seconds=round(time.perf_counter() - start, 1))
    return 0


def read_images(path: str, size: int, n: int):
    """``n`` images [n, 3, size, size] in [0, 1] from a PNG: one image, repeated, or a grid of
    ``n`` tiles of ``size`` px (with torchvision's 2 px padding, as ``sample`` writes them)."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as file:
        image = torch.from_numpy(np.array(file.convert("RGB"))).permute(2, 0, 1).float() / 255  # [3, H, W]
    if image.shape[1:] == (size, size):
        return image.expand(n, -1, -1, -1).clone()
    tiles = []
    for i in range(n):
        top, left = 2, 2 + i * (size + 2)
        tile = image[:, top:top + size, left:left + size]
        if tile.shape[1:] != (size, size):
            raise ValueError(f"{path}: expected a {size} px image or a row of {n} tiles of {size} px, "
                             f"got {tuple(image.shape[1:])}")
        tiles.append(tile)
    return torch.stack(tiles)


def hole_mask(spec: str, size: int, n: int):
    """A mask [n, 1, size, size] (1 = keep) that erases the pixel box "left,top,right,bottom"."""
    import torch

    try:
        left, top, right, bottom = (int(v) for v in spec.split(","))
    except ValueError:
        raise ValueError(f"--hole must be four integers left,top,right,bottom in pixels, got {spec!r}") from None
    if not 0 <= left < right <= size or not 0 <= top < bottom <= size:
        raise ValueError(f"--hole {spec!r} must lie inside the {size} px image with left < right, top < bottom")
    mask = torch.ones(n, 1, size, size)
    mask[:, :, top:bottom, left:right] = 0
    return mask


def cmd_sample(args) -> int:
    """Draw images from a text-to-image checkpoint: a grid PNG or one PNG per sample."""
    import torch
    from torchvision.utils import save_image

    from unclip_lite.glide.bundle import load_glide

    if args.model != "glide":
        raise ValueError(f"unknown model kind {args.model!r}; sampleable here: glide")
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = load_glide(args.checkpoint)
    prompts = [p for p in args.prompt for _ in range(args.n)]
    extra = {}
    if args.guide:
        extra["guide"], _ = load_guide(args.guide)
        extra["guide_scale"] = args.guide_scale
    if args.image or args.hole:
        if not (args.image and args.hole):
            raise ValueError("inpainting needs both --image PNG and --hole left,top,right,bottom")
        size = bundle.image_size
        extra["inpaint"] = (read_images(args.image, size, len(prompts)), hole_mask(args.hole, size, len(prompts)))
    if args.low_res or args.base:
        if bool(args.low_res) == bool(args.base):
            raise ValueError("an upsampler takes either --low-res PNG or --base CHECKPOINT, not both")
        if args.low_res:
            extra["low_res"] = read_images(args.low_res, bundle.low_res_size, len(prompts))
        else:  # the cascade: the base model draws, the upsampler (plain conditional) refines
            base = load_glide(args.base)
            if base.image_size != bundle.low_res_size:
                raise ValueError(f"--base {args.base} draws {base.image_size} px images; "
                                 f"this upsampler takes {bundle.low_res_size} px")
            extra["low_res"] = base.sample(prompts, args.guidance, args.sampler, args.steps, seed=args.seed,
                                           precision=args.precision, progress=True)
            args.guidance = 1.0
    images = bundle.sample(prompts, args.guidance, args.sampler, None if args.base else args.steps,
                           seed=args.seed, precision=args.precision,
                           respacing="fast27" if args.base and not args.respacing else args.respacing,
                           progress=True, **extra)
    if args.out_dir:
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            save_image(image, out_dir / f"{i:04d}.png")
        print(f"wrote {len(images)} images to {out_dir}", file=sys.stderr)
    else:
        save_image(images, args.out, nrow=args.n, padding=2)
        print(f"wrote {args.out} ({len(args.prompt)} rows of {args.n})", file=sys.stderr)
    return 0


def add_precision_flag(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    from unclip_lite.hardware import PRECISIONS

    parser.add_argument("--precision", default=default, choices=PRECISIONS,
                        help="auto: bf16 where the hardware computes it natively, fp32 elsewhere; or force "
                             "fp32 / bf16 / fp16 (training on a GPU)" + ("" if default else " (default: the recipe's)"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unclip-lite", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help=cmd_info.__doc__).set_defaults(func=cmd_info)
    sub.add_parser("checkpoints", help=cmd_checkpoints.__doc__).set_defaults(func=cmd_checkpoints)
    p = sub.add_parser("shapes", help=cmd_shapes.__doc__)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--objects", type=int, default=1, choices=[1, 2])
    p.add_argument("--split", default="train", choices=["train", "heldout", "all"])
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--colour", nargs="*")
    p.add_argument("--shape", nargs="*")
    p.add_argument("--size", default="large")
    p.add_argument("--out", default="shapes.png")
    p.set_defaults(func=cmd_shapes)
    p = sub.add_parser("train", help=cmd_train.__doc__)
    p.add_argument("model", help="model kind: clip or glide")
    p.add_argument("--config", required=True, help="recipe name, e.g. shapes-tiny or emoji-tiny")
    p.add_argument("--steps", type=int, help="override the recipe's number of steps")
    p.add_argument("--name", help="checkpoint name (default: <model>-<config>)")
    p.add_argument("--out", help="weights path (default: data/checkpoints/<name>.safetensors)")
    p.add_argument("--run-dir", help="where the resumable training state lives (default runs/<name>)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing training state")
    p.add_argument("--fp16", action="store_true", help="store the weights in fp16")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--max-minutes", type=float, help="stop (resumably) after this much training time")
    add_precision_flag(p, default=None)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("sample", help=cmd_sample.__doc__)
    p.add_argument("model", help="model kind: glide")
    p.add_argument("--prompt", action="append", required=True, help="a caption; repeat for more rows")
    p.add_argument("--checkpoint", default="glide-shapes-tiny", help="a shipped checkpoint name or a path")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale, 0..50")
    p.add_argument("--sampler", default="ddim", help="ddim or ddpm")
    p.add_argument("--steps", type=int, help="sampling steps (ddim: default 50; ddpm: default all)")
    p.add_argument("--respacing", help='instead of --steps: a respacing spec, e.g. "100", "ddim25", "fast27"')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=4, help="samples per prompt")
    add_precision_flag(p)
    p.add_argument("--guide", help="CLIP or classifier guidance: a noise-aware CLIP or noised classifier checkpoint")
    p.add_argument("--guide-scale", type=float, default=3.0, help="gradient guidance scale, 0..1000")
    p.add_argument("--image", help="inpainting: the image to edit (a PNG of the model's size, or a row of tiles)")
    p.add_argument("--hole", help="inpainting: the pixel box to redraw, left,top,right,bottom")
    p.add_argument("--low-res", help="upsampling: the low-res image(s), a PNG")
    p.add_argument("--base", help="upsampling: draw the low-res images with this GLIDE first (a cascade)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--out", default="samples.png", help="one grid PNG, a row per prompt")
    out.add_argument("--out-dir", help="one PNG per sample instead")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.set_defaults(func=cmd_sample)
    p = sub.add_parser("eval", help=cmd_eval.__doc__)
    p.add_argument("checkpoint", help="a shipped checkpoint name or a path")
    p.add_argument("--n", type=int, default=1000, help="evaluation images per split (clip, judge)")
    p.add_argument("--per-pair", type=int, default=4, help="glide: DDIM samples per colour x shape pair")
    p.add_argument("--ddpm-per-pair", type=int, default=2, help="glide: DDPM-1000 vs DDIM samples per pair")
    p.add_argument("--pairs-n", type=int, default=120,
                   help="glide: two-object prompts (inpainting: 'add' edits); guides: 0 skips the guidance run")
    p.add_argument("--steps", type=int, default=50, help="glide: DDIM steps")
    p.add_argument("--respacing", default="fast27", help="upsamplers: the DDIM schedule to sample with")
    p.add_argument("--scales", help="guides: gradient guidance scales to try, e.g. 1,3,10")
    p.add_argument("--base", default="glide-shapes-tiny", help="guides: the GLIDE they steer")
    p.add_argument("--record", action="store_true",
                   help="store the metrics (and this command) in the checkpoint's manifest")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    add_precision_flag(p)
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in checkpoint manifests: the exact command that made them
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as err:
        print(f"unclip-lite {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
