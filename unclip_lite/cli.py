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
    from unclip_lite.clip import recipes

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model != "clip":
        raise ValueError(f"unknown model kind {args.model!r}; trainable here: clip")
    if args.config not in recipes.RECIPES:
        raise ValueError(f"no training recipe for config {args.config!r}; "
                         f"recipes: {', '.join(recipes.RECIPES)}")
    recipe = recipes.RECIPES[args.config]()
    if args.steps:
        recipe.train.steps = args.steps
    name = args.name or f"clip-{args.config}"
    out = Path(args.out) if args.out else REGISTRY_DIR / f"{name}.safetensors"
    run_dir = Path(args.run_dir or Path("runs") / name)
    bundle, trainer = recipes.train(args.config, recipe, out_dir=run_dir, resume=not args.fresh)
    if trainer.rank != 0:
        return 0
    metrics = recipes.evaluate(args.config, bundle)
    command = "unclip-lite " + " ".join(shlex.quote(a) for a in args.argv)
    path = bundle.save(out, manifest=recipes.manifest_for(trainer, command, metrics),
                       dtype=torch.float16 if args.fp16 else None)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_eval(args) -> int:
    """Recompute a checkpoint's metrics; print them as one JSON object on stdout."""
    import torch

    from unclip_lite.checkpoints import read_manifest
    from unclip_lite.clip import recipes
    from unclip_lite.clip.bundle import load_clip

    if args.threads:
        torch.set_num_threads(args.threads)
    manifest = read_manifest(args.checkpoint)
    kind = manifest.get("kind")
    if kind == "judge":
        from unclip_lite.judge import evaluate_judge, load_judge

        print(json.dumps(evaluate_judge(load_judge(args.checkpoint), n=args.n), sort_keys=True))
        return 0
    if kind != "clip":
        raise ValueError(f"{args.checkpoint}: no evaluation for a checkpoint of kind {kind!r}")
    bundle = load_clip(args.checkpoint)
    world = bundle.extra.get("recipe", {}).get("model", "shapes-tiny")
    print(json.dumps(recipes.evaluate(world, bundle, n=args.n), sort_keys=True))
    return 0


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
    p.add_argument("model", help="model kind: clip")
    p.add_argument("--config", required=True, help="recipe name, e.g. shapes-tiny or emoji-tiny")
    p.add_argument("--steps", type=int, help="override the recipe's number of steps")
    p.add_argument("--name", help="checkpoint name (default: <model>-<config>)")
    p.add_argument("--out", help="weights path (default: data/checkpoints/<name>.safetensors)")
    p.add_argument("--run-dir", help="where the resumable training state lives (default runs/<name>)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing training state")
    p.add_argument("--fp16", action="store_true", help="store the weights in fp16")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help=cmd_eval.__doc__)
    p.add_argument("checkpoint", help="a shipped checkpoint name or a path")
    p.add_argument("--n", type=int, default=1000, help="evaluation images per split")
    p.add_argument("--threads", type=int, help="torch CPU threads")
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
