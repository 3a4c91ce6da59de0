"""CLIP training-step time: unclip_lite vs open_clip with the identical config, side by side.

Both models get the same config (``to_open_clip_config``), the same batch, the same AdamW
and the same precision; steps alternate between the two so that machine noise hits both
alike. Goal: ratio ours / open_clip ≤ 1.0.

    .venv/bin/python benchmarks/bench_clip_step.py [--config shapes-tiny] [--batch 256] [--precision bf16]
"""
import argparse
import statistics
import time

import open_clip
import torch
import torch.nn.functional as F

from unclip_lite.clip import build_clip, get_config
from unclip_lite.clip.interop import to_open_clip_config
from unclip_lite.clip.loss import clip_loss


def make_step(model, encode):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(images, tokens, precision):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            img, txt, scale = encode(images, tokens)
            loss = clip_loss(F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1), scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="shapes-tiny")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=40)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = get_config(args.config)
    cfg.text.vocab_size = args.vocab
    cfg.text.eot_token_id = None  # open_clip pools at the largest id; make ours do the same
    ours = build_clip(cfg)
    theirs = open_clip.CLIP(**to_open_clip_config(cfg))
    steps = {
        "unclip_lite": make_step(ours, lambda i, t: ours(i, t)),
        "open_clip": make_step(theirs, lambda i, t: theirs(i, t)[:2] + (theirs.logit_scale.exp(),)),
    }
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    tokens = torch.randint(1, args.vocab - 1, (args.batch, cfg.text.context_length), generator=g)
    tokens[:, 12] = args.vocab - 1  # end token: the largest id
    tokens[:, 13:] = 0
    times = {name: [] for name in steps}
    for name, step in steps.items():  # warm-up
        step(images, tokens, args.precision)
    for _ in range(args.steps):
        for name, step in steps.items():
            start = time.perf_counter()
            step(images, tokens, args.precision)
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"CLIP {args.config}: batch {args.batch}, {args.precision}, {args.threads} threads, "
          f"median of {args.steps} alternating steps")
    for name, t in med.items():
        print(f"  {name:12s} {t * 1000:8.1f} ms/step")
    ratio = med["unclip_lite"] / med["open_clip"]
    print(f"  ratio unclip_lite / open_clip = {ratio:.3f}   goal <= 1.0: {'met' if ratio <= 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
