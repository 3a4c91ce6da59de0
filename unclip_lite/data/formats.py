"""Bring your own data: the three on-disk formats open_clip trains on.

* **CSV** (open_clip ``--dataset-type csv``): a *tab*-separated file with a header, one row
  per pair; column ``filepath`` holds the image path, ``title`` the caption (open_clip's
  defaults ``--csv-separator "\\t" --csv-img-key filepath --csv-caption-key title``).
* **webdataset** (``--dataset-type webdataset``): tar shards ``shard-000000.tar``, ... in
  which each pair is two consecutive members sharing a key: ``000042.png`` + ``000042.txt``.
  Streaming big sequential files is what makes LAION-scale training possible.
* **Image folder**: ``000000.png`` next to ``000000.txt``; the easiest to make by hand.

Images go in as float tensors in [0, 1] ([N, 3, H, W], or a list of [3, H, W]) and are
stored as PNG after :func:`to_uint8`, so a write-then-read round trip is *exact* at uint8
precision: ``from_uint8(to_uint8(x))`` is what you get back.

Caption policy: captions are stored verbatim (any unicode, tabs, newlines). In the CSV a
caption with a tab, newline or double quote is quoted by the :mod:`csv` module (RFC 4180
style, quote doubled), which is also what pandas (open_clip's CSV reader) undoes by default.
:class:`ImageFolderDataset` strips surrounding whitespace, because hand-written ``.txt``
files usually end in a newline.
"""
from __future__ import annotations

import csv
import io
import re
import tarfile
from dataclasses import dataclass
from functools import partial
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from unclip_lite.data.errors import DataFilesMissingError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
CSV_SEPARATOR, CSV_IMG_KEY, CSV_CAPTION_KEY = "\t", "filepath", "title"  # open_clip defaults

Images = torch.Tensor | Sequence[torch.Tensor]


# --------------------------------------------------------------------------------------
# Pixels <-> bytes
# --------------------------------------------------------------------------------------
def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float in [0, 1] -> uint8, rounding to the nearest level (not truncating)."""
    return (images * 255).round().clamp(0, 255).to(torch.uint8)


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float in [0, 1]; the exact inverse of :func:`to_uint8` on its levels."""
    return images.float() / 255.0


def encode_png(image: torch.Tensor) -> bytes:
    """A float [3, H, W] image in [0, 1] as PNG bytes (lossless after uint8 rounding)."""
    from PIL import Image

    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image of shape [3, H, W], got {tuple(image.shape)}")
    array = to_uint8(image.detach().cpu()).permute(1, 2, 0).contiguous().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_pil(data: bytes | Path):
    """PNG/JPEG/WebP bytes (or a file) -> an RGB ``PIL.Image``, loaded (the file is closed).

    What open_clip's transforms take. Transparent pixels hold arbitrary colours, so they are
    shown as white (webdataset's ``"pilrgb"`` decoder, which open_clip uses, drops alpha instead).
    """
    from PIL import Image

    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
        if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
            rgba = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        return im.convert("RGB")


def decode_image(data: bytes | Path, resolution: int | None = None) -> torch.Tensor:
    """PNG/JPEG/WebP bytes (or a file) -> float [3, H, W] in [0, 1], optionally resized square."""
    rgb = decode_pil(data)
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    image = from_uint8(pixels.view(rgb.height, rgb.width, 3).permute(2, 0, 1))
    if resolution is not None and image.shape[-2:] != (resolution, resolution):
        image = F.interpolate(image[None], size=(resolution, resolution), mode="bilinear", antialias=True)[0]
        image = image.clamp(0.0, 1.0)
    return image


def _pairs(images: Images, captions: Sequence[str]) -> list[tuple[torch.Tensor, str]]:
    """Check the inputs line up and return (image, caption) pairs."""
    images = list(images)  # a [N, 3, H, W] tensor iterates as N [3, H, W] images
    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions")
    for c in captions:
        if not isinstance(c, str):
            raise ValueError(f"captions must be str, got {type(c).__name__}: {c!r}")
    return list(zip(images, captions))


def _key_width(n: int) -> int:
    """Zero-padding for running keys: 000000 ... , wider only past a million."""
    return max(6, len(str(max(n - 1, 0))))


# --------------------------------------------------------------------------------------
# CSV (tab-separated, open_clip layout)
# --------------------------------------------------------------------------------------
def write_csv(out_dir: str | Path, images: Images, captions: Sequence[str], csv_name: str = "train.csv") -> Path:
    """Save images as ``out_dir/images/NNNNNN.png`` and a TSV of (filepath, title) rows.

    Paths in the CSV are relative to the CSV's folder, so the whole folder can be moved.
    """
    out_dir = Path(out_dir)
    pairs = _pairs(images, captions)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    width = _key_width(len(pairs))
    csv_path = out_dir / csv_name
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=CSV_SEPARATOR, lineterminator="\n")  # quotes tabs/newlines
        writer.writerow([CSV_IMG_KEY, CSV_CAPTION_KEY])
        for i, (image, text) in enumerate(pairs):
            relative = f"images/{i:0{width}d}.png"
            (out_dir / relative).write_bytes(encode_png(image))
            writer.writerow([relative, text])
    return csv_path


class CsvDataset(Dataset):
    """(image [3, H, W] in [0, 1], caption) pairs listed in an open_clip-style CSV."""

    def __init__(
        self,
        csv_path: str | Path,
        resolution: int | None = None,
        img_key: str = CSV_IMG_KEY,
        caption_key: str = CSV_CAPTION_KEY,
        sep: str = CSV_SEPARATOR,
    ):
        self.csv_path = Path(csv_path)
        self.resolution = resolution
        if not self.csv_path.is_file():
            raise DataFilesMissingError(f"CSV file {self.csv_path} does not exist; write one with write_csv()")
        with open(self.csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=sep)
            columns = reader.fieldnames or []
            missing = [k for k in (img_key, caption_key) if k not in columns]
            if missing:
                raise ValueError(
                    f"{self.csv_path} lacks column(s) {missing}: expected {[img_key, caption_key]}, "
                    f"found {columns} (separator {sep!r}; open_clip's default is a tab)"
                )
            rows = [(row[img_key], row[caption_key]) for row in reader]
        # Relative paths are relative to the CSV, not to wherever Python was started.
        self.paths = [self.csv_path.parent / p for p in (r[0] for r in rows)]  # absolute p wins in `/`
        self.captions = [r[1] for r in rows]
        if not rows:
            raise ValueError(f"{self.csv_path} has a header but no rows")
        _check_files_exist(self.paths, f"images listed in {self.csv_path}")

    def __len__(self) -> int:
        return len(self.paths)

    def caption(self, index: int) -> str:
        return self.captions[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        return decode_image(self.paths[index], self.resolution), self.caption(index)


def _check_files_exist(paths: Sequence[Path], what: str) -> None:
    """Fail early, naming a few missing files, rather than mid-epoch on the first one."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise DataFilesMissingError(f"{len(missing)} of {len(paths)} {what} are missing: {shown}{more}")


# --------------------------------------------------------------------------------------
# webdataset tar shards
# --------------------------------------------------------------------------------------
def write_webdataset(
    out_dir: str | Path, images: Images, captions: Sequence[str], shard_size: int = 1000, prefix: str = "shard"
) -> list[Path]:
    """Write ``prefix-000000.tar``, ... with ``shard_size`` pairs each (``KEY.png`` + ``KEY.txt``).

    Written with :mod:`tarfile` to show there is nothing more to a shard than a tar whose
    consecutive members share a key. Timestamps are fixed, so the same data gives the same bytes.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = _pairs(images, captions)
    width = _key_width(len(pairs))
    shards: list[Path] = []
    for start in range(0, len(pairs), shard_size):
        path = out_dir / f"{prefix}-{len(shards):06d}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i, (image, text) in enumerate(pairs[start : start + shard_size], start=start):
                key = f"{i:0{width}d}"
                _add_member(tar, f"{key}.png", encode_png(image))
                _add_member(tar, f"{key}.txt", text.encode("utf-8"))
        shards.append(path)
    return shards


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    tar.addfile(info, io.BytesIO(data))


def read_webdataset(shards: str | Path | Iterable[str | Path], resolution: int | None = None):
    """Stream (image [3, H, W] in [0, 1], caption) from shards with the ``webdataset`` library.

    ``shards``: one tar, a list of tars, a folder of ``*.tar``, or a brace pattern such as
    ``"data/shard-{000000..000009}.tar"``. Image members may be png, jpg, jpeg or webp.
    Returns a ``torch`` IterableDataset, so it can go straight into a DataLoader.
    """
    import webdataset as wds

    urls = _shard_urls(shards)
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    # Module-level functions (not lambdas) so DataLoader workers can pickle the pipeline.
    return dataset.to_tuple("png;jpg;jpeg;webp", "txt").map_tuple(
        partial(decode_image, resolution=resolution), _decode_text
    )


# The image member a sample's picture is read from, first match wins: open_clip's
# ``to_tuple("jpg;png;jpeg;webp", "txt")``.
SHARD_IMAGE_EXTENSIONS = ("jpg", "png", "jpeg", "webp")
# webdataset's ``base_plus_ext``: the key is the path up to the first dot of the file name.
_KEY_AND_EXTENSION = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


@dataclass(frozen=True)
class ShardSample:
    """Where one (image, caption) pair sits inside a tar: byte offset and size of each member."""

    key: str
    image: tuple[int, int]  # (offset of the member's data, size in bytes)
    text: tuple[int, int]


def index_shard(path: str | Path) -> list[ShardSample]:
    """The complete samples of one webdataset shard, in order, read from the tar headers alone.

    Members are grouped into samples as webdataset groups them (consecutive members sharing a
    key); a sample without an image or without a ``txt`` caption is left out, as open_clip's
    ``filter_no_caption_or_no_image`` does. The tar is opened seekable, so walking the headers
    skips over the member data instead of reading it: counting a 1 GB shard reads ~1 MB.
    """
    samples: list[ShardSample] = []
    key, members = None, {}

    def flush():
        image = next((members[e] for e in SHARD_IMAGE_EXTENSIONS if e in members), None)
        if key is not None and image is not None and "txt" in members:
            samples.append(ShardSample(key, image, members["txt"]))

    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                match = _KEY_AND_EXTENSION.match(info.name)
                if not info.isfile() or match is None:
                    continue
                if match.group(1) != key:
                    flush()
                    key, members = match.group(1), {}
                members[match.group(2).lower()] = (info.offset_data, info.size)
    except tarfile.TarError as err:
        raise ValueError(f"{path} is not a readable tar shard: {err}") from err
    flush()
    return samples


def _decode_text(data: bytes) -> str:
    return data.decode("utf-8")


def _shard_urls(shards: str | Path | Iterable[str | Path]) -> str | list[str]:
    if isinstance(shards, str) and "{" in shards:
        return shards  # webdataset expands the braces itself
    if isinstance(shards, (str, Path)):
        path = Path(shards)
        paths = sorted(path.glob("*.tar")) if path.is_dir() else [path]
        if not paths:
            raise DataFilesMissingError(f"no .tar shards in {path}; write some with write_webdataset()")
    else:
        paths = [Path(p) for p in shards]
        if not paths:
            raise DataFilesMissingError("read_webdataset got an empty list of shards")
    _check_files_exist(paths, "webdataset shards")
    return [str(p) for p in paths]


# --------------------------------------------------------------------------------------
# Image folders: 000000.png + 000000.txt
# --------------------------------------------------------------------------------------
def write_image_folder(out_dir: str | Path, images: Images, captions: Sequence[str]) -> Path:
    """Write ``NNNNNN.png`` + ``NNNNNN.txt`` pairs into ``out_dir``; returns ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = _pairs(images, captions)
    width = _key_width(len(pairs))
    for i, (image, text) in enumerate(pairs):
        (out_dir / f"{i:0{width}d}.png").write_bytes(encode_png(image))
        (out_dir / f"{i:0{width}d}.txt").write_text(text, encoding="utf-8", newline="")
    return out_dir


class ImageFolderDataset(Dataset):
    """Every image under ``folder`` (recursively) with a same-stem ``.txt`` caption beside it."""

    def __init__(self, folder: str | Path, resolution: int | None = None):
        self.folder = Path(folder)
        self.resolution = resolution
        if not self.folder.is_dir():
            raise DataFilesMissingError(f"image folder {self.folder} does not exist")
        self.paths = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.paths:
            raise DataFilesMissingError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {self.folder}; write some with write_image_folder()"
            )
        uncaptioned = [p for p in self.paths if not p.with_suffix(".txt").is_file()]
        if uncaptioned:
            shown = ", ".join(p.name for p in uncaptioned[:5])
            raise DataFilesMissingError(
                f"{len(uncaptioned)} of {len(self.paths)} images in {self.folder} have no caption file "
                f"(expected e.g. {uncaptioned[0].with_suffix('.txt').name} next to the image): {shown}"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def caption(self, index: int) -> str:
        return self.paths[index].with_suffix(".txt").read_text(encoding="utf-8").strip()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        return decode_image(self.paths[index], self.resolution), self.caption(index)
