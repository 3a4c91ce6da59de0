"""Real (image, caption) data for training: one deterministic, resumable stream per rank.

``--data`` names a :class:`DataSource`: webdataset tar shards (a brace pattern such as
``'shards/{00000..00999}.tar'``, several joined by ``::`` as open_clip allows, a folder of
``*.tar`` or one tar), an open_clip CSV, or an image folder (:mod:`unclip_lite.data.formats`).
:class:`PairStream` turns it into micro-batches, and :func:`pair_batches` into the
``batches(index, rank, world_size)`` the :class:`~unclip_lite.train.Trainer` reads.

**The order is a pure function of the batch index.** An epoch is every sample of the source
once. Its order: the shards are permuted (seeded by ``(seed, epoch)``, the same permutation on
every rank) and concatenated; rank ``r`` of ``W`` takes the ``r``-th contiguous ``N // W`` of
that sequence, so each rank reads about ``1/W`` of the shards, front to back; within a rank,
optionally, samples are permuted inside consecutive blocks of ``shuffle_buffer`` (a seeded,
stateless stand-in for webdataset's shuffle buffer). Rank ``r``'s micro-batch ``i`` is the
``B`` samples at positions ``[j·B, (j+1)·B)``, ``j = i mod batches_per_epoch``, of its share of
epoch ``i // batches_per_epoch``. Every rank runs ``batches_per_epoch = (N // W) // B``
micro-batches an epoch; the remainder, ``N - W·B·batches_per_epoch`` samples (fewer than
``W·B``), is left out of that epoch — a different remainder every epoch, as the order changes.

**Resuming reads nothing before the resume point.** Locating batch ``i`` needs only the
sample count of each shard: ``sizes.json`` beside the shards (``{"00000.tar": 10000, ...}``,
the file open_clip's ``get_dataset_size`` reads when ``--train-num-samples`` is not given;
:func:`write_shard_sizes` writes it) or, for shards it does not list, a count from the tar
headers (:func:`~unclip_lite.data.formats.index_shard`: header blocks only, seeking past the
member data). Reading a shard seeks to each sample's bytes, so a resumed run decodes exactly
the samples of the batches it trains on. At LAION scale (thousands of shards, each rank
counting all of them at start-up) write ``sizes.json`` once: start-up then reads one file.

**Workers only prefetch.** ``workers > 0`` computes the same batches ahead in a torch
``DataLoader`` (its workers take the coming batch indices in turn, each building whole
batches), so the batches are identical to ``workers=0``. Random augmentation draws from
torch's RNG reseeded per sample from ``(seed, epoch, position)``: the same crop whichever
process makes it.

Shards must be seekable files (a local or mounted filesystem); for ``pipe:``/``s3://``
streaming, open_clip's webdataset pipeline is the tool.
"""
from __future__ import annotations

import itertools
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unclip_lite.data.errors import DataFilesMissingError
from unclip_lite.data.formats import (IMAGE_EXTENSIONS, CsvDataset, ImageFolderDataset, _check_files_exist,
                                      decode_pil, index_shard)

FORMATS = ("auto", "webdataset", "csv", "folder")
SIZES_FILE = "sizes.json"  # open_clip's name (open_clip_train/data.py, get_dataset_size)
_LOOKS_LIKE = "webdataset shards ('shards/{00000..00999}.tar', a folder of .tar, one .tar), a CSV, or an image folder"


@dataclass(frozen=True)
class DataSource:
    """What ``--data`` names: a path and its format (``"auto"``: decided from the path)."""

    path: str
    format: str = "auto"


def open_source(path: str, format: str = "auto") -> DataSource:
    """A checked :class:`DataSource` with its format decided: the files exist, or a clear error."""
    if format not in FORMATS:
        raise ValueError(f"data format must be one of {', '.join(FORMATS)}, got {format!r}")
    path = str(path).strip()
    if not path:
        raise ValueError(f"no data path given: name {_LOOKS_LIKE}")
    source = DataSource(path, _guess_format(path) if format == "auto" else format)
    open_catalog(source, count=False)  # every file is there (shards are counted later, once)
    return source


def _guess_format(path: str) -> str:
    if "{" in path or "::" in path or path.endswith(".tar"):
        return "webdataset"
    if path.endswith((".csv", ".tsv")):
        return "csv"
    folder = Path(path)
    if folder.is_dir():
        if any(folder.glob("*.tar")):
            return "webdataset"
        if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*")):
            return "folder"
        raise DataFilesMissingError(f"{path} is a folder without .tar shards or images: expected {_LOOKS_LIKE}")
    if not folder.exists():
        raise DataFilesMissingError(f"no data at {path}: expected {_LOOKS_LIKE}")
    raise ValueError(f"cannot tell the data format of {path}; give it (--data-format webdataset|csv|folder)")


def shard_paths(pattern: str) -> list[Path]:
    """The tar files a webdataset path names (brace patterns expanded, ``::`` joins lists)."""
    from braceexpand import braceexpand  # webdataset's own dependency

    paths: list[Path] = []
    for part in pattern.split("::"):
        for name in braceexpand(part):
            folder = Path(name)
            if folder.is_dir():
                tars = sorted(folder.glob("*.tar"))
                if not tars:
                    raise DataFilesMissingError(f"no .tar shards in {folder}; write some with write_webdataset()")
                paths += tars
            else:
                paths.append(folder)
    _check_files_exist(paths, f"webdataset shards named by {pattern!r}")
    return paths


# --------------------------------------------------------------------------------------
# Catalogs: where sample n of a source is, and how many there are
# --------------------------------------------------------------------------------------
def shard_sizes(paths: Sequence[Path]) -> list[int]:
    """Samples per shard: from ``sizes.json`` beside them where it lists the shard, else counted."""
    listed: dict[Path, dict] = {}
    sizes = []
    for path in paths:
        if path.parent not in listed:
            file = path.parent / SIZES_FILE
            listed[path.parent] = json.loads(file.read_text()) if file.is_file() else {}
        known = listed[path.parent].get(path.name)
        sizes.append(int(known) if known is not None else len(index_shard(path)))
    return sizes


def write_shard_sizes(source: DataSource | str) -> list[Path]:
    """Count every shard of ``source`` once and write ``sizes.json`` beside them (merging what is
    there); later runs start without reading the shards. Returns the files written."""
    paths = shard_paths(source.path if isinstance(source, DataSource) else source)
    by_folder: dict[Path, dict] = {}
    for path in paths:
        by_folder.setdefault(path.parent, {})[path.name] = len(index_shard(path))
    written = []
    for folder, counts in by_folder.items():
        file = folder / SIZES_FILE
        merged = {**(json.loads(file.read_text()) if file.is_file() else {}), **counts}
        tmp = file.with_name(file.name + ".tmp")
        tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
        os.replace(tmp, file)  # atomic: a reader never sees half a file
        written.append(file)
    return written


class TarShards:
    """The samples of webdataset shards; a unit is a shard, read by seeking to its members."""

    def __init__(self, paths: list[Path], count: bool = True):
        self.paths = paths
        self.sizes = np.array(shard_sizes(paths) if count else [], dtype=np.int64)  # [shards]
        self._indexes: OrderedDict[int, list] = OrderedDict()  # the last few shards' member offsets

    def _index(self, unit: int) -> list:
        if unit not in self._indexes:
            index = index_shard(self.paths[unit])
            if len(index) != self.sizes[unit]:
                raise ValueError(f"{self.paths[unit]} holds {len(index)} samples, but {SIZES_FILE} says "
                                 f"{self.sizes[unit]}: rewrite it with write_shard_sizes() or delete it")
            self._indexes[unit] = index
            while len(self._indexes) > 4:
                self._indexes.popitem(last=False)
        return self._indexes[unit]

    def read(self, unit: int, offsets: Sequence[int]) -> list[tuple[object, str]]:
        """(PIL image, caption) of samples ``offsets`` (ascending) of shard ``unit``."""
        index, out = self._index(unit), []
        with open(self.paths[unit], "rb") as f:
            for offset in offsets:
                sample = index[offset]
                f.seek(sample.image[0])
                image = f.read(sample.image[1])
                f.seek(sample.text[0])
                text = f.read(sample.text[1]).decode("utf-8")
                out.append((_decoded(image, f"sample {sample.key} of {self.paths[unit]}"), text))
        return out


class IndexedPairs:
    """A CSV's or an image folder's pairs; a unit is one sample, so an epoch is fully shuffled."""

    def __init__(self, dataset: CsvDataset | ImageFolderDataset):
        self.dataset = dataset
        self.sizes = np.ones(len(dataset), dtype=np.int64)  # [samples]

    def read(self, unit: int, offsets: Sequence[int]) -> list[tuple[object, str]]:
        path = self.dataset.paths[unit]
        return [(_decoded(path, str(path)), self.dataset.caption(unit))]


def _decoded(data, where: str):
    try:
        return decode_pil(data)
    except Exception as err:  # PIL raises several kinds; say which sample it was
        raise ValueError(f"cannot decode the image of {where}: {err}") from err


def open_catalog(source: DataSource, count: bool = True) -> TarShards | IndexedPairs:
    """The catalog of ``source``; ``count=False`` checks the shards exist without counting them."""
    if source.format == "webdataset":
        catalog = TarShards(shard_paths(source.path), count=count)
        if count and catalog.sizes.sum() == 0:
            raise DataFilesMissingError(f"the {len(catalog.paths)} shards of {source.path} hold no complete "
                                        f"samples (an image member and a .txt member sharing a key)")
        return catalog
    if source.format == "csv":
        return IndexedPairs(CsvDataset(source.path))
    if source.format == "folder":
        return IndexedPairs(ImageFolderDataset(source.path))
    raise ValueError(f"data format must be one of {', '.join(FORMATS[1:])} here, got {source.format!r}")


# --------------------------------------------------------------------------------------
# The order: which samples make rank r's micro-batch i
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleRef:
    epoch: int
    position: int  # in the epoch's global order; unique within the epoch
    unit: int      # shard (webdataset) or sample (CSV, folder)
    offset: int    # sample number inside the unit


class EpochOrder:
    """Rank ``rank``'s share of every epoch, batch by batch (the module docstring has the rule)."""

    def __init__(self, sizes: np.ndarray | Sequence[int], batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle_buffer: int = 0):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or shuffle_buffer < 0:
            raise ValueError(f"need batch_size >= 1, 0 <= rank < world_size, shuffle_buffer >= 0; got "
                             f"{batch_size}, {rank}, {world_size}, {shuffle_buffer}")
        sizes = np.asarray(sizes, dtype=np.int64)  # [units] samples in each
        self.sizes, self.batch_size, self.rank, self.world_size = sizes, batch_size, rank, world_size
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        self.samples = int(sizes.sum())
        self.per_rank = self.samples // world_size
        self.batches_per_epoch = self.per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"{self.samples} samples cannot fill one micro-batch of {batch_size} on each of "
                             f"{world_size} processes: use a smaller batch or more data")
        self.dropped_per_epoch = self.samples - world_size * batch_size * self.batches_per_epoch
        self._unit_samples = bool((sizes == 1).all())
        self._epochs: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(units in this epoch's order, where each one ends in it); the same on every rank.
        Units of one sample each need no ends (a CSV of 10M rows would hold another 80 MB)."""
        if epoch not in self._epochs:
            order = np.random.default_rng([self.seed, epoch, 0]).permutation(len(self.sizes))
            self._epochs[epoch] = order, None if self._unit_samples else np.cumsum(self.sizes[order])
            while len(self._epochs) > 2:
                self._epochs.popitem(last=False)
        return self._epochs[epoch]

    def epoch_units(self, epoch: int) -> np.ndarray:
        """The shards (or rows) in epoch ``epoch``'s order: one permutation, the same on every rank."""
        return self._epoch(epoch)[0]

    def _shuffled(self, q: np.ndarray, epoch: int) -> np.ndarray:
        """Positions permuted inside their block of ``shuffle_buffer`` (seeded per rank and epoch)."""
        size, used = self.shuffle_buffer, self.batches_per_epoch * self.batch_size
        out = q.copy()
        for block in np.unique(q // size):
            start = int(block) * size
            perm = np.random.default_rng([self.seed, epoch, 1 + self.rank, int(block)]).permutation(
                min(size, used - start))
            mine = q // size == block
            out[mine] = start + perm[q[mine] - start]
        return out

    def locate(self, index: int) -> list[SampleRef]:
        """The samples of micro-batch ``index`` on this rank, in batch order."""
        if index < 0:
            raise ValueError(f"batch index must be >= 0, got {index}")
        epoch, b = divmod(index, self.batches_per_epoch)
        q = b * self.batch_size + np.arange(self.batch_size)  # [B] positions in this rank's share
        if self.shuffle_buffer > 1:
            q = self._shuffled(q, epoch)
        g = self.rank * self.per_rank + q  # [B] positions in the epoch
        order, ends = self._epoch(epoch)
        if ends is None:  # one sample per unit (CSV, folder): the epoch is a permutation of the samples
            return [SampleRef(epoch, int(p), int(u), 0) for p, u in zip(g, order[g])]
        k = np.searchsorted(ends, g, side="right")  # [B] which unit of the epoch's sequence
        offsets = g - (ends[k] - self.sizes[order[k]])
        return [SampleRef(epoch, int(p), int(u), int(o)) for p, u, o in zip(g, order[k], offsets)]


# --------------------------------------------------------------------------------------
# The stream
# --------------------------------------------------------------------------------------
def seeded(transform: Callable, image, seed: int):
    """``transform(image)`` with torch's RNG seeded to ``seed`` (and restored after)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


class PairStream:
    """Rank ``rank``'s micro-batches of ``source``: ``batch(i)`` -> (images [B, 3, H, W], captions).

    ``transform`` maps a PIL RGB image to a tensor (:mod:`unclip_lite.data.transforms`);
    ``text_transform``, if given, maps the batch's captions (e.g. a tokenizer) in the worker.
    """

    def __init__(self, source: DataSource, batch_size: int, transform: Callable, *, seed: int = 0,
                 rank: int = 0, world_size: int = 1, workers: int = 0, shuffle_buffer: int = 0,
                 text_transform: Callable | None = None, catalog: TarShards | IndexedPairs | None = None):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.source, self.transform, self.text_transform = source, transform, text_transform
        self.seed, self.workers = seed, workers
        self.catalog = catalog if catalog is not None else open_catalog(source)
        self.order = EpochOrder(self.catalog.sizes, batch_size, rank, world_size, seed, shuffle_buffer)
        self._loader, self._next = None, None

    def locate(self, index: int) -> list[SampleRef]:
        return self.order.locate(index)

    def load_batch(self, index: int):
        """Micro-batch ``index``, made in this process."""
        refs = self.locate(index)
        pairs: dict[int, tuple] = {}
        by_unit: dict[int, list[int]] = {}
        for j, ref in enumerate(refs):
            by_unit.setdefault(ref.unit, []).append(j)
        for unit, slots in by_unit.items():  # each shard once, its samples front to back
            slots.sort(key=lambda j: refs[j].offset)
            for j, pair in zip(slots, self.catalog.read(unit, [refs[j].offset for j in slots])):
                pairs[j] = pair
        images = [seeded(self.transform, pairs[j][0], self._sample_seed(ref)) for j, ref in enumerate(refs)]
        captions = [pairs[j][1] for j in range(len(refs))]
        return torch.stack(images), (self.text_transform(captions) if self.text_transform else captions)

    def _sample_seed(self, ref: SampleRef) -> int:
        return int(np.random.SeedSequence([self.seed, ref.epoch, ref.position]).generate_state(1)[0])

    def batch(self, index: int):
        """Micro-batch ``index``: with workers, from the prefetching DataLoader (same result)."""
        if not self.workers:
            return self.load_batch(index)
        if self._next != index:  # a first call, a resume or a jump: start the workers there
            self.close()
            loader = torch.utils.data.DataLoader(
                _BatchesByIndex(self), batch_size=None, sampler=itertools.count(index),
                num_workers=self.workers, prefetch_factor=2, pin_memory=torch.cuda.is_available())
            self._loader = iter(loader)
        self._next = index + 1
        return next(self._loader)

    def close(self) -> None:
        """Stop the prefetching workers (they also stop when the stream is garbage-collected)."""
        self._loader, self._next = None, None

    def __getstate__(self) -> dict:  # a worker gets the recipe for batches, not the loader
        return {**self.__dict__, "_loader": None, "_next": None}


class _BatchesByIndex(torch.utils.data.Dataset):
    def __init__(self, stream: PairStream):
        self.stream = stream

    def __getitem__(self, index: int):
        return self.stream.load_batch(index)


class PairBatches:
    """``batches(index, rank, world_size)`` for the trainer: one :class:`PairStream` per rank,
    made on first use, sharing one catalog (the shards are counted once, here)."""

    def __init__(self, source: DataSource, batch_size: int, transform: Callable, *, seed: int = 0,
                 workers: int = 0, shuffle_buffer: int = 0, text_transform: Callable | None = None):
        self.catalog = open_catalog(source)
        self.options = dict(seed=seed, workers=workers, shuffle_buffer=shuffle_buffer,
                            text_transform=text_transform)
        self.source, self.batch_size, self.transform = source, batch_size, transform
        self._streams: dict[tuple[int, int], PairStream] = {}
        EpochOrder(self.catalog.sizes, batch_size, seed=seed, shuffle_buffer=shuffle_buffer)  # one batch fits

    def stream(self, rank: int = 0, world_size: int = 1) -> PairStream:
        if (rank, world_size) not in self._streams:
            self._streams[rank, world_size] = PairStream(self.source, self.batch_size, self.transform, rank=rank,
                                                         world_size=world_size, catalog=self.catalog, **self.options)
        return self._streams[rank, world_size]

    def __call__(self, index: int, rank: int = 0, world_size: int = 1):
        return self.stream(rank, world_size).batch(index)


def pair_batches(source: DataSource, batch_size: int, transform: Callable, *, seed: int = 0, workers: int = 0,
                 shuffle_buffer: int = 0, text_transform: Callable | None = None) -> PairBatches:
    """-> ``batches(index, rank, world_size)`` for :class:`unclip_lite.train.Trainer` (a pure function
    of index): rank ``rank``'s micro-batch ``index`` of ``batch_size`` pairs."""
    return PairBatches(source, batch_size, transform, seed=seed, workers=workers, shuffle_buffer=shuffle_buffer,
                       text_transform=text_transform)
