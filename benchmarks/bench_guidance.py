"""What each kind of guidance costs per image: classifier-free vs classifier vs CLIP guidance.

Same prompts, same DDIM-50 schedule, the shipped ``glide-shapes-tiny`` as the diffusion
model, timed in alternation in one process (``side_by_side.alternate``) so a noisy machine
slows all alike. Classifier-free guidance at s = 2 runs one batched forward over 2N images;
at s = 0 (the unconditional model, what the gradient guides steer in chapter 06) over N,
plus, for the guides, a forward and backward through the classifier or noise-aware CLIP.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_guidance.py [--n 8] [--rounds 3]
"""
import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from side_by_side import alternate  # noqa: E402

from unclip_lite.kinds import load_guide  # noqa: E402
from unclip_lite.glide.bundle import load_glide  # noqa: E402
from unclip_lite.hardware import resolve_precision  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="images per run (one batch)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    glide = load_glide("glide-shapes-tiny")
    clip_guide, _ = load_guide("clip-noised-shapes-tiny")
    classifier_guide, _ = load_guide("classifier-noised-shapes-tiny")
    prompts = (["a red star", "a blue circle", "a green square", "a yellow heart"] * args.n)[:args.n]

    def run(**kwargs):
        return lambda: glide.sample(prompts, sampler="ddim", steps=args.steps, seed=0, **kwargs)

    medians = alternate({
        "classifier-free s=2": run(guidance=2.0),
        "unconditional s=0": run(guidance=0.0),
        "classifier guidance s=30": run(guidance=0.0, guide=classifier_guide, guide_scale=30.0),
        "CLIP guidance s=300": run(guidance=0.0, guide=clip_guide, guide_scale=300.0),
    }, rounds=args.rounds)
    base = medians["classifier-free s=2"]
    print(f"glide-shapes-tiny, DDIM-{args.steps}, batch {args.n}, {resolve_precision()}, {args.threads} threads, "
          f"median of {args.rounds} alternating rounds")
    for name, seconds in medians.items():
        print(f"  {name:26s} {seconds / args.n:.3f} s/image  ({seconds / base:.2f}x classifier-free)")


if __name__ == "__main__":
    main()
