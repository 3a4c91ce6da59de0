"""The typographic attack on a Shapes CLIP (Ramesh et al. 2022, §7, Figure 14; Goh et al. 2021).

CLIP trained on web pairs learned to *read*: an apple with a label saying "iPod" is zero-shot
classified as an iPod. Our CLIPs learn from Shapes captions; if some training images carry their
shape's name on a sticker (:mod:`unclip_lite.data.shapes.typographic`), does a CLIP learn to read
the sticker instead of looking at the shape? The attack prints a *different* shape's name on each
image and counts whose side zero-shot takes: the pixels' or the text's.
"""
from __future__ import annotations

import torch

from unclip_lite.clip.bundle import CLIPBundle
from unclip_lite.data import shapes


def zero_shot_shapes(bundle: CLIPBundle, images: torch.Tensor) -> torch.Tensor:
    """The shape index [B] that zero-shot reads, marginalising colour out of the 40 prompts."""
    prompts = [shapes.zero_shot_prompt(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]  # colour-major
    logits = bundle.encode_images(images) @ bundle.encode_texts(prompts).T  # [B, 40]
    return logits.view(len(images), len(shapes.COLOURS), len(shapes.SHAPES)).logsumexp(1).argmax(1)


@torch.no_grad()
def typographic_attack(bundle: CLIPBundle, n: int = 500, seed: int = 3) -> dict:
    """Shape zero-shot on ``n`` single-object images of training pairs: ``typo_sign_shape`` (the label
    alone on the background: can it read?), ``typo_clean_shape`` (no label), ``typo_honest_shape``
    (the label names the true shape), and under attack (the label names
    another shape) ``typo_attack_pixels`` (the true shape still wins) and ``typo_attack_text`` (the
    printed one wins: the attack's success; chance 0.2 for a CLIP that guesses)."""
    images, scenes = shapes.eval_set("train", n, resolution=bundle.image_size, seed=seed)
    truth = scenes.shape[:, 0]
    wrong, printed = shapes.wrong_labels(truth, generator=seed)
    background = torch.tensor(shapes.BACKGROUND, dtype=torch.float32).view(1, 3, 1, 1) / 255
    signs = shapes.print_labels(background.expand_as(images).clone(), shapes.own_labels(truth), seed)
    read = {
        "sign": zero_shot_shapes(bundle, signs),
        "clean": zero_shot_shapes(bundle, images),
        "honest": zero_shot_shapes(bundle, shapes.print_labels(images, shapes.own_labels(truth), seed)),
        "attack": zero_shot_shapes(bundle, shapes.print_labels(images, wrong, seed)),
    }
    return {"typo_sign_shape": (read["sign"] == truth).float().mean().item(),
            "typo_clean_shape": (read["clean"] == truth).float().mean().item(),
            "typo_honest_shape": (read["honest"] == truth).float().mean().item(),
            "typo_attack_pixels": (read["attack"] == truth).float().mean().item(),
            "typo_attack_text": (read["attack"] == printed).float().mean().item()}


def main(argv: list[str] | None = None) -> None:
    """``python -m unclip_lite.clip.typographic``: attack Shapes CLIPs trained without labels, with
    labels that repeat the pixels, and with signs (labels alone), and write the table chapter 09 shows."""
    import argparse
    import json
    from pathlib import Path

    from unclip_lite.checkpoints import REGISTRY_DIR, atomic_write, read_manifest
    from unclip_lite.clip.bundle import load_clip
    from unclip_lite.hardware import hardware

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--clips", default="clip-shapes-tiny,clip-shapes-tiny-typo50,clip-shapes-tiny-typo20-signs,"
                                           "clip-shapes-tiny-typo50-signs,"
                                           "clip-shapes-tiny-pairs,clip-shapes-tiny-pairs-typo50")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--out", default=str(REGISTRY_DIR.parent / "experiments" / "typographic.json"))
    args = parser.parse_args(argv)
    runs = []
    for name in args.clips.split(","):
        recipe = read_manifest(name)["config"]["extra"]["recipe"]
        runs.append({"checkpoint": name, "label_fraction": recipe["data"].get("label_fraction", 0.0),
                     "sign_fraction": recipe["data"].get("sign_fraction", 0.0), "init_from": recipe.get("init_from", ""),
                     "steps": recipe["train"]["steps"], "metrics": typographic_attack(load_clip(name), n=args.n)})
    record = {"what": "zero-shot shape reading of 500 renders of training pairs: no label, an honest label, "
                      "another shape's name printed (the attack)", "n": args.n, "hardware": hardware(),
              "command": "python -m unclip_lite.clip.typographic", "runs": runs}
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2) + "\n"))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
