"""Real data as a stream (unclip_lite.data.sharded) and open_clip's transforms (data.transforms).

References: the webdataset library's own reading of the shards, the set of pairs written,
open_clip's ``image_transform``, and ``workers=0`` for ``workers=2``.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from unclip_lite.data import sharded
from unclip_lite.data.errors import DataFilesMissingError
from unclip_lite.data.formats import index_shard, to_uint8, write_csv, write_image_folder, write_webdataset
from unclip_lite.data.shapes import make_batch
from unclip_lite.data.sharded import (DataSource, EpochOrder, PairStream, TarShards, open_source, pair_batches,
                                      seeded, shard_sizes, write_shard_sizes)
from unclip_lite.data.transforms import image_transform

N = 40
SHARD_SIZE = 12  # shards of 12, 12, 12 and 4: unequal on purpose
PATTERN = "shard-{000000..000003}.tar"


@pytest.fixture(scope="module")
def pairs():
    images, captions = make_batch(N, seed=3, resolution=24)
    return images, [f"{c} #{i}" for i, c in enumerate(captions)]  # unique, so a caption names its sample


@pytest.fixture(scope="module")
def data(tmp_path_factory, pairs):
    root = tmp_path_factory.mktemp("pairs")
    write_webdataset(root / "shards", *pairs, shard_size=SHARD_SIZE)
    write_csv(root / "csv", *pairs)
    write_image_folder(root / "folder", *pairs)
    return root


def shards(data) -> DataSource:
    return open_source(str(data / "shards" / PATTERN))


def pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(to_uint8(image).permute(1, 2, 0).numpy())


def test_the_format_is_read_from_the_path(data):
    cases = {str(data / "shards" / PATTERN): "webdataset", str(data / "shards"): "webdataset",
             str(data / "shards" / "shard-000003.tar"): "webdataset", str(data / "csv" / "train.csv"): "csv",
             str(data / "folder"): "folder"}
    for path, fmt in cases.items():
        assert open_source(path) == DataSource(path, fmt)
    assert open_source(str(data / "folder"), "folder").format == "folder"
    with pytest.raises(ValueError, match="data format must be one of"):
        open_source(str(data / "folder"), "parquet")


def test_the_shard_index_matches_the_webdataset_library(data, tmp_path):
    """Samples, keys and bytes as webdataset groups them; a sample without a caption is left out."""
    import tarfile

    import webdataset as wds

    path = data / "shards" / "shard-000000.tar"
    index = index_shard(path)
    reference = list(wds.WebDataset(str(path), shardshuffle=False, empty_check=False))
    assert [s.key for s in index] == [r["__key__"] for r in reference]
    raw = path.read_bytes()
    for sample, ref in zip(index, reference):
        assert raw[sample.image[0]:sum(sample.image)] == ref["png"]
        assert raw[sample.text[0]:sum(sample.text)] == ref["txt"]
    broken = tmp_path / "broken.tar"  # the first sample loses its caption
    with tarfile.open(path) as src, tarfile.open(broken, "w") as dst:
        for member in src.getmembers()[1:]:
            dst.addfile(member, src.extractfile(member))
    assert [s.key for s in index_shard(broken)] == [s.key for s in index[1:]]


def test_sizes_come_from_sizes_json_when_it_is_there(data, tmp_path, monkeypatch):
    paths = sharded.shard_paths(str(data / "shards" / PATTERN))
    assert shard_sizes(paths) == [12, 12, 12, 4]
    copy = tmp_path / "copy"
    write_webdataset(copy, torch.rand(5, 3, 8, 8), [str(i) for i in range(5)], shard_size=3)
    (written,) = write_shard_sizes(str(copy))
    assert json.loads(written.read_text()) == {"shard-000000.tar": 3, "shard-000001.tar": 2}
    monkeypatch.setattr(sharded, "index_shard", lambda path: pytest.fail("counted a listed shard"))
    assert shard_sizes(sharded.shard_paths(str(copy))) == [3, 2]
    monkeypatch.undo()
    written.write_text(json.dumps({"shard-000000.tar": 3, "shard-000001.tar": 9}))  # stale: says 9
    catalog = TarShards(sharded.shard_paths(str(copy)))
    with pytest.raises(ValueError, match="holds 2 samples, but sizes.json says 9"):
        catalog.read(1, [0])


def epoch_captions(batches, world: int, epoch: int = 0) -> list[str]:
    seen = []
    for rank in range(world):
        per_epoch = batches.stream(rank, world).order.batches_per_epoch
        for index in range(epoch * per_epoch, (epoch + 1) * per_epoch):
            seen += batches(index, rank, world)[1]
    return seen


@pytest.mark.parametrize("world, batch, shuffle, workers", [(1, 5, 0, 0), (3, 4, 8, 2), (2, 3, 100, 0)])
def test_an_epoch_reads_every_sample_once_across_ranks_and_workers(data, pairs, world, batch, shuffle, workers):
    transform = image_transform(16, train=True)
    batches = pair_batches(shards(data), batch, transform, seed=1, workers=workers, shuffle_buffer=shuffle)
    order = batches.stream(0, world).order
    used = world * batch * order.batches_per_epoch
    assert order.dropped_per_epoch == N - used < world * batch  # the documented remainder
    first = epoch_captions(batches, world)
    assert len(first) == len(set(first)) == used and set(first) <= set(pairs[1])
    second = epoch_captions(batches, world, epoch=1)
    assert len(set(second)) == used and second != first  # the next epoch is reshuffled
    other_seed = pair_batches(shards(data), batch, transform, seed=2, shuffle_buffer=shuffle)
    assert epoch_captions(other_seed, world) != first


def test_shards_are_read_front_to_back_in_contiguous_spans():
    """Without a shuffle buffer each rank reads a contiguous span of the epoch's shard order."""
    order = EpochOrder(np.array([12, 12, 12, 4]), batch_size=4, rank=1, world_size=2, seed=0)
    refs = [r for i in range(order.batches_per_epoch) for r in order.locate(i)]
    assert [r.position for r in refs] == list(range(20, 40))
    units = [r.unit for r in refs]
    for unit in set(units):  # inside each shard, the samples come in order
        offsets = [r.offset for r in refs if r.unit == unit]
        assert offsets == sorted(offsets) and np.all(np.diff(offsets) == 1)


def test_workers_prefetch_the_same_batches(data):
    transform = image_transform(16, train=True)
    plain = PairStream(shards(data), 4, transform, seed=5, rank=1, world_size=2, shuffle_buffer=6)
    prefetched = PairStream(shards(data), 4, transform, seed=5, rank=1, world_size=2, workers=2, shuffle_buffer=6)
    for index in [0, 1, 2, 3, 7, 8, 2]:  # 7: a jump (a resume) restarts the workers there
        a, b = plain.batch(index), prefetched.batch(index)
        assert torch.equal(a[0], b[0]) and a[1] == b[1]
    prefetched.close()


def test_every_format_gives_the_same_pairs(data, pairs):
    """webdataset, CSV and image folder: the same images behind the same captions, through one stream."""
    transform = image_transform(16, train=False)
    expected = {c: transform(pil(im)) for im, c in zip(*pairs)}  # the written pairs, transformed directly
    for path in (data / "shards" / PATTERN, data / "csv" / "train.csv", data / "folder"):
        stream = PairStream(open_source(str(path)), 8, transform, seed=0)
        assert stream.order.batches_per_epoch == N // 8
        seen = set()
        for index in range(N // 8):
            images, captions = stream.batch(index)
            for image, caption in zip(images, captions):
                assert torch.equal(image, expected[caption])
            seen |= set(captions)
        assert seen == set(pairs[1])


def test_augmentation_is_seeded_per_sample(data):
    """A sample's random crop depends on (seed, epoch, position), not on which batch or process made it."""
    transform = image_transform(16, train=True)
    stream = PairStream(shards(data), 4, transform, seed=0)
    images, _ = stream.batch(2)
    ref = stream.locate(2)[0]
    (raw, _), = stream.catalog.read(ref.unit, [ref.offset])
    assert torch.equal(images[0], seeded(transform, raw, stream._sample_seed(ref)))
    assert any(not torch.equal(images[0], seeded(transform, raw, seed)) for seed in range(5))  # it is random


def test_bad_sources_are_clear_errors(data, tmp_path):
    with pytest.raises(DataFilesMissingError, match="4 of 4 webdataset shards named by .* are missing"):
        open_source(str(tmp_path / "none-{000..003}.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFilesMissingError, match="folder without .tar shards or images"):
        open_source(str(tmp_path / "empty"))
    with pytest.raises(DataFilesMissingError, match="no data at"):
        open_source(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="no data path given"):
        open_source("")
    bad_csv = tmp_path / "bad.csv"
    with open(bad_csv, "w", newline="") as f:
        csv.writer(f, delimiter="\t").writerows([["filepath", "caption"], ["a.png", "x"]])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['title'\]"):
        open_source(str(bad_csv))
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 64)
    with pytest.raises(ValueError, match="not a readable tar shard"):
        pair_batches(open_source(str(tmp_path / "junk.tar")), 2, image_transform(8, train=False))
    with pytest.raises(ValueError, match="cannot fill one micro-batch of 20 on each of 3"):
        PairStream(shards(data), 20, image_transform(8, train=False), world_size=3, rank=0)


# --------------------------------------------------------------------------------------
# open_clip's transforms
# --------------------------------------------------------------------------------------
def test_transforms_equal_open_clips(pairs):
    """Eval: exactly open_clip's; train: the same crop under the same torch seed."""
    import open_clip

    gen = torch.Generator().manual_seed(0)
    photos = [Image.fromarray((torch.rand(h, w, 3, generator=gen) * 255).byte().numpy()) for h, w in
              ((50, 37), (31, 64), (40, 40))]
    photos += [photos[0].convert("RGBA"), photos[1].convert("L"), pil(pairs[0][0])]
    for size in (16, 32):
        ours, theirs = image_transform(size, train=False), open_clip.image_transform(size, is_train=False)
        for photo in photos:
            assert torch.equal(ours(photo), theirs(photo))
        ours, theirs = image_transform(size, train=True), open_clip.image_transform(size, is_train=True)
        for seed, photo in enumerate(photos):
            torch.manual_seed(seed)
            reference = theirs(photo)
            assert torch.equal(seeded(ours, photo, seed), reference)
            assert reference.shape == (3, size, size)
    with pytest.raises(ValueError, match="crop_scale"):
        image_transform(16, train=True, crop_scale=(0.5, 1.5))
