"""The ``unclip-lite`` command line (also ``python -m unclip_lite``).

Subcommands are small functions registered in :data:`COMMANDS`; later chapters add
``train``, ``sample`` and ``eval`` beside the ones here.
"""
from __future__ import annotations

import argparse
import json
import sys


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"unclip-lite {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
