"""CLIP training-step time: unclip_lite vs open_clip with the identical config, side by side.

Both models get the same config (``to_open_clip_config``), the same batch, the same AdamW
and the same precision; steps alternate between the two so that machine noise hits both
alike. Goal: ratio ours / open_clip ≤ 1.0.

    .venv/bin/python benchmarks/bench_clip_step.py [--config shapes-tiny] [--batch 256] [--precision auto]
"""
import argparse
from typing import Callable

import open_clip
import torch
import torch.nn.functional as F

from side_by_side import adamw_step, alternate, ratio_line
from unclip_lite.clip import build_clip, get_config
from unclip_lite.clip.interop import to_open_clip_config
from unclip_lite.clip.loss import clip_loss
from unclip_lite.hardware import resolve_precision


def contrastive(encode: Callable, images: torch.Tensor, tokens: torch.Tensor) -> Callable:
    def loss():
        img, txt, scale = encode(images, tokens)
        return clip_loss(F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1), scale)

    return loss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="shapes-tiny")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=40)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="auto: bf16 only where this CPU computes it natively (bench_precision.py compares)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.precision = resolve_precision(args.precision)
    cfg = get_config(args.config)
    cfg.text.vocab_size = args.vocab
    cfg.text.eot_token_id = None  # open_clip pools at the largest id; make ours do the same
    ours = build_clip(cfg)
    theirs = open_clip.CLIP(**to_open_clip_config(cfg))
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    tokens = torch.randint(1, args.vocab - 1, (args.batch, cfg.text.context_length), generator=g)
    tokens[:, 12] = args.vocab - 1  # end token: the largest id
    tokens[:, 13:] = 0
    steps = {
        "unclip_lite": adamw_step(ours, contrastive(lambda i, t: ours(i, t), images, tokens)),
        "open_clip": adamw_step(theirs, contrastive(
            lambda i, t: theirs(i, t)[:2] + (theirs.logit_scale.exp(),), images, tokens)),
    }
    medians = alternate({name: (lambda s=s: s(args.precision)) for name, s in steps.items()}, args.steps)
    print(f"CLIP {args.config}: batch {args.batch}, {args.precision}, {args.threads} threads, "
          f"median of {args.steps} alternating steps")
    print("  " + ratio_line(medians, "unclip_lite", "open_clip"))

if __name__ == "__main__":
    main()
