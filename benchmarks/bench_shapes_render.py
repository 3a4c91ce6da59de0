"""Shapes rendering throughput: our batched signed-distance renderer vs PIL, side by side.

The PIL baseline is how one would usually draw such images: one image at a time with
ImageDraw at 4× resolution, then a LANCZOS downsample for anti-aliasing (circles only,
the cheapest shape for PIL). Goal: ≥ 5,000 images/s at 32 px on a 2-core CPU.

    .venv/bin/python benchmarks/bench_shapes_render.py [--resolution 32] [--threads 1]
"""
import argparse
import time

import torch
from PIL import Image, ImageDraw

from unclip_lite.data import shapes


def ours(n: int, batch: int, resolution: int) -> float:
    gen = torch.Generator().manual_seed(0)
    scenes = [shapes.sample_scenes(batch, gen) for _ in range(n // batch)]
    start = time.perf_counter()
    for s in scenes:
        shapes.render(s, resolution)
    return (n // batch) * batch / (time.perf_counter() - start)


def pil_baseline(n: int, resolution: int) -> float:
    scenes = shapes.sample_scenes(n, 0)
    big = resolution * 4
    start = time.perf_counter()
    for b in range(n):
        image = Image.new("RGB", (big, big), shapes.BACKGROUND)
        x, y, r = (float(v) * big for v in (scenes.x[b, 0], scenes.y[b, 0], scenes.radius[b, 0]))
        colour = shapes.PALETTE[shapes.COLOURS[scenes.colour[b, 0]]]
        ImageDraw.Draw(image).ellipse([x - r, y - r, x + r, y + r], fill=colour)
        image.resize((resolution, resolution), Image.LANCZOS)
    return n / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ours(args.batch, args.batch, args.resolution)  # warm up
    a = max(ours(20 * args.batch, args.batch, args.resolution) for _ in range(3))
    b = max(pil_baseline(1000, args.resolution) for _ in range(2))
    print(f"resolution {args.resolution}px, batch {args.batch}, {args.threads} thread(s)")
    print(f"  unclip_lite SDF renderer (5 shapes): {a:9,.0f} images/s")
    print(f"  PIL ImageDraw 4x + LANCZOS (circles): {b:9,.0f} images/s")
    print(f"  ratio ours/PIL: {a / b:.1f}x   goal >= 5,000 images/s: {'met' if a >= 5000 else 'MISSED'}")


if __name__ == "__main__":
    main()
