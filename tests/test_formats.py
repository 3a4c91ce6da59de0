"""Bring-your-own-data formats: exact round trips, open_clip's layout, clear errors."""
from __future__ import annotations

import csv
import io
import tarfile

import pytest
import torch
from PIL import Image, features

from unclip_lite.data.errors import DataFilesMissingError
from unclip_lite.data.formats import (
    CsvDataset,
    ImageFolderDataset,
    decode_image,
    from_uint8,
    read_webdataset,
    to_uint8,
    write_csv,
    write_image_folder,
    write_webdataset,
)
from unclip_lite.data.shapes import make_batch

# Captions that break naive writers: unicode, a tab (the CSV separator), a newline, quotes.
AWKWARD = ["un cœur rouge ❤️ 日本", "tab\tinside", "two\nlines", 'say "cheese"', "commas, and 'quotes'"]


@pytest.fixture(scope="module")
def batch():
    images, captions = make_batch(10, seed=0, resolution=16)
    captions = list(captions[: 10 - len(AWKWARD)]) + AWKWARD
    return images, captions


def expected(images: torch.Tensor) -> torch.Tensor:
    """What a lossless write/read gives back: the uint8-quantised image."""
    return from_uint8(to_uint8(images))


def assert_same(pairs, images, captions):
    got_images = torch.stack([im for im, _ in pairs])
    assert torch.equal(got_images, expected(images))
    assert [c for _, c in pairs] == list(captions)


def test_uint8_round_trip():
    x = torch.rand(2, 3, 5, 7)
    q = to_uint8(x)
    assert q.dtype == torch.uint8
    assert torch.equal(to_uint8(from_uint8(q)), q)  # exact on uint8 levels
    assert to_uint8(torch.tensor([0.999 / 255, 1.2, -0.1])).tolist() == [1, 255, 0]  # rounds, clamps
    assert (from_uint8(q) - x).abs().max() <= 0.5 / 255 + 1e-6


def test_csv_round_trip(tmp_path, batch, monkeypatch):
    images, captions = batch
    csv_path = write_csv(tmp_path / "data", images, captions)
    assert csv_path == tmp_path / "data" / "train.csv"
    header = csv_path.read_text(encoding="utf-8").splitlines()[0]
    assert header == "filepath\ttitle"  # open_clip's defaults
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the CSV, not the cwd
    ds = CsvDataset(csv_path)
    assert len(ds) == len(captions)
    assert_same([ds[i] for i in range(len(ds))], images, captions)
    assert ds[0][0].shape == (3, 16, 16)
    assert CsvDataset(csv_path, resolution=8)[0][0].shape == (3, 8, 8)


def test_csv_tab_policy_is_quoting(tmp_path):
    """Tabs in captions are quoted, not rejected: rows still split into exactly two fields."""
    csv_path = write_csv(tmp_path, torch.zeros(1, 3, 4, 4), ["a\tb"])
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows == [["filepath", "title"], ["images/000000.png", "a\tb"]]
    assert '"a\tb"' in csv_path.read_text(encoding="utf-8")


def test_csv_absolute_paths(tmp_path):
    image = torch.rand(3, 6, 4)
    png = tmp_path / "elsewhere" / "x.png"
    png.parent.mkdir()
    write_image_folder(tmp_path / "elsewhere", [image], ["x"])  # gives 000000.png
    csv_path = tmp_path / "sub" / "abs.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(f"filepath\ttitle\n{tmp_path / 'elsewhere' / '000000.png'}\tan image\n", encoding="utf-8")
    got, text = CsvDataset(csv_path)[0]
    assert torch.equal(got, expected(image)) and text == "an image"


def test_csv_errors(tmp_path):
    with pytest.raises(DataFilesMissingError, match="does not exist"):
        CsvDataset(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("path\tcaption\nx.png\thello\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\['filepath', 'title'\].*\['path', 'caption'\]"):
        CsvDataset(bad)
    missing = tmp_path / "missing.csv"
    missing.write_text("filepath\ttitle\nimages/ghost.png\thello\n", encoding="utf-8")
    with pytest.raises(DataFilesMissingError, match="ghost.png"):
        CsvDataset(missing)
    with pytest.raises(ValueError, match="3 images but 2 captions"):
        write_csv(tmp_path, torch.zeros(3, 3, 4, 4), ["a", "b"])


def test_webdataset_round_trip(tmp_path, batch):
    images, captions = batch
    shards = write_webdataset(tmp_path, images, captions, shard_size=4)
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    with tarfile.open(shards[0]) as tar:
        assert tar.getnames()[:4] == ["000000.png", "000000.txt", "000001.png", "000001.txt"]
    assert_same(list(read_webdataset(shards)), images, captions)  # a list of shards
    assert_same(list(read_webdataset(tmp_path)), images, captions)  # a folder
    assert_same(list(read_webdataset(str(tmp_path / "shard-{000000..000002}.tar"))), images, captions)
    # Same data, same bytes: shards are reproducible.
    again = write_webdataset(tmp_path / "again", images, captions, shard_size=4)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in shards]


def test_webdataset_reads_jpg(tmp_path):
    image = make_batch(1, seed=1, resolution=16)[0][0]  # smooth, so JPEG keeps it close
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image).permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=95)
    with tarfile.open(tmp_path / "photos.tar", "w") as tar:
        for name, data in [("a.jpg", buffer.getvalue()), ("a.txt", "a photo".encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    [(got, text)] = list(read_webdataset(tmp_path / "photos.tar"))
    assert got.shape == (3, 16, 16) and text == "a photo"
    assert (got - image).abs().mean() < 0.05  # JPEG is lossy; close, not equal


def test_webdataset_missing_shards(tmp_path):
    with pytest.raises(DataFilesMissingError, match="no .tar shards"):
        read_webdataset(tmp_path)
    with pytest.raises(DataFilesMissingError, match="ghost.tar"):
        read_webdataset([tmp_path / "ghost.tar"])


def test_image_folder_round_trip(tmp_path, batch):
    images, captions = batch
    folder = write_image_folder(tmp_path, images, captions)
    assert (folder / "000000.png").is_file() and (folder / "000000.txt").is_file()
    ds = ImageFolderDataset(folder)
    assert_same([ds[i] for i in range(len(ds))], images, captions)


def test_image_folder_list_input_any_size(tmp_path):
    images = [torch.rand(3, 5, 9), torch.rand(3, 12, 4)]  # a list may mix sizes
    ds = ImageFolderDataset(write_image_folder(tmp_path, images, ["wide", "tall"]))
    for (got, text), image, want in zip([ds[0], ds[1]], images, ["wide", "tall"]):
        assert torch.equal(got, expected(image)) and text == want


def test_image_folder_other_extensions(tmp_path):
    image = torch.rand(3, 8, 8)
    array = to_uint8(image).permute(1, 2, 0).numpy()
    Image.fromarray(array).save(tmp_path / "photo.JPG", format="JPEG")
    (tmp_path / "photo.txt").write_text("a photo\n", encoding="utf-8")  # trailing newline stripped
    formats = ["photo.JPG"]
    if features.check("webp"):
        Image.fromarray(array).save(tmp_path / "web.webp", format="WEBP", lossless=True)
        (tmp_path / "web.txt").write_text("a webp", encoding="utf-8")
        formats.append("web.webp")
    ds = ImageFolderDataset(tmp_path)
    assert sorted(p.name for p in ds.paths) == sorted(formats)
    by_name = {p.name: ds[i] for i, p in enumerate(ds.paths)}
    assert by_name["photo.JPG"][1] == "a photo"
    if "web.webp" in by_name:
        assert torch.equal(by_name["web.webp"][0], expected(image))


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataFilesMissingError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    with pytest.raises(DataFilesMissingError, match="no images"):
        ImageFolderDataset(tmp_path)
    write_image_folder(tmp_path, torch.zeros(3, 3, 4, 4), ["a", "b", "c"])
    (tmp_path / "000001.txt").unlink()
    with pytest.raises(DataFilesMissingError, match="1 of 3 images.*000001.png"):
        ImageFolderDataset(tmp_path)


def test_decode_composites_transparency_on_white(tmp_path):
    rgba = Image.new("RGBA", (2, 2), (0, 0, 0, 0))  # fully transparent black
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    assert torch.equal(decode_image(buffer.getvalue()), torch.ones(3, 2, 2))
