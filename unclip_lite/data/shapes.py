"""The Shapes world: coloured shapes on a plain background, with captions and labels.

A procedural stand-in for the internet's image–text pairs. Everything about an image is
known (colour, shape, size, position, and for two-object scenes their spatial relation),
so every model in the course can be judged with a number instead of by eye.

Three ideas shape this module:

* **Scenes are tensors.** A batch of scenes is a handful of integer/float tensors
  (:class:`Scenes`); sampling, rendering and captioning all work on whole batches.
* **Rendering is signed distance.** Each shape is a signed distance function (negative
  inside); the pixel's coverage is ``clamp(0.5 - d / pixel, 0, 1)``, which anti-aliases
  edges at any resolution without supersampling.
* **Held-out combinations live in one place.** :data:`HELD_OUT_PAIRS` lists colour×shape
  pairs that the training stream never produces, so zero-shot accuracy on them measures
  composition (knowing "red" and "circle" separately) rather than memory.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

# --------------------------------------------------------------------------------------
# The vocabulary of the world
# --------------------------------------------------------------------------------------
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 180, 60),
    "cyan": (30, 210, 220),
    "blue": (40, 80, 230),
    "purple": (150, 60, 200),
    "pink": (250, 130, 190),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart")
SIZES: dict[str, tuple[float, float]] = {  # radius range, as a fraction of the image width
    "small": (0.13, 0.17),
    "large": (0.22, 0.26),
}
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)
POSITIONS: dict[str, tuple[float, float]] = {  # (x, y) centre, y grows downwards
    "center": (0.5, 0.5),
    "top left": (0.3, 0.3),
    "top right": (0.7, 0.3),
    "bottom left": (0.3, 0.7),
    "bottom right": (0.7, 0.7),
}
POSITION_NAMES: tuple[str, ...] = tuple(POSITIONS)
# Two-object scenes: "<first> is <relation> <second>". Offsets place the first object.
RELATIONS: dict[str, tuple[float, float]] = {
    "to the left of": (-1.0, 0.0),
    "to the right of": (1.0, 0.0),
    "above": (0.0, -1.0),
    "below": (0.0, 1.0),
}
RELATION_NAMES: tuple[str, ...] = tuple(RELATIONS)
BACKGROUND: tuple[int, int, int] = (40, 40, 40)
POSITION_JITTER = 0.04  # max offset of a single object's centre around its named position
PAIR_RADIUS = (0.12, 0.16)  # objects in two-object scenes are small enough to sit side by side

# One colour×shape pair per colour, spread over every shape: a Latin-square diagonal.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    (colour, SHAPES[i % len(SHAPES)]) for i, colour in enumerate(COLOURS)
)


def _held_out_table() -> torch.Tensor:
    table = torch.zeros(len(COLOURS), len(SHAPES), dtype=torch.bool)
    for colour, shape in HELD_OUT_PAIRS:
        table[COLOURS.index(colour), SHAPES.index(shape)] = True
    return table


HELD_OUT_TABLE = _held_out_table()  # [n_colours, n_shapes], True where held out
SPLITS = ("train", "heldout", "all")


def colour_index(name: str) -> int:
    if name not in PALETTE:
        raise ValueError(f"unknown colour {name!r}; the palette has {', '.join(COLOURS)}")
    return COLOURS.index(name)


def shape_index(name: str) -> int:
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; the world has {', '.join(SHAPES)}")
    return SHAPES.index(name)


def palette_tensor() -> torch.Tensor:
    """The palette as floats in [0, 1]: ``[n_colours, 3]``."""
    return torch.tensor(list(PALETTE.values()), dtype=torch.float32) / 255.0


# --------------------------------------------------------------------------------------
# Scenes: a batch of B scenes with K objects each (K = 1 or 2)
# --------------------------------------------------------------------------------------
@dataclass
class Scenes:
    """A batch of scenes. Coordinates are fractions of the image width, y downwards.

    colour, shape, size: ``[B, K]`` long (indices into COLOURS, SHAPES, SIZE_NAMES)
    radius, x, y:        ``[B, K]`` float
    position:            ``[B]`` long index into POSITION_NAMES (single-object scenes)
    relation:            ``[B]`` long index into RELATION_NAMES (two-object scenes)
    rgb:                 optional ``[B, K, 3]`` float override of the palette colour
    """

    colour: torch.Tensor
    shape: torch.Tensor
    size: torch.Tensor
    radius: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    position: torch.Tensor | None = None
    relation: torch.Tensor | None = None
    rgb: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.colour.shape[0]

    @property
    def n_objects(self) -> int:
        return self.colour.shape[1]

    def __getitem__(self, index) -> "Scenes":
        def pick(t):
            return None if t is None else t[index]

        return Scenes(**{k: pick(v) for k, v in self.__dict__.items()})

    def labels(self) -> list[dict]:
        """Plain-Python attribute labels, one dict per scene."""
        out = []
        for b in range(len(self)):
            objects = [
                {
                    "colour": COLOURS[self.colour[b, k]] if self.colour[b, k] >= 0 else None,
                    "shape": SHAPES[self.shape[b, k]],
                    "size": SIZE_NAMES[self.size[b, k]],
                }
                for k in range(self.n_objects)
            ]
            label = {"objects": objects}
            if self.position is not None:
                label["position"] = POSITION_NAMES[self.position[b]]
            if self.relation is not None:
                label["relation"] = RELATION_NAMES[self.relation[b]]
            out.append(label)
        return out


def _uniform(gen: torch.Generator, shape, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen)


def _sample_pairs(gen: torch.Generator, n: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour and shape indices ``[n]`` drawn uniformly from the pairs allowed in ``split``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    allowed = {"train": ~HELD_OUT_TABLE, "heldout": HELD_OUT_TABLE}.get(
        split, torch.ones_like(HELD_OUT_TABLE)
    )
    pairs = allowed.nonzero()  # [n_pairs, 2]: (colour, shape)
    pick = torch.randint(len(pairs), (n,), generator=gen)
    return pairs[pick, 0], pairs[pick, 1]


def sample_scenes(
    n: int,
    generator: torch.Generator | int = 0,
    n_objects: int = 1,
    split: str = "train",
) -> Scenes:
    """Sample ``n`` random scenes with one or two objects.

    ``split="train"`` never yields a held-out colour×shape pair (for any object),
    ``"heldout"`` yields only held-out pairs, ``"all"`` anything.
    """
    gen = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(generator)
    if n_objects not in (1, 2):
        raise ValueError(f"n_objects must be 1 or 2, got {n_objects}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    colours, shapes = zip(*(_sample_pairs(gen, n, split) for _ in range(n_objects)))
    colour, shape = torch.stack(colours, 1), torch.stack(shapes, 1)  # [n, K]
    if n_objects == 1:
        size = torch.randint(len(SIZES), (n, 1), generator=gen)
        bounds = torch.tensor(list(SIZES.values()))  # [n_sizes, 2]
        lo, hi = bounds[size, 0], bounds[size, 1]
        radius = lo + (hi - lo) * torch.rand((n, 1), generator=gen)
        position = torch.randint(len(POSITIONS), (n,), generator=gen)
        centres = torch.tensor(list(POSITIONS.values()))[position]  # [n, 2]
        jitter = _uniform(gen, (n, 2), -POSITION_JITTER, POSITION_JITTER)
        x, y = (centres + jitter).unbind(-1)
        return Scenes(colour, shape, size, radius, x[:, None], y[:, None], position=position)
    # Two objects: the first sits on the side of the second that the relation names.
    relation = torch.randint(len(RELATIONS), (n,), generator=gen)
    offset = torch.tensor(list(RELATIONS.values()))[relation]  # [n, 2]
    radius = _uniform(gen, (n, 2), *PAIR_RADIUS)
    size = torch.zeros((n, 2), dtype=torch.long)  # both "small"
    gap = _uniform(gen, (n, 1), 0.2, 0.24)  # half the distance between centres
    along = _uniform(gen, (n, 1), -0.04, 0.04)  # drift along the relation's axis
    across = _uniform(gen, (n, 2), -0.06, 0.06)  # independent drift across it
    axis = offset.abs()  # [n, 2], 1 on the relation's axis
    centre = 0.5 + along * axis
    first = centre + gap * offset + across[:, :1] * (1 - axis)
    second = centre - gap * offset + across[:, 1:] * (1 - axis)
    xy = torch.stack([first, second], 1)  # [n, 2 objects, 2 coords]
    return Scenes(colour, shape, size, radius, xy[..., 0], xy[..., 1], relation=relation)


def make_scenes(
    colour: str | list[str],
    shape: str | list[str],
    size: str = "large",
    position: str = "center",
) -> Scenes:
    """Scenes from names, for figures and tests: ``make_scenes(["red", "blue"], "star")``.

    One object per scene, at the middle of its named size range and exactly at its named
    position. Unknown names and non-positive sizes raise ``ValueError``.
    """
    colours = [colour] if isinstance(colour, str) else list(colour)
    shapes = [shape] if isinstance(shape, str) else list(shape)
    n = max(len(colours), len(shapes))
    colours = colours * n if len(colours) == 1 else colours
    shapes = shapes * n if len(shapes) == 1 else shapes
    if len(colours) != len(shapes):
        raise ValueError(f"got {len(colours)} colours but {len(shapes)} shapes")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZE_NAMES)}")
    if position not in POSITIONS:
        raise ValueError(f"unknown position {position!r}; choose one of {', '.join(POSITION_NAMES)}")
    c = torch.tensor([colour_index(name) for name in colours])[:, None]
    s = torch.tensor([shape_index(name) for name in shapes])[:, None]
    radius = torch.full((n, 1), sum(SIZES[size]) / 2)
    px, py = POSITIONS[position]
    return Scenes(
        c, s, torch.full((n, 1), SIZE_NAMES.index(size)), radius,
        torch.full((n, 1), px), torch.full((n, 1), py),
        position=torch.full((n,), POSITION_NAMES.index(position)),
    )


GREY = -1  # colour index of an uncoloured object; its captions name only the shape


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV (hue in [0, 1)) to RGB ``[..., 3]``, the standard hexcone formula."""
    k = (torch.stack([5 + 0 * h, 3 + 0 * h, 1 + 0 * h], -1) + h[..., None] * 6) % 6
    return v[..., None] - v[..., None] * s[..., None] * (torch.minimum(k, 4 - k).clamp(0, 1))


def _rgb_to_hsv(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = rgb.unbind(-1)
    v, _ = rgb.max(-1)
    c = v - rgb.min(-1).values
    safe = c.clamp(min=1e-8)
    h = torch.where(v == r, ((g - b) / safe) % 6, torch.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(c > 0, h / 6, torch.zeros_like(h))
    return h, torch.where(v > 0, c / v.clamp(min=1e-8), torch.zeros_like(v)), v


def nearest_palette(rgb: torch.Tensor) -> torch.Tensor:
    """Index of the palette colour nearest (in RGB) to each colour ``[..., 3]``."""
    return torch.cdist(rgb.reshape(-1, 3), palette_tensor()).argmin(-1).view(rgb.shape[:-1])


def recolour(scenes: Scenes, generator: torch.Generator | int = 0, hue_jitter: float = 0.0,
             sv_jitter: float = 0.0, grey_fraction: float = 0.0, any_hue: float = 0.0) -> Scenes:
    """Vary each object's exact colour so that colour and shape are learned separately.

    Every object keeps its palette name but its RGB is jittered (``hue_jitter`` in degrees,
    ``sv_jitter`` a relative change of saturation and value). A ``grey_fraction`` of
    single-object scenes lose their colour name (index :data:`GREY`; captions name only the
    shape); of those, an ``any_hue`` fraction get a random vivid colour instead of grey.
    None of this can produce a held-out pair, even in pixels: jittered colours stay nearest
    their own palette colour, and a random colour whose nearest palette colour would make
    a held-out pair with the shape is replaced by grey (both tested).
    """
    gen = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(generator)
    B, K = scenes.colour.shape
    base = palette_tensor()[scenes.colour.clamp(min=0)]  # [B, K, 3]
    h, sat, val = _rgb_to_hsv(base)
    h = (h + _uniform(gen, (B, K), -hue_jitter, hue_jitter) / 360) % 1
    sat = (sat * (1 + _uniform(gen, (B, K), -sv_jitter, sv_jitter))).clamp(0, 1)
    val = (val * (1 + _uniform(gen, (B, K), -sv_jitter, sv_jitter))).clamp(0, 1)
    rgb = _hsv_to_rgb(h, sat, val)
    # A jitter that lands nearer another palette colour (yellow ↔ orange, red ↔ orange) could
    # draw, say, an orange triangle that looks yellow — a held-out pair in pixels: undo it.
    strayed = nearest_palette(rgb) != scenes.colour
    rgb = torch.where(strayed[..., None], base, rgb)
    colour = scenes.colour.clone()
    if K == 1 and grey_fraction > 0:
        unnamed = torch.rand(B, generator=gen) < grey_fraction  # [B]
        grey = _uniform(gen, (B, 1, 1), 0.45, 0.95).expand(B, 1, 3)
        vivid = _hsv_to_rgb(torch.rand(B, 1, generator=gen), _uniform(gen, (B, 1), 0.5, 1.0),
                            _uniform(gen, (B, 1), 0.6, 1.0))  # [B, 1, 3]
        looks_held_out = HELD_OUT_TABLE[nearest_palette(vivid)[:, 0], scenes.shape[:, 0]]
        use_vivid = (torch.rand(B, generator=gen) < any_hue) & ~looks_held_out
        unnamed_rgb = torch.where(use_vivid[:, None, None], vivid, grey)
        rgb = torch.where(unnamed[:, None, None], unnamed_rgb, rgb)
        colour[unnamed] = GREY
    out = Scenes(**scenes.__dict__)
    out.colour, out.rgb = colour, rgb
    return out


# --------------------------------------------------------------------------------------
# Signed distance functions, in units of the object's radius; p is [..., 2] with y UP.
# --------------------------------------------------------------------------------------
def sdf_circle(p: torch.Tensor) -> torch.Tensor:
    return p.norm(dim=-1) - 1.0


def sdf_square(p: torch.Tensor) -> torch.Tensor:
    half = 0.85  # a square of half-side 0.85 has about the same area as the unit circle
    d = p.abs() - half
    outside = d.clamp(min=0).norm(dim=-1)
    inside = d.max(dim=-1).values.clamp(max=0)
    return outside + inside


def sdf_triangle(p: torch.Tensor) -> torch.Tensor:
    """Equilateral triangle pointing up, circumradius 1.35, its bounding box centred."""
    r = 1.35 * math.sqrt(3) / 2  # half the side length
    k = math.sqrt(3.0)
    x, y = p[..., 0].abs() - r, p[..., 1] + 0.3 + r / k
    # Fold the plane so that only one edge needs a distance (the triangle's symmetry).
    fold = (x + k * y) > 0
    x, y = torch.where(fold, (x - k * y) / 2, x), torch.where(fold, (-k * x - y) / 2, y)
    x = x - x.clamp(-2 * r, 0)
    return -torch.sqrt(x * x + y * y) * torch.sign(y)


def sdf_star(p: torch.Tensor, inner: float = 0.5) -> torch.Tensor:
    """Five-pointed star pointing up, tips at radius 1.2, inner corners at ``inner`` × that."""
    r = 1.2
    k1x, k1y = 0.809016994375, -0.587785252292  # (cos 36°, -sin 36°)
    x, y = p[..., 0].abs(), p[..., 1]
    # Reflect into one tenth of the star using its mirror lines.
    for kx, ky in ((k1x, k1y), (-k1x, k1y)):
        d = (kx * x + ky * y).clamp(min=0) * 2
        x, y = x - d * kx, y - d * ky
    x = x.abs()
    y = y - r
    bax, bay = -inner * k1y, inner * k1x - 1.0  # from the tip to the inner corner
    h = ((x * bax + y * bay) / (bax * bax + bay * bay)).clamp(0, r)
    dist = torch.sqrt((x - bax * h) ** 2 + (y - bay * h) ** 2)
    return dist * torch.sign(y * bax - x * bay)


def sdf_heart(p: torch.Tensor) -> torch.Tensor:
    """Heart with its tip at the bottom, roughly spanning the unit disc."""
    scale = 1.75
    x, y = p[..., 0].abs() / scale, p[..., 1] / scale + 0.55
    lobes = torch.sqrt((x - 0.25) ** 2 + (y - 0.75) ** 2) - math.sqrt(2) / 4
    m = 0.5 * (x + y).clamp(min=0)
    body = torch.sqrt(torch.minimum(x**2 + (y - 1) ** 2, (x - m) ** 2 + (y - m) ** 2))
    body = body * torch.sign(x - y)
    return torch.where(y + x > 1.0, lobes, body) * scale


SDFS = {"circle": sdf_circle, "square": sdf_square, "triangle": sdf_triangle,
        "star": sdf_star, "heart": sdf_heart}


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------
def render(scenes: Scenes, resolution: int = 32, antialias: bool = True,
           background: tuple[int, int, int] | torch.Tensor = BACKGROUND) -> torch.Tensor:
    """Render scenes to images ``[B, 3, R, R]`` in [0, 1], objects painted in order."""
    if resolution < 4:
        raise ValueError(f"resolution must be at least 4 pixels, got {resolution}")
    if (scenes.radius <= 0).any():
        raise ValueError("object radius must be positive")
    B, K = scenes.colour.shape
    bg = torch.as_tensor(background, dtype=torch.float32)
    bg = bg / 255.0 if bg.max() > 1 else bg
    image = bg.view(1, 3, 1, 1).expand(B, 3, resolution, resolution).clone()
    # Pixel centres in [0, 1]; y grows downwards in the image.
    coords = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")  # [R, R]
    if scenes.rgb is None and (scenes.colour < 0).any():
        raise ValueError("uncoloured (grey) objects need their rgb set; use recolour()")
    rgb = scenes.rgb if scenes.rgb is not None else palette_tensor()[scenes.colour]  # [B, K, 3]
    for k in range(K):
        r = scenes.radius[:, k].view(B, 1, 1)
        # Local coordinates in radius units with y up, so shapes point up.
        local = torch.stack(
            [(gx - scenes.x[:, k].view(B, 1, 1)) / r, (scenes.y[:, k].view(B, 1, 1) - gy) / r], -1
        )  # [B, R, R, 2]
        dist = torch.empty(B, resolution, resolution)
        for s, name in enumerate(SHAPES):
            rows = (scenes.shape[:, k] == s).nonzero().squeeze(1)
            if len(rows):
                dist[rows] = SDFS[name](local[rows])
        dist_px = dist * r * resolution  # signed distance in pixels
        alpha = (0.5 - dist_px).clamp(0, 1) if antialias else (dist_px <= 0).float()
        alpha = alpha[:, None]  # [B, 1, R, R]
        image = image * (1 - alpha) + rgb[:, k, :, None, None] * alpha
    return image


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
    two-object scenes with a relation.
    """

    def __init__(self, batch_size: int = 128, resolution: int = 32, seed: int = 0,
                 split: str = "train", two_object_fraction: float = 0.0, start: int = 0,
                 hue_jitter: float = 0.0, sv_jitter: float = 0.0, grey_fraction: float = 0.0,
                 any_hue: float = 0.0):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size, self.resolution, self.seed = batch_size, resolution, seed
        self.split, self.two_object_fraction, self.start = split, two_object_fraction, start
        self.recolour = dict(hue_jitter=hue_jitter, sv_jitter=sv_jitter, grey_fraction=grey_fraction,
                             any_hue=any_hue)

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
            images.append(render(s, self.resolution))
            texts += captions(s, gen)
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
