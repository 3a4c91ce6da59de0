"""fp32 vs bf16 on this machine, side by side — and whether ``precision="auto"`` picked the faster.

Three workloads, each timed in both precisions in alternation (fp32, bf16, fp32, …) so that
machine noise hits both alike: a CLIP training step (the ``clip-shapes-tiny`` recipe's model
and batches), a GLIDE U-Net training step (the ``glide-shapes-tiny`` recipe's model and loss)
and a DDIM sample from the shipped ``glide-shapes-tiny`` with classifier-free guidance.

It prints the CPU (model, capability, native bf16 or not), each median, the ratio bf16 / fp32
and which precision ``auto`` resolves to, and exits 1 if ``auto`` is slower than the other
choice on any workload by more than the noise margin (``--margin``, default 5%).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_precision.py [--rounds 3]

On a CPU that emulates bf16 (AVX2 only) a bf16 step is tens of times slower than fp32, so the
default batches are small enough for the whole run to take a couple of minutes there.
"""
import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from side_by_side import adamw_step, alternate  # noqa: E402
from unclip_lite.clip.recipes import ShapesData, contrastive_step, new_shapes_clip, shapes_batches  # noqa: E402
from unclip_lite.glide.bundle import load_glide  # noqa: E402
from unclip_lite.glide.recipes import GlideData, diffusion_loss, glide_batches, new_glide  # noqa: E402
from unclip_lite.hardware import hardware, resolve_precision  # noqa: E402


def clip_step(batch: int):
    bundle = new_shapes_clip(seed=0)
    data = shapes_batches(bundle, ShapesData(batch_size=batch))(0)
    step = adamw_step(bundle.model, lambda: contrastive_step(bundle.model, data)[0])
    return lambda precision: step(precision)


def unet_step(batch: int):
    bundle = new_glide(seed=0)
    data = glide_batches(bundle, GlideData(batch_size=batch))(0)
    loss = diffusion_loss(bundle.diffusion, 5.0)
    step = adamw_step(bundle.model, lambda: loss(bundle.model, data)[0])
    return lambda precision: step(precision)


def ddim_sample(n: int, steps: int):
    glide = load_glide("glide-shapes-tiny")
    prompts = (["a red star", "a blue circle", "a green square", "a yellow heart"] * n)[:n]
    return lambda precision: glide.sample(prompts, guidance=3.0, steps=steps, seed=0, precision=precision)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per workload and precision")
    parser.add_argument("--clip-batch", type=int, default=32)
    parser.add_argument("--unet-batch", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=2, help="images per DDIM sample")
    parser.add_argument("--ddim-steps", type=int, default=5)
    parser.add_argument("--margin", type=float, default=0.05, help="noise allowed before 'auto' counts as slower")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 0)) or None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    auto = resolve_precision("auto", "cpu")
    print(f"{hardware()}; auto -> {auto}")
    workloads = {
        f"CLIP train step (batch {args.clip_batch})": clip_step(args.clip_batch),
        f"U-Net train step (batch {args.unet_batch})": unet_step(args.unet_batch),
        f"DDIM-{args.ddim_steps} sample ({args.prompts} images, guidance 3)": ddim_sample(args.prompts, args.ddim_steps),
    }
    wrong = []
    for name, run in workloads.items():
        medians = alternate({p: (lambda p=p: run(p)) for p in ("fp32", "bf16")}, args.rounds)
        ratio = medians["bf16"] / medians["fp32"]
        other = "bf16" if auto == "fp32" else "fp32"
        ok = medians[auto] <= medians[other] * (1 + args.margin)
        wrong += [] if ok else [name]
        print(f"  {name:44s} fp32 {medians['fp32'] * 1000:9.1f} ms   bf16 {medians['bf16'] * 1000:9.1f} ms   "
              f"bf16/fp32 = {ratio:6.2f}   auto = {auto}: {'the faster' if ok else 'SLOWER'}")
    if wrong:
        print(f"auto picked the slower precision for: {', '.join(wrong)}", file=sys.stderr)
        return 1
    print("auto picked the faster precision (or one within the noise margin) on every workload")
    return 0


if __name__ == "__main__":
    sys.exit(main())
