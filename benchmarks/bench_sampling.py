"""Sampling time per image: DDPM through all 1,000 steps vs DDIM with 50, same model, same prompts.

The model is the shipped ``glide-shapes-tiny`` (text-conditional, classifier-free guidance at
scale 3, so every step is one batched forward over 2N images). Both samplers run in one process,
one after the other, in the precision ``auto`` picks here (or those named). DDIM-50 makes 20× fewer network calls;
the ratio shows how much of that survives the per-step overhead.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_sampling.py [--n 4] [--precisions auto fp32 bf16]
"""
import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from unclip_lite.glide.bundle import load_glide  # noqa: E402
from unclip_lite.hardware import resolve_precision  # noqa: E402


def seconds_per_image(glide, prompts, sampler, steps, precision) -> float:
    start = time.perf_counter()
    glide.sample(prompts, guidance=3.0, sampler=sampler, steps=steps, seed=0, precision=precision)
    return (time.perf_counter() - start) / len(prompts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="glide-shapes-tiny")
    parser.add_argument("--n", type=int, default=4, help="images per run (one batch)")
    parser.add_argument("--precisions", nargs="+", default=["auto"], choices=["auto", "fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    glide = load_glide(args.checkpoint)
    T = glide.diffusion.num_timesteps
    prompts = ["a red star", "a blue circle", "a green square", "a yellow heart"] * (args.n // 4 + 1)
    prompts = prompts[:args.n]
    print(f"{args.checkpoint}: {sum(p.numel() for p in glide.model.parameters()):,} params, "
          f"{glide.image_size} px, batch {args.n}, guidance 3 (2 x {args.n} images per forward), "
          f"{args.threads} threads")
    seconds_per_image(glide, prompts[:1], "ddim", 2, "fp32")  # warm-up
    for precision in dict.fromkeys(resolve_precision(p) for p in args.precisions):
        ddim = seconds_per_image(glide, prompts, "ddim", 50, precision)
        ddpm = seconds_per_image(glide, prompts, "ddpm", None, precision)
        print(f"{precision}: DDPM-{T} {ddpm:.2f} s/image, DDIM-50 {ddim:.3f} s/image, "
              f"DDPM/DDIM {ddpm / ddim:.1f}x (step-count ratio {T / 50:.0f}x)")


if __name__ == "__main__":
    main()
