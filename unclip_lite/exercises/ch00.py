"""Chapter 00 exercises: worlds and tokens.

Each ``test_xxx(fn)`` compares the learner's ``fn`` with the reference on the same inputs.
The references call the package's own implementation, so there is one source of truth.
"""
from __future__ import annotations

import torch

from unclip_lite.data import shapes
from unclip_lite.exercises.core import Case, Exercise, seeded, checker
from unclip_lite.tokenizer import CompactVocab, get_tokenizer, pack_tokens


# --- 1. An anti-aliased circle -----------------------------------------------------------
def circle_coverage(cx: float, cy: float, radius: float, resolution: int) -> torch.Tensor:
    """Reference: coverage ``[R, R]`` in [0, 1] of a circle (centre and radius in image widths)."""
    scenes = shapes.Scenes(
        colour=torch.zeros(1, 1, dtype=torch.long), shape=torch.zeros(1, 1, dtype=torch.long),
        size=torch.zeros(1, 1, dtype=torch.long), radius=torch.tensor([[radius]]),
        x=torch.tensor([[cx]]), y=torch.tensor([[cy]]), rgb=torch.ones(1, 1, 3))
    return shapes.render(scenes, resolution, background=(0.0, 0.0, 0.0))[0, 0]


def _circle_cases():
    gen = seeded(0)
    yield Case((0.5, 0.5, 0.25, 16), name="centred, 16 px")
    yield Case((0.0, 0.3, 0.2, 24), name="half outside the image")
    yield Case((0.5, 0.5, 0.01, 32), name="smaller than a pixel")
    for i in range(5):
        cx, cy, r = torch.rand(3, generator=gen).tolist()
        res = int(torch.randint(8, 48, (1,), generator=gen))
        yield Case((cx, cy, 0.05 + 0.3 * r, res), name=f"random {i}")


EX_CIRCLE = Exercise(
    "ch00.circle_coverage", circle_coverage, _circle_cases,
    hint="pixel i has its centre at (i + 0.5) / R; the signed distance is |p - c| - r; "
         "measure it in pixels (× R) and use clamp(0.5 - d, 0, 1).")


def test_circle_coverage(fn) -> bool:
    return EX_CIRCLE.check(fn)


# --- 2. Packing token ids into CLIP's fixed-length context -------------------------------
def pack_ids(ids: list[int], context_length: int, sot: int, eot: int) -> torch.Tensor:
    """Reference: ``[sot, *ids, eot]`` zero-padded to ``[context_length]``; truncated so the
    end token stays in the last slot (as open_clip does)."""
    return pack_tokens([ids], [""], context_length, truncate=True, sot=sot, eot=eot)[0]


def _pack_cases():
    gen = seeded(1)
    yield Case(([320, 736, 2202], 8, 49406, 49407), name="short caption")
    yield Case(([], 4, 49406, 49407), name="empty text")
    yield Case((list(range(100, 106)), 8, 49406, 49407), name="exactly fits")
    yield Case((list(range(100, 107)), 8, 49406, 49407), name="one token too many")
    for i in range(4):
        n = int(torch.randint(0, 40, (1,), generator=gen))
        ids = torch.randint(1, 49000, (n,), generator=gen).tolist()
        yield Case((ids, int(torch.randint(2, 32, (1,), generator=gen)), 1, 2), name=f"random {i}")


EX_PACK = Exercise(
    "ch00.pack_ids", pack_ids, _pack_cases,
    hint="start with [sot, *ids, eot]; if that is longer than the context, cut it and put "
         "eot back in the last slot; pad with zeros; return a LongTensor.")


def test_pack_ids(fn) -> bool:
    return EX_PACK.check(fn)


# --- 3. Remapping CLIP ids into a compact vocabulary -------------------------------------
def to_compact(tokens: torch.Tensor, clip_ids: list[int]) -> torch.Tensor:
    """Reference: CLIP ids ``[N, ctx]`` → compact ids: pad 0 → 0, start → 1, end → 2,
    ``clip_ids[k]`` → ``k + 4`` (id 3 is ``<unk>``, for ids outside the vocabulary)."""
    return CompactVocab(clip_ids).from_clip_ids(tokens)


def _compact_cases():
    tok = get_tokenizer()
    corpus = shapes.captions(shapes.sample_scenes(50, 0, split="all"), 0)
    clip_ids = sorted({i for text in corpus for i in tok.encode(text)})
    yield Case((tok(corpus[:6], context_length=16), clip_ids), name="captions from the corpus")
    yield Case((tok(["a red circle"], context_length=4), clip_ids), name="truncated")
    yield Case((tok(["a grey hexagon", "a red circle"], context_length=12), clip_ids),
               name="words outside the vocabulary")


EX_COMPACT = Exercise(
    "ch00.to_compact", to_compact, _compact_cases,
    hint="build a lookup table of size 49,408 filled with 3 (<unk>); set table[0] = 0, "
         "table[49406] = 1, table[49407] = 2, table[clip_ids[k]] = k + 4; then index it.")


def test_to_compact(fn) -> bool:
    return EX_COMPACT.check(fn)


check = checker("ch00")  # the notebook's `name = tests.check(name)`: see core.Exercise.accept
