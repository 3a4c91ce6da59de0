"""What ``unclip-lite sample glide`` does with its arguments: text-to-image, inpainting
(``--image`` and ``--hole``), upsampling (``--low-res``) and the base → upsampler cascade
(``--base``), each checked before any sampling starts."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from unclip_lite.glide.bundle import GlideBundle
from unclip_lite.glide.inpaint import box_mask


def read_images(path: str, size: int, n: int):
    """``n`` images [n, 3, size, size] in [0, 1] from a PNG: one image, repeated, or a grid of
    ``n`` tiles of ``size`` px (with torchvision's 2 px padding, as ``sample`` writes them)."""
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


def hole_mask(spec: str, size: int, n: int) -> torch.Tensor:
    """A mask [n, 1, size, size] (1 = keep) that erases the pixel box "left,top,right,bottom"."""
    try:
        box = tuple(int(v) for v in spec.split(","))
    except ValueError:
        raise ValueError(f"--hole must be four integers left,top,right,bottom in pixels, got {spec!r}") from None
    if len(box) != 4:
        raise ValueError(f"--hole must be four integers left,top,right,bottom in pixels, got {spec!r}")
    try:
        return box_mask(box, size, n)
    except ValueError as err:
        raise ValueError(f"--hole {spec!r}: {err}") from None


def sample_from_args(bundle: GlideBundle, args, load_guide: Callable) -> torch.Tensor:
    """Images ``[len(prompts) · n, 3, R, R]`` for the parsed ``sample`` arguments; ``load_guide(name)
    -> (guide, kind)`` resolves ``--guide`` (the registry's, passed down so this module need not
    know every kind)."""
    prompts = [p for p in args.prompt for _ in range(args.n)]
    guidance, extra = args.guidance, {}
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
            base = GlideBundle.load(args.base)
            if base.image_size != bundle.low_res_size:
                raise ValueError(f"--base {args.base} draws {base.image_size} px images; "
                                 f"this upsampler takes {bundle.low_res_size} px")
            extra["low_res"] = base.sample(prompts, args.guidance, args.sampler, args.steps, seed=args.seed,
                                           precision=args.precision, progress=True)
            guidance = 1.0  # the upsampler refines what the base drew: its plain conditional model
    return bundle.sample(prompts, guidance, args.sampler, None if args.base else args.steps,
                         seed=args.seed, precision=args.precision,
                         respacing="fast27" if args.base and not args.respacing else args.respacing,
                         progress=True, **extra)
