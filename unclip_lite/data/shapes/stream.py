"""Data for training and evaluation: seeded batches, the endless stream, fixed eval sets.

Everything here is deterministic in its seed, so a resumed run sees the batches an
uninterrupted one would have, and evaluation sets are the same images on every call.
Combines :mod:`.world` (sampling), :mod:`.renderer` and :mod:`.captioning`.
"""
from __future__ import annotations

import torch

from .captioning import captions

DETAILED_TEMPLATE = "a {size} {colour} {shape} in the {position}"
from .renderer import render
from .typographic import own_labels, print_labels
from .world import BACKGROUND, SHAPES, SPLITS, Scenes, recolour, sample_scenes

# --------------------------------------------------------------------------------------
# Streams and evaluation sets
# --------------------------------------------------------------------------------------
def make_batch(n: int, seed: int, resolution: int = 32, n_objects: int = 1,
               split: str = "train") -> tuple[torch.Tensor, list[str]]:
    """``n`` rendered images ``[n, 3, R, R]`` and their captions, deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    scenes = sample_scenes(n, gen, n_objects=n_objects, split=split)
    return render(scenes, resolution), captions(scenes, gen)


class ShapesStream(torch.utils.data.IterableDataset):
    """An endless, seeded stream of training batches ``(images, captions, scenes)``.

    Batch ``i`` depends only on ``(seed, i)``, so a run resumed at step ``i`` sees exactly
    the batches an uninterrupted run would have seen. Only ``split="train"`` pairs appear
    unless another split is asked for. ``two_object_fraction`` of each batch (rounded) are
    two-object scenes with a relation. ``detailed_fraction`` of the single-object captions
    (drawn per caption) use the template that names everything, "a {size} {colour} {shape}
    in the {position}", instead of a random one: the random templates name a position in
    about a quarter of all captions, too few for a small model to learn where to draw.
    ``label_fraction`` of the single-object images (drawn per image) carry their own shape's name
    on a printed sticker (:mod:`.typographic`): the world of the typographic attack.
    ``sign_fraction`` of those labelled images show the sticker alone, no object, captioned
    "a {shape}": text that carries the caption by itself, as text in web images often does.
    """

    def __init__(self, batch_size: int = 128, resolution: int = 32, seed: int = 0,
                 split: str = "train", two_object_fraction: float = 0.0, start: int = 0,
                 hue_jitter: float = 0.0, sv_jitter: float = 0.0, grey_fraction: float = 0.0,
                 any_hue: float = 0.0, detailed_fraction: float = 0.0,
                 label_fraction: float = 0.0, sign_fraction: float = 0.0):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size, self.resolution, self.seed = batch_size, resolution, seed
        self.split, self.two_object_fraction, self.start = split, two_object_fraction, start
        self.recolour = dict(hue_jitter=hue_jitter, sv_jitter=sv_jitter, grey_fraction=grey_fraction,
                             any_hue=any_hue)
        if not 0.0 <= detailed_fraction <= 1.0:
            raise ValueError(f"detailed_fraction must be in [0, 1], got {detailed_fraction}")
        self.detailed_fraction = detailed_fraction
        if not 0.0 <= label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in [0, 1], got {label_fraction}")
        if not 0.0 <= sign_fraction <= 1.0:
            raise ValueError(f"sign_fraction must be in [0, 1], got {sign_fraction}")
        self.label_fraction, self.sign_fraction = label_fraction, sign_fraction

    def batch(self, index: int) -> tuple[torch.Tensor, list[str], list[Scenes]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        n_pairs = round(self.batch_size * self.two_object_fraction)
        parts = [(self.batch_size - n_pairs, 1), (n_pairs, 2)]
        images, texts, scenes = [], [], []
        for n, k in parts:
            if n == 0:
                continue
            s = sample_scenes(n, gen, n_objects=k, split=self.split)
            if any(self.recolour.values()):
                s = recolour(s, gen, **self.recolour)
            rendered = render(s, self.resolution)
            signs = [False] * n
            if k == 1 and self.label_fraction > 0:  # its own generator, like the detailed captions
                label_gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index + 700_001)
                use = (torch.rand(n, generator=label_gen) < self.label_fraction).tolist()
                if self.sign_fraction > 0:  # drawn only then: typo50's stream stays as it was trained
                    signs = [u and v < self.sign_fraction for u, v in zip(use, torch.rand(n, generator=label_gen).tolist())]
                background = torch.tensor(BACKGROUND, dtype=torch.float32).view(3, 1, 1) / 255
                rendered[torch.tensor(signs, dtype=torch.bool)] = background  # a sign: the sticker alone
                words = [w if u else None for w, u in zip(own_labels(s.shape[:, 0]), use)]
                rendered = print_labels(rendered, words, label_gen)
            images.append(rendered)
            part = captions(s, gen)
            part = [f"a {SHAPES[int(shape)]}" if sign else t for t, sign, shape in zip(part, signs, s.shape[:, 0])]
            if k == 1 and self.detailed_fraction > 0:  # its own generator: the default stream is unchanged
                detail_gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index + 500_009)
                use = (torch.rand(n, generator=detail_gen) < self.detailed_fraction).tolist()
                detailed = captions(s, detail_gen, template=DETAILED_TEMPLATE)
                part = [d if u else t for t, d, u in zip(part, detailed, use)]
            texts += part
            scenes.append(s)
        return torch.cat(images), texts, scenes

    def __iter__(self):
        index = self.start
        while True:
            yield self.batch(index)
            index += 1


def eval_set(split: str = "heldout", n: int = 1000, resolution: int = 32, n_objects: int = 1,
             seed: int = 1234) -> tuple[torch.Tensor, Scenes]:
    """A fixed evaluation set: the same images every call (seeds differ from training's)."""
    gen = torch.Generator().manual_seed(10_000_019 * (1 + SPLITS.index(split)) + seed + n_objects)
    scenes = sample_scenes(n, gen, n_objects=n_objects, split=split)
    return render(scenes, resolution), scenes
