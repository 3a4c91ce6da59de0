"""Words for scenes: caption templates, captioning, parsing captions back, the corpus.

:func:`captions` writes one caption per scene from a seeded random template;
:func:`parse_caption` is its inverse (tested for every template), so captions and labels
can never drift apart; :func:`caption_corpus` lists every caption the world can produce,
for building a compact vocabulary. Builds on :mod:`.world` only.
"""
from __future__ import annotations

import re

import torch

from .world import (COLOURS, POSITION_JITTER, POSITION_NAMES, POSITIONS, RELATION_NAMES, SHAPES, SIZE_NAMES, SIZES,
                    Scenes, sample_scenes)

# --------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------
# Single-object templates. Fields: {colour} {shape} {size} {position}.
SINGLE_TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape}",
    "a {size} {colour} {shape}",
    "a photo of a {colour} {shape}",
    "a drawing of a {size} {colour} {shape}",
    "a {colour} {shape} in the {position}",
    "a {size} {colour} {shape} in the {position}",
    "there is a {colour} {shape} in the {position}",
    "{colour} {shape}",
    "a picture of a {colour} {shape} on a dark background",
    "the {shape} is {colour}",
)
# Grey single objects: the caption names no colour.
SHAPE_ONLY_TEMPLATES: tuple[str, ...] = (
    "a {shape}",
    "a {size} {shape}",
    "a photo of a {shape}",
    "a {shape} in the {position}",
)
# Two-object templates. Fields: {a} {b} (each "colour shape") and {relation}.
PAIR_TEMPLATES: tuple[str, ...] = (
    "a {a} {relation} a {b}",
    "a picture of a {a} {relation} a {b}",
    "the {a} is {relation} the {b}",
)
ZEROSHOT_TEMPLATE = "a {colour} {shape}"


def _caption(label: dict, template: str) -> str:
    objects = label["objects"]
    if len(objects) == 1:
        o = objects[0]
        text = template.format(colour=o["colour"], shape=o["shape"], size=o["size"],
                               position=label.get("position", "center"))
    else:
        a, b = (f"{o['colour']} {o['shape']}" for o in objects)
        text = template.format(a=a, b=b, relation=label["relation"])
    return re.sub(r"\ba (?=[aeiou])", "an ", text)  # "an orange star"


def captions(scenes: Scenes, generator: torch.Generator | int | None = 0,
             template: str | int | None = None) -> list[str]:
    """One caption per scene: a random template (seeded), or the one given by text/index.

    Grey objects (see :func:`recolour`) take a random shape-only template instead.
    """
    templates = SINGLE_TEMPLATES if scenes.n_objects == 1 else PAIR_TEMPLATES
    if isinstance(template, int):
        template = templates[template]
    gen = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(generator or 0)
    picks = torch.randint(len(templates), (len(scenes),), generator=gen).tolist()
    grey_picks = torch.randint(len(SHAPE_ONLY_TEMPLATES), (len(scenes),), generator=gen).tolist()
    out = []
    for label, i, j in zip(scenes.labels(), picks, grey_picks):
        if any(o["colour"] is None for o in label["objects"]):
            out.append(_caption(label, SHAPE_ONLY_TEMPLATES[j]))
        else:
            out.append(_caption(label, template or templates[i]))
    return out


def zero_shot_prompt(colour: str, shape: str) -> str:
    """The prompt that names one colour × shape pair: ``"an orange star"``."""
    label = {"objects": [{"colour": colour, "shape": shape, "size": SIZE_NAMES[-1]}]}
    return _caption(label, ZEROSHOT_TEMPLATE)


def parse_caption(text: str) -> dict:
    """Recover what a caption states: ``{"objects": [{"colour", "shape", "size"?}], ...}``.

    The inverse of :func:`captions` for every template (tested), so captions and labels
    can never drift apart. Attributes a template leaves out are absent from the result.
    """
    words = text.lower().strip().rstrip(".")
    relation = next((r for r in RELATION_NAMES if f" {r} " in words), None)
    parts = words.split(f" {relation} ") if relation else [words]
    objects = []
    for part in parts:
        tokens = part.replace(",", " ").split()
        obj = {}
        for key, names in (("colour", COLOURS), ("shape", SHAPES), ("size", SIZE_NAMES)):
            found = [w for w in tokens if w in names]
            if found:
                obj[key] = found[0]
        objects.append(obj)
    result: dict = {"objects": objects}
    if relation:
        result["relation"] = relation
    position = next((p for p in sorted(POSITION_NAMES, key=len, reverse=True)
                     if f"in the {p}" in words), None)
    if position:
        result["position"] = position
    return result


def caption_corpus() -> list[str]:
    """A caption for every word the templates can produce (to build a compact vocabulary).

    Every single-object and shape-only template with every attribute, and every pair
    template with every relation; BPE pieces depend only on the words, so this covers
    every caption the world can generate.
    """
    texts = []
    for colour in COLOURS:
        for shape in SHAPES:
            for size in SIZE_NAMES:
                for position in POSITION_NAMES:
                    label = {"objects": [{"colour": colour, "shape": shape, "size": size}],
                             "position": position}
                    texts += [_caption(label, t) for t in SINGLE_TEMPLATES]
                    texts += [_caption(label, t) for t in SHAPE_ONLY_TEMPLATES]
            for relation in RELATION_NAMES:
                other = {"colour": COLOURS[0], "shape": SHAPES[0], "size": SIZE_NAMES[0]}
                for objects in ([label["objects"][0], other], [other, label["objects"][0]]):
                    pair = {"objects": objects, "relation": relation}
                    texts += [_caption(pair, t) for t in PAIR_TEMPLATES]
    return sorted(set(texts))


def scenes_for_captions(texts: list[str], generator: torch.Generator | int = 0) -> Scenes:
    """Fresh scenes that each satisfy one caption: what the caption states is kept, everything
    it leaves unsaid (size, position, jitter; where a pair sits) is drawn anew.

    Two images of the same caption measure how much a caption pins an image down — the ceiling
    for any model that predicts an image (or its embedding) from the caption alone. Every
    caption must name a colour and a shape for each object, and all must have as many objects.
    """
    gen = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(generator)
    parsed = [parse_caption(t) for t in texts]
    counts = {len(p["objects"]) for p in parsed}
    if len(counts) != 1:
        raise ValueError(f"captions name different numbers of objects: {sorted(counts)}")
    k = counts.pop()
    for text, p in zip(texts, parsed):
        if any("colour" not in o or "shape" not in o for o in p["objects"]):
            raise ValueError(f"caption {text!r} does not name a colour and a shape for each object")
    n = len(texts)
    if k == 1:
        scenes = sample_scenes(n, gen, n_objects=1, split="all")
    else:  # a pool of pairs, from which each caption takes one with its relation
        pool = sample_scenes(8 * n + 32, gen, n_objects=2, split="all")
        free = {r: (pool.relation == r).nonzero().flatten().tolist() for r in range(len(RELATION_NAMES))}
        scenes = pool[torch.tensor([free[RELATION_NAMES.index(p["relation"])].pop() for p in parsed])]
    colour = torch.tensor([[COLOURS.index(o["colour"]) for o in p["objects"]] for p in parsed])
    shape = torch.tensor([[SHAPES.index(o["shape"]) for o in p["objects"]] for p in parsed])
    fields = dict(scenes.__dict__, colour=colour, shape=shape)
    if k == 1:
        size, radius, x, y, position = (fields[f].clone() for f in ("size", "radius", "x", "y", "position"))
        jitter = (torch.rand(n, 2, generator=gen) * 2 - 1) * POSITION_JITTER
        for i, p in enumerate(parsed):
            if "size" in p["objects"][0]:
                size[i, 0] = SIZE_NAMES.index(p["objects"][0]["size"])
                lo, hi = SIZES[p["objects"][0]["size"]]
                radius[i, 0] = lo + (hi - lo) * torch.rand(1, generator=gen).item()
            if "position" in p:
                position[i] = POSITION_NAMES.index(p["position"])
                cx, cy = POSITIONS[p["position"]]
                x[i, 0], y[i, 0] = cx + jitter[i, 0], cy + jitter[i, 1]
        fields.update(size=size, radius=radius, x=x, y=y, position=position)
    return Scenes(**fields)
