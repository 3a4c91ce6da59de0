"""The Shapes world's vocabulary and scenes: what can be in a picture, and sampling it.

The palette, shapes, sizes, positions and relations; the held-out colour×shape pairs
(:data:`HELD_OUT_PAIRS`) that the training split never produces; :class:`Scenes`, a batch
of scenes as tensors; and the ways to make scenes — :func:`sample_scenes` (random, per
split), :func:`make_scenes` (from names) and :func:`recolour` (jittered or grey colours).

This is the bottom of the package: it imports nothing from the other modules.
"""
from __future__ import annotations

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
