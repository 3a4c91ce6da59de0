"""The Shapes world: coloured shapes on a plain background, with captions and labels.

A procedural stand-in for the internet's image–text pairs. Everything about an image is
known (colour, shape, size, position, and for two-object scenes their spatial relation),
so every model in the course can be judged with a number instead of by eye.

Three ideas shape this package:

* **Scenes are tensors.** A batch of scenes is a handful of integer/float tensors
  (:class:`Scenes`); sampling, rendering and captioning all work on whole batches.
* **Rendering is signed distance.** Each shape is a signed distance function (negative
  inside); the pixel's coverage is ``clamp(0.5 - d / pixel, 0, 1)``, which anti-aliases
  edges at any resolution without supersampling.
* **Held-out combinations live in one place.** :data:`HELD_OUT_PAIRS` lists colour×shape
  pairs that the training stream never produces, so zero-shot accuracy on them measures
  composition (knowing "red" and "circle" separately) rather than memory.

Where each part lives (lower modules never import higher ones):

* :mod:`.world` — palette, shapes, sizes, positions, relations, held-out pairs,
  :class:`Scenes`, :func:`sample_scenes`, :func:`make_scenes`, :func:`recolour`.
* :mod:`.renderer` — the signed distance functions and :func:`render`.
* :mod:`.captioning` — caption templates, :func:`captions`, :func:`parse_caption`,
  :func:`zero_shot_prompt`, :func:`caption_corpus`.
* :mod:`.stream` — :func:`make_batch`, :class:`ShapesStream`, :func:`eval_set`.
* :mod:`.typographic` — :func:`print_labels`: words printed on images (the typographic attack).

Use it as one namespace: ``from unclip_lite.data import shapes`` then ``shapes.render(...)``.
"""
from __future__ import annotations

from .captioning import (
    PAIR_TEMPLATES,
    SHAPE_ONLY_TEMPLATES,
    SINGLE_TEMPLATES,
    ZEROSHOT_TEMPLATE,
    caption_corpus,
    captions,
    parse_caption,
    scenes_for_captions,
    zero_shot_prompt,
)
from .renderer import SDFS, render, sdf_circle, sdf_heart, sdf_square, sdf_star, sdf_triangle
from .stream import ShapesStream, eval_set, make_batch
from .typographic import own_labels, print_labels, wrong_labels
from .world import (
    BACKGROUND,
    COLOURS,
    GREY,
    HELD_OUT_PAIRS,
    HELD_OUT_TABLE,
    PAIR_RADIUS,
    PALETTE,
    POSITION_JITTER,
    POSITION_NAMES,
    POSITIONS,
    RELATION_NAMES,
    RELATIONS,
    SHAPES,
    SIZE_NAMES,
    SIZES,
    SPLITS,
    Scenes,
    colour_index,
    make_scenes,
    nearest_palette,
    palette_tensor,
    recolour,
    sample_scenes,
    shape_index,
)

__all__ = [
    # world: vocabulary, held-out pairs, scenes
    "PALETTE", "COLOURS", "SHAPES", "SIZES", "SIZE_NAMES", "POSITIONS", "POSITION_NAMES",
    "RELATIONS", "RELATION_NAMES", "BACKGROUND", "POSITION_JITTER", "PAIR_RADIUS",
    "HELD_OUT_PAIRS", "HELD_OUT_TABLE", "SPLITS", "GREY",
    "colour_index", "shape_index", "palette_tensor", "nearest_palette",
    "Scenes", "sample_scenes", "make_scenes", "recolour",
    # renderer
    "sdf_circle", "sdf_square", "sdf_triangle", "sdf_star", "sdf_heart", "SDFS", "render",
    # captioning
    "scenes_for_captions", "SINGLE_TEMPLATES", "SHAPE_ONLY_TEMPLATES", "PAIR_TEMPLATES", "ZEROSHOT_TEMPLATE",
    "captions", "zero_shot_prompt", "parse_caption", "caption_corpus",
    # stream
    "make_batch", "ShapesStream", "eval_set",
    # typographic
    "print_labels", "own_labels", "wrong_labels",
]
