"""Helpers the chapters share, now in the package: PNG rows for sliders, labelled figure rows,
box masks around objects, and "does the judge read this image as this caption"."""
import io

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from unclip_lite.data import shapes
from unclip_lite.glide.command import hole_mask
from unclip_lite.glide.inpaint import box_mask, object_box
from unclip_lite.judge import load_judge, reads_as
from unclip_lite.viz import png_bytes, show_rows

matplotlib.use("Agg")


def test_png_bytes_is_a_zoomed_row_with_the_same_pixels():
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    picture = Image.open(io.BytesIO(png_bytes(images, zoom=2)))
    assert picture.size == (2 * (3 * 10 + 2), 2 * 12)  # 2 px padding around and between tiles
    first = torch.from_numpy(np.array(picture))[4:20:2, 4:20:2]  # tile 0, every other pixel
    assert torch.equal(first.permute(2, 0, 1), (images[0] * 255).round().to(torch.long))


def test_show_rows_lays_out_rows_and_columns():
    fig = show_rows([torch.rand(2, 3, 8, 8), [torch.rand(3, 8, 8)] * 2], ["a", "b"],
                    ["a red star", "a caption long enough to be wrapped over two lines"], title="t")
    assert len(fig.axes) == 4 and "\n" in fig.axes[1].get_title()


def test_box_mask_erases_exactly_the_box_and_refuses_boxes_outside():
    mask = box_mask((2, 3, 6, 5), size=8, n=2)
    assert mask.shape == (2, 1, 8, 8) and mask.sum() == 2 * (64 - 4 * 2)
    assert (mask[:, :, 3:5, 2:6] == 0).all()
    assert torch.equal(hole_mask("2,3,6,5", 8, 2), mask)  # the CLI's --hole is the same mask
    for bad in ((0, 0, 9, 4), (4, 0, 4, 4), (-1, 0, 2, 2)):
        with pytest.raises(ValueError, match="must lie inside"):
            box_mask(bad, size=8)


def test_object_box_covers_the_rendered_object():
    scenes = shapes.make_scenes("red", "square", position="top left")
    box = object_box(scenes, 0, 32, pad=1)
    image = shapes.render(scenes, 32)
    background = torch.tensor(shapes.BACKGROUND).view(1, 3, 1, 1) / 255
    mask = box_mask(box, 32)
    outside = image * mask + background * (1 - mask)  # the image with the box painted as background
    assert ((outside - background).abs().amax(1) < 0.05).all()  # nothing of the object outside the box
    assert (image - background).abs().amax(1)[0][mask[0, 0] == 0].max() > 0.3  # and the object is inside


def test_reads_as_accepts_the_truth_in_either_wording_and_rejects_wrong_captions():
    judge = load_judge()
    one = shapes.render(shapes.make_scenes(["red", "blue"], ["star", "circle"]), 32)
    assert reads_as(judge, one[:1], "a red star").all() and not reads_as(judge, one[:1], "a blue star").any()
    pair_scenes = shapes.sample_scenes(8, torch.Generator().manual_seed(3), n_objects=2, split="all")
    pairs = shapes.render(pair_scenes, 32)
    for image, caption in zip(pairs, shapes.captions(pair_scenes, 3)):
        if "large" in caption or "small" in caption or " in the " in caption:
            continue  # a size or position word: reads_as checks colours, shapes and the relation
        assert reads_as(judge, image[None], caption).all(), caption
    c = [shapes.COLOURS[i] for i in pair_scenes.colour[0].tolist()]
    s = [shapes.SHAPES[i] for i in pair_scenes.shape[0].tolist()]
    rel = shapes.RELATION_NAMES[int(pair_scenes.relation[0])]
    opposite = {"to the left of": "to the right of", "to the right of": "to the left of",
                "above": "below", "below": "above"}[rel]
    assert reads_as(judge, pairs[:1], f"a {c[0]} {s[0]} {rel} a {c[1]} {s[1]}").all()
    assert reads_as(judge, pairs[:1], f"a {c[1]} {s[1]} {opposite} a {c[0]} {s[0]}").all()  # the same scene
    assert not reads_as(judge, pairs[:1], f"a {c[1]} {s[1]} {rel} a {c[0]} {s[0]}").any()  # objects swapped
    with pytest.raises(ValueError, match="a colour and a shape"):
        reads_as(judge, pairs[:1], "a star")
