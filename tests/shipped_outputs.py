"""Fixed-seed outputs of every shipped checkpoint: what a user sees, pinned before a refactor.

For each checkpoint, a small deterministic output in fp32 — CLIP image and text embeddings,
the noise-aware CLIP's embedding of x_t, the classifier's and the judge's logits, a DDIM
sample of each GLIDE variant — computed from inputs made here (Shapes renders, fixed
noise). ``record`` saves them to a safetensors file; ``check`` recomputes them and compares:

    .venv/bin/python tests/shipped_outputs.py record runs/shipped_outputs.safetensors
    .venv/bin/python tests/shipped_outputs.py check runs/shipped_outputs.safetensors  # exact, same machine

On the machine that recorded them a refactor must reproduce every tensor bit for bit
(``check`` prints each sha256 and says which differ). ``tests/test_shipped_outputs.py``
holds the copy in ``tests/data/`` to a float32 tolerance, since another CPU rounds differently.
"""
from __future__ import annotations

import hashlib
import sys

import torch
from safetensors.torch import load_file, save_file

from unclip_lite.data import shapes


def _inputs(size: int) -> tuple[torch.Tensor, list[str]]:
    scenes = shapes.sample_scenes(4, torch.Generator().manual_seed(7), split="all")
    return shapes.render(scenes, size), shapes.captions(scenes, 7)


def clip_outputs(name: str) -> dict[str, torch.Tensor]:
    from unclip_lite.clip.bundle import load_clip

    bundle = load_clip(name)
    images, captions = _inputs(bundle.image_size)
    if name == "clip-emoji-tiny":  # its vocabulary holds emoji names, not Shapes captions
        captions = ["grinning face", "red heart", "thumbs up", "star"]
    out = {"text": bundle.encode_texts(captions)}
    if bundle.model.config.vision.timestep_conditioned:  # the noise-aware CLIP reads x_t and t
        x_t = images * 2 - 1 + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
        t = torch.tensor([0, 100, 400, 800])
        with torch.no_grad():
            out["image_t"] = bundle.model.encode_image(bundle.normalize_pixels((x_t + 1) / 2), normalize=True, t=t)
    else:
        out["image"] = bundle.encode_images(images)
    return out


def classifier_outputs(name: str) -> dict[str, torch.Tensor]:
    from unclip_lite.glide.classifier import load_classifier

    bundle = load_classifier(name)
    images, _ = _inputs(bundle.image_size)
    x_t = images * 2 - 1 + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return bundle.model(x_t, torch.tensor([0, 100, 400, 800]))


def judge_outputs(name: str) -> dict[str, torch.Tensor]:
    from unclip_lite.judge import load_judge

    judge = load_judge(name)
    images, _ = _inputs(32)
    with torch.no_grad():
        return judge(images)


def glide_outputs(name: str) -> dict[str, torch.Tensor]:
    from unclip_lite.glide.bundle import load_glide

    glide = load_glide(name)
    kwargs: dict = {}
    if glide.conditioning == "inpaint":  # inpainting: erase the middle of two scenes
        images, _ = _inputs(glide.image_size)
        mask = torch.ones(2, 1, glide.image_size, glide.image_size)
        mask[..., 8:24, 8:24] = 0
        kwargs["inpaint"] = (images[:2], mask)
    elif glide.conditioning == "low_res":  # upsampling: the renders at the low-res size
        kwargs["low_res"], _ = _inputs(glide.low_res_size)
        kwargs["low_res"] = kwargs["low_res"][:2]
    sample = glide.sample(["a red star", "a blue circle to the left of a green square"], 3.0, "ddim", 4,
                          seed=0, precision="fp32", **kwargs)
    return {"sample": sample}


KINDS = {"clip": clip_outputs, "classifier": classifier_outputs, "judge": judge_outputs, "glide": glide_outputs}
CHECKPOINTS = {"clip-shapes-tiny": "clip", "clip-emoji-tiny": "clip", "clip-noised-shapes-tiny": "clip",
               "classifier-noised-shapes-tiny": "classifier", "judge-shapes": "judge",
               "glide-shapes-tiny": "glide", "glide-inpaint-shapes-tiny": "glide",
               "glide-upsample-shapes-tiny": "glide"}


def compute() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    outputs = {}
    for name, kind in CHECKPOINTS.items():
        for key, value in KINDS[kind](name).items():
            outputs[f"{name}/{key}"] = value.detach().float().contiguous()
    return outputs


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("record", "check"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # bit-for-bit needs the same reduction order: one thread
    outputs = compute()
    if argv[0] == "record":
        save_file(outputs, argv[1])
        for key, value in outputs.items():
            print(f"{digest(value)}  {key} {tuple(value.shape)}")
        return 0
    recorded = load_file(argv[1])
    differ = [k for k in recorded if k not in outputs or not torch.equal(recorded[k], outputs[k])]
    for key, value in recorded.items():
        print(f"{digest(value)}  {key}: {'DIFFERS' if key in differ else 'bit for bit'}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
