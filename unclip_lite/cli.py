"""The ``unclip-lite`` command line (also ``python -m unclip_lite``).

Each subcommand is a small function; ``train``, ``eval`` and ``sample`` look the model kind
up in :mod:`unclip_lite.kinds`. Imports sit inside the functions on purpose: ``unclip-lite
info`` or ``--help`` should answer at once, without loading torch and every model kind.
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
    import torch

    from unclip_lite.bundle import manifest_for
    from unclip_lite.checkpoints import REGISTRY_DIR
    from unclip_lite.kinds import get_kind
    from unclip_lite.utils import override_fields

    kind = get_kind(args.model)
    if not kind.recipes:
        raise ValueError(f"{kind.name!r} has no training recipe")
    if args.config not in kind.recipes:
        raise ValueError(f"no {kind.name} training recipe for config {args.config!r}; "
                         f"recipes: {', '.join(kind.recipes)}")
    entry = kind.recipes[args.config]
    recipe = entry.make()
    overrides = override_fields(recipe, list(args.set or []))  # every override is checked before any work
    for flag, assignment in train_flag_overrides(args):
        try:
            overrides.update(override_fields(recipe, [assignment]))
        except ValueError as err:
            if not str(err).startswith("unknown recipe field"):
                raise ValueError(f"{flag}: {err}") from None
            if flag == "--data":
                takers = [name for name, e in kind.recipes.items() if reads_data(e.make())]
                raise ValueError(f"{kind.name} recipe {args.config!r} makes its own data and takes no --data; "
                                 f"{kind.name} recipes that train on yours: {', '.join(takers) or 'none'}") from None
            raise ValueError(f"{flag} does not apply to {kind.name} recipe {args.config!r}: it has no field "
                             f"{assignment.partition('=')[0]!r}") from None
    if reads_data(recipe):  # a real-data recipe: the path is given and its files are there, before any work
        from unclip_lite.data.sharded import open_source

        if not recipe.data.path:
            raise ValueError(f"{kind.name} recipe {args.config!r} trains on your data: give --data PATH "
                             f"(shards 'dir/{{00000..00999}}.tar', a folder of .tar, a CSV, or an image folder)")
        open_source(recipe.data.path, recipe.data.format)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.name or f"{kind.name}-{args.config}"
    out = Path(args.out) if args.out else REGISTRY_DIR / f"{name}.safetensors"
    run_dir = Path(args.run_dir or Path("runs") / name)
    command = command_line(args)
    bundle, trainer = entry.train(recipe, out_dir=run_dir, resume=not args.fresh, max_minutes=args.max_minutes)
    if trainer.rank != 0:
        return 0
    if trainer.step < recipe.train.steps:
        print(f"stopped at step {trainer.step} of {recipe.train.steps} (--max-minutes); "
              f"run the same command again to resume from {run_dir}", file=sys.stderr)
        return 0
    metrics = entry.quick_metrics(bundle)
    path = bundle.save(out, manifest=manifest_for(trainer, command, metrics, overrides),
                       dtype=torch.float16 if args.fp16 else None)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {path}", file=sys.stderr)
    return 0


# ``train`` flags that set recipe fields (override_fields paths; a bare name must be unique in the
# recipe): the same mechanism as --set, so a new recipe needs no new CLI code.
TRAIN_FLAG_FIELDS = (("steps", "train.steps"), ("precision", "train.precision"), ("lr", "train.lr"),
                     ("accumulate", "train.accumulate"), ("strategy", "train.strategy"),
                     ("compile", "train.compile"), ("checkpointing", "train.checkpointing"),
                     ("batch", "batch_size"), ("data", "data.path"), ("data_format", "data.format"),
                     ("workers", "data.workers"), ("pretrained", "pretrained"), ("clip", "clip"))


def train_flag_overrides(args) -> list[tuple[str, str]]:
    """``(flag, "field=value")`` for each field-setting flag given on the command line."""
    out = []
    for attribute, path in TRAIN_FLAG_FIELDS:
        value = getattr(args, attribute)
        if value is None or value is False:
            continue
        out.append(("--" + attribute.replace("_", "-"), f"{path}={'true' if value is True else value}"))
    return out


def reads_data(recipe) -> bool:
    """Whether a recipe trains on external data: it has a ``data.path`` field (``--data``)."""
    from dataclasses import fields, is_dataclass

    data = getattr(recipe, "data", None)
    return is_dataclass(data) and any(f.name == "path" for f in fields(data))


def cmd_eval(args) -> int:
    """Recompute a checkpoint's metrics; print them as one JSON object on stdout."""
    import time

    import torch

    from unclip_lite.checkpoints import update_manifest
    from unclip_lite.kinds import KINDS, EvalOptions, kind_of

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint in KINDS and KINDS[args.checkpoint].default_checkpoint:  # `eval clipdraw`
        args.checkpoint = KINDS[args.checkpoint].default_checkpoint
    kind = kind_of(args.checkpoint)
    if kind.evaluate is None:
        raise ValueError(f"{args.checkpoint}: no evaluation for a checkpoint of kind {kind.name!r}")
    scales = tuple(float(s) for s in args.scales.split(",")) if args.scales else None
    options = EvalOptions(n=args.n, per_pair=args.per_pair, ddpm_per_pair=args.ddpm_per_pair,
                          attr_per_pair=args.attr_per_pair, pairs_n=args.pairs_n,
                          steps=args.steps, respacing=args.respacing, scales=scales, base=args.base,
                          precision=args.precision)
    start = time.perf_counter()
    metrics = kind.evaluate(kind.bundle.load(args.checkpoint), options)
    print(json.dumps(metrics, sort_keys=True))
    if args.record:
        from unclip_lite.hardware import hardware

        update_manifest(args.checkpoint, metrics=metrics, eval_command=command_line(args),
                        eval_seconds=round(time.perf_counter() - start, 1), eval_hardware=hardware(),
                        eval_threads=torch.get_num_threads())
    return 0


def command_line(args) -> str:
    """The exact command, as manifests record it."""
    import shlex

    return "unclip-lite " + " ".join(shlex.quote(a) for a in args.argv)


def kind_that_can(name: str, ability: str, refusal: str):
    """The registered kind ``name`` if it has ``ability`` (``sample``, ``compose``), else a clear error."""
    from unclip_lite.kinds import KINDS, get_kind

    kind = get_kind(name)
    if getattr(kind, ability) is None:
        able = ", ".join(k.name for k in KINDS.values() if getattr(k, ability))
        raise ValueError(f"{kind.name!r} {refusal}: {able}")
    return kind


def cmd_compose(args) -> int:
    """Write a checkpoint without weights of its own (CLIPDraw, VQGAN-CLIP) from shipped ones."""
    import inspect
    import time

    from unclip_lite.checkpoints import REGISTRY_DIR
    from unclip_lite.hardware import hardware

    kind = kind_that_can(args.model, "compose", "checkpoints are trained, not composed; composable")
    components = {}
    for item in args.use or []:
        role, sep, name = item.partition("=")
        if not sep or not role or not name:
            raise ValueError(f"--use takes ROLE=CHECKPOINT (e.g. clip=clip-shapes-tiny), got {item!r}")
        components[role] = name
    roles = [r for r in inspect.signature(kind.compose).parameters if r != "config"]
    unknown = sorted(set(components) - set(roles))
    if unknown:
        raise ValueError(f"{kind.name} has no component {', '.join(unknown)}; its roles: {', '.join(roles)}")
    bundle = kind.compose(**components)
    path = Path(args.out) if args.out else REGISTRY_DIR / f"{args.name or kind.default_checkpoint}.safetensors"
    path = bundle.save(path, manifest={"command": command_line(args), "hardware": hardware(),
                                       "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_sample(args) -> int:
    """Draw images from a checkpoint: a grid PNG or one PNG per sample."""
    import torch
    from torchvision.utils import save_image

    kind = kind_that_can(args.model, "sample", "models do not draw images; sampleable")
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.checkpoint = args.checkpoint or kind.default_checkpoint
    images = kind.sample(kind.load(args) if kind.load else kind.bundle.load(args.checkpoint), args)
    if args.out_dir:
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            save_image(image, out_dir / f"{i:04d}.png")
        print(f"wrote {len(images)} images to {out_dir}", file=sys.stderr)
    else:
        save_image(images, args.out, nrow=args.n, padding=2)
        print(f"wrote {args.out} ({len(images)} images, {args.n} per row)", file=sys.stderr)
    return 0


def add_precision_flag(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    from unclip_lite.hardware import PRECISIONS

    parser.add_argument("--precision", default=default, choices=PRECISIONS,
                        help="auto: bf16 where the hardware computes it natively, fp32 elsewhere; or force "
                             "fp32 / bf16 / fp16 (training on a GPU)" + ("" if default else " (default: the recipe's)"))


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """``train``'s data and scaling flags; each sets one recipe field (TRAIN_FLAG_FIELDS)."""
    from unclip_lite.data.sharded import FORMATS
    from unclip_lite.train.trainer import STRATEGIES

    parser.add_argument("--data", metavar="PATH", help="real-data recipes: webdataset shards "
                        "'dir/{00000..00999}.tar' (quote it), a folder of .tar, one .tar, an open_clip CSV, "
                        "or an image folder of NNN.png + NNN.txt (= --set data.path=PATH)")
    parser.add_argument("--data-format", choices=FORMATS, help="default auto: decided from the path")
    parser.add_argument("--batch", type=int, metavar="N", help="micro-batch per process (= --set batch_size=N)")
    parser.add_argument("--workers", type=int, metavar="N", help="DataLoader processes prefetching batches; "
                        "the batches are the same for any N (= --set data.workers=N)")
    parser.add_argument("--lr", type=float, help="peak learning rate (= --set train.lr=LR)")
    parser.add_argument("--accumulate", type=int, metavar="N", help="micro-batches per optimiser step")
    parser.add_argument("--strategy", choices=STRATEGIES, help="auto: DDP under torchrun with several "
                        "processes, else none; ddp; fsdp (FSDP2, per block)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (minutes to compile)")
    parser.add_argument("--checkpointing", action="store_true",
                        help="activation checkpointing: recompute each block's activations in backward")
    parser.add_argument("--pretrained", metavar="FILE", help="clip real-data recipes: start from a local "
                        "open_clip checkpoint file (never downloaded)")
    parser.add_argument("--clip", metavar="CHECKPOINT", help="decoder, prior, ar-prior: the frozen CLIP whose "
                        "embeddings they read, a CLIP checkpoint file or shipped name (= --set clip=CHECKPOINT)")


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
    p.add_argument("model", help="a model kind with training recipes: clip, glide, classifier, judge, decoder, "
                                  "prior, ar-prior, upsampler, vqgan (an unknown kind lists them all)")
    p.add_argument("--config", required=True, help="recipe name, e.g. shapes-tiny, emoji-tiny, ViT-B-32, base-64, paper "
                                                   "(an unknown name lists the kind's recipes)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set lr=3e-4 --set data.batch_size=64 (repeatable)")
    p.add_argument("--steps", type=int, help="override the recipe's number of steps (= --set train.steps=N)")
    add_train_flags(p)
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
    p.add_argument("model", help="model kind: glide, unclip, clipdraw or vqgan-clip")
    p.add_argument("--prompt", action="append", required=True,
                   help="a caption; repeat for more rows (vqgan-clip: 'text:weight', all steer one image)")
    p.add_argument("--checkpoint", help="a shipped checkpoint name or a path (default: glide-shapes-tiny, "
                                        "unclip-shapes-tiny)")
    p.add_argument("--guidance", type=float, default=3.0,
                   help="classifier-free guidance scale, 0..50 (unclip: the decoder's)")
    p.add_argument("--sampler", default="ddim", help="ddim or ddpm")
    p.add_argument("--steps", type=int, help="sampling steps (ddim: default 50; ddpm: default all); "
                                             "clipdraw, vqgan-clip: optimiser steps (default: the checkpoint's)")
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
    p.add_argument("--prior", default="diffusion", choices=["diffusion", "ar"], help="unclip: which prior")
    p.add_argument("--prior-guidance", type=float, default=2.0, help="unclip: the prior's guidance scale")
    p.add_argument("--prior-steps", type=int, default=64, help="unclip: the diffusion prior's DDIM steps")
    p.add_argument("--rerank", type=int, default=1, help="unclip: draw N per image, keep the best CLIP score")
    p.add_argument("--stages", type=int, help="unclip: how many upsamplers to run (default all)")
    p.add_argument("--strokes", type=int, help="clipdraw: number of strokes (default: the checkpoint's)")
    p.add_argument("--no-augment", action="store_true", help="clipdraw: one plain view per step (the ablation)")
    p.add_argument("--init-image", help="vqgan-clip: start from this PNG's codes (the VQGAN's size)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--out", default="samples.png", help="one grid PNG, a row per prompt")
    out.add_argument("--out-dir", help="one PNG per sample instead")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.set_defaults(func=cmd_sample)
    p = sub.add_parser("compose", help=cmd_compose.__doc__)
    p.add_argument("model", help="model kind: clipdraw or vqgan-clip")
    p.add_argument("--use", action="append", metavar="ROLE=CHECKPOINT",
                   help="a component, e.g. --use clip=clip-shapes-tiny --use vqgan=vqgan-shapes-tiny")
    p.add_argument("--name", help="checkpoint name (default: the kind's shipped one, e.g. clipdraw-shapes-tiny)")
    p.add_argument("--out", help="weights path instead (default: data/checkpoints/<name>.safetensors)")
    p.set_defaults(func=cmd_compose)
    p = sub.add_parser("eval", help=cmd_eval.__doc__)
    p.add_argument("checkpoint", help="a shipped checkpoint name or a path (clipdraw, vqgan-clip, unclip: "
                                      "the kind's shipped one)")
    p.add_argument("--n", type=int, default=1000,
                   help="evaluation images per split (clip, judge); clipdraw, vqgan-clip: prompts (<= 40)")
    p.add_argument("--per-pair", type=int,
                   help="glide: DDIM samples per colour x shape pair (4); clipdraw, vqgan-clip: seeds (2)")
    p.add_argument("--ddpm-per-pair", type=int, default=2, help="glide: DDPM-1000 vs DDIM samples per pair")
    p.add_argument("--attr-per-pair", type=int, default=2,
                   help="glide: samples per pair of prompts naming a size and a position (0 skips them)")
    p.add_argument("--pairs-n", type=int, default=120,
                   help="glide: two-object prompts (inpainting: 'add' edits); guides: 0 skips the guidance run")
    p.add_argument("--steps", type=int, help="glide: DDIM steps (50); clipdraw, vqgan-clip: optimiser steps")
    p.add_argument("--respacing", default="fast27", help="upsamplers: the DDIM schedule to sample with")
    p.add_argument("--scales", help="guides: gradient guidance scales to try, e.g. 1,3,10")
    p.add_argument("--base", default="glide-shapes-tiny", help="guides: the GLIDE they steer")
    p.add_argument("--record", action="store_true",
                   help="store the metrics (and this command) in the checkpoint's manifest")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    add_precision_flag(p)
    p.set_defaults(func=cmd_eval)
    from unclip_lite.planner import add_plan_arguments, cmd_plan  # torch is imported only when it plans

    p = sub.add_parser("plan", help=cmd_plan.__doc__)
    add_plan_arguments(p)
    p.set_defaults(func=cmd_plan)
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
