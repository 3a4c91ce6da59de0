"""The live sampling checks of tests/test_shipped_checkpoints.py, with their numbers, per precision.

The tests assert bars; this prints what each check measures, so that two precisions can be
compared on the same prompts and seeds (sampling in fp32 instead of bf16 must not change
the judged accuracy beyond noise):

* ``glide-shapes-tiny``: 40 prompts "a {colour} {shape}", DDIM-25 at the manifest's best
  guidance, seed 123, judged (test bars: colour >= 0.9, shape >= 0.8);
* ``glide-inpaint-shapes-tiny``: two edits, DDIM-10: pixels outside the hole exact;
* ``glide-upsample-shapes-tiny``: PSNR gain over bicubic on 8 scenes (test bar: >= 1.5 dB).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/shipped_live_checks.py [--precisions auto fp32 bf16]

On a CPU without native bf16, bf16 here takes tens of minutes (it is emulated); ``auto`` and
``fp32`` are then the same run.
"""
import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from unclip_lite.checkpoints import read_manifest  # noqa: E402
from unclip_lite.data import shapes  # noqa: E402
from unclip_lite.glide.bundle import load_glide  # noqa: E402
from unclip_lite.glide.evaluate import evaluate_upsampler, judge_single, single_object_prompts  # noqa: E402
from unclip_lite.hardware import hardware, resolve_precision  # noqa: E402
from unclip_lite.judge import load_judge  # noqa: E402


def glide_check(precision: str) -> dict:
    best = read_manifest("glide-shapes-tiny")["metrics"]["best_guidance"]
    torch.manual_seed(0)
    prompts, colour, shape, heldout = single_object_prompts(per_pair=1)
    images = load_glide("glide-shapes-tiny").sample(prompts, best, "ddim", 25, seed=123, precision=precision)
    live = judge_single(load_judge(), images, colour, shape, heldout)
    return {k: round(live[k], 4) for k in ("all_colour", "all_shape", "all_joint", "heldout_joint")}


def inpaint_check(precision: str) -> dict:
    image = shapes.render(shapes.make_scenes(["red", "green"], ["circle", "square"]), 32)
    mask = torch.ones(2, 1, 32, 32)
    mask[..., 4:28, 4:28] = 0
    out = load_glide("glide-inpaint-shapes-tiny").sample(["a blue star", "a yellow heart"], 3.0, "ddim", 10,
                                                         seed=0, precision=precision, inpaint=(image, mask))
    keep = mask.expand_as(image).bool()
    return {"kept_exact": bool(torch.equal(out[keep], image[keep])),
            "hole_changed": not torch.equal(out[~keep], image[~keep])}


def upsample_check(precision: str) -> dict:
    torch.manual_seed(0)
    live = evaluate_upsampler(load_glide("glide-upsample-shapes-tiny"), n=8, precision=precision, progress=False)
    return {k: live[k] for k in ("psnr_upsampler", "psnr_bicubic", "gain_over_bicubic_db")}


CHECKS = {"glide-shapes-tiny": glide_check, "glide-inpaint-shapes-tiny": inpaint_check,
          "glide-upsample-shapes-tiny": upsample_check}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", nargs="+", default=["auto", "fp32"], choices=["auto", "fp32", "bf16"])
    parser.add_argument("--checks", nargs="+", default=list(CHECKS), choices=list(CHECKS))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 0)) or None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(hardware())
    for precision in args.precisions:
        resolved = resolve_precision(precision)
        for name in args.checks:
            check = CHECKS[name]
            start = time.perf_counter()
            result = check(resolved)
            print(json.dumps({"precision": precision, "resolved": resolved, "checkpoint": name, **result,
                              "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
