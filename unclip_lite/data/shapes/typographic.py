"""Printed labels on Shapes images: the world of unCLIP's typographic attack (Ramesh et al. 2022, §7,
Figure 14 — an apple with a paper label reading "iPod" is zero-shot classified as an iPod).

A label is a white sticker with a word in PIL's built-in bitmap font (no font file, no download),
scaled to a fifth of the image's height and stuck at the top or bottom edge. In training, a
fraction of images carry *their own* shape's name (the label agrees with the pixels, like most text
in web photos agrees with its caption); the attack prints a *different* shape's name::

    labelled = print_labels(images, ["star"] * len(images), generator=0)   # [B, 3, R, R]

Builds on :mod:`.world` only.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .world import SHAPES

LABEL_HEIGHT = 0.22  # of the image side: 7 px at 32 px, the bitmap font's 11 px glyphs shrunk


@lru_cache(maxsize=None)
def word_ink(word: str, height: int, max_width: int) -> torch.Tensor:
    """The ink coverage [h, w] in [0, 1] of ``word`` in the bitmap font, ``height`` pixels tall
    (width in proportion, at most ``max_width``), anti-aliased by box filtering."""
    if not word or not word.isprintable():
        raise ValueError(f"a label needs a printable word, got {word!r}")
    font = ImageFont.load_default_imagefont()  # the bitmap font compiled into Pillow
    left, top, right, bottom = font.getbbox(word)
    canvas = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(canvas).text((1 - left, 1 - top), word, fill=255, font=font)
    width = max(1, min(max_width, round(canvas.width * height / canvas.height)))
    small = canvas.resize((width, height), Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0)


def print_labels(images: torch.Tensor, words: list[str | None], generator: torch.Generator | int = 0,
                 ink: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    """``images`` [B, 3, R, R] in [0, 1] with ``words[b]`` printed on a white sticker at the top or
    bottom edge (random side and horizontal offset, seeded); ``None`` leaves an image unlabelled."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, R, R], got {tuple(images.shape)}")
    if len(words) != len(images):
        raise ValueError(f"{len(words)} words for {len(images)} images")
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    R = images.shape[-1]
    h = max(5, round(LABEL_HEIGHT * R))
    out = images.clone()
    sides = torch.rand(len(images), generator=generator)  # drawn for every image: labels don't shift the stream
    offsets = torch.rand(len(images), generator=generator)
    colour = torch.tensor(ink).view(3, 1, 1)
    for b, word in enumerate(words):
        if word is None:
            continue
        glyphs = word_ink(word, h - 2, R - 4)  # [h - 2, w]
        w = glyphs.shape[1] + 2
        top = 0 if sides[b] < 0.5 else R - h
        left = int(offsets[b] * (R - w))
        sticker = torch.ones(3, h, w)
        sticker[:, 1:-1, 1:-1] = sticker[:, 1:-1, 1:-1] * (1 - glyphs) + colour * glyphs
        out[b, :, top:top + h, left:left + w] = sticker
    return out


def own_labels(shape_index: torch.Tensor) -> list[str]:
    """The shape name of each image's first object [B]: labels that tell the truth."""
    return [SHAPES[s] for s in shape_index.tolist()]


def wrong_labels(shape_index: torch.Tensor, generator: torch.Generator | int = 0) -> tuple[list[str], torch.Tensor]:
    """For each true shape [B], a *different* shape's name, uniformly among the other four, and its index."""
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    shift = torch.randint(1, len(SHAPES), shape_index.shape, generator=generator)
    printed = (shape_index + shift) % len(SHAPES)
    return [SHAPES[s] for s in printed.tolist()], printed
