"""The Shapes world: determinism, captions ↔ labels, held-out split, rendering geometry."""
import math

import pytest
import torch

from unclip_lite.data import shapes as S


def test_palette_and_vocabulary_sizes():
    assert len(S.PALETTE) >= 8 and len(S.SHAPES) >= 5
    assert all(len(rgb) == 3 and all(0 <= v <= 255 for v in rgb) for rgb in S.PALETTE.values())
    # One held-out pair per colour, every shape held out at least once.
    assert len(S.HELD_OUT_PAIRS) == len(S.COLOURS)
    assert {s for _, s in S.HELD_OUT_PAIRS} == set(S.SHAPES)


def test_same_seed_same_pixels():
    a, ca = S.make_batch(64, seed=7, resolution=32)
    b, cb = S.make_batch(64, seed=7, resolution=32)
    c, _ = S.make_batch(64, seed=8, resolution=32)
    assert torch.equal(a, b) and ca == cb
    assert not torch.equal(a, c)
    stream = S.ShapesStream(batch_size=16, seed=3, two_object_fraction=0.25)
    first = [x for _, x in zip(range(3), stream)]
    again = [stream.batch(i) for i in range(3)]
    for (i1, t1, _), (i2, t2, _) in zip(first, again):
        assert torch.equal(i1, i2) and t1 == t2
    resumed = next(iter(S.ShapesStream(batch_size=16, seed=3, two_object_fraction=0.25, start=2)))
    assert torch.equal(resumed[0], first[2][0])


def test_training_stream_never_yields_held_out_pairs():
    gen = torch.Generator().manual_seed(0)
    seen = torch.zeros_like(S.HELD_OUT_TABLE, dtype=torch.long)
    total = 0
    for n_objects in (1, 2):
        for _ in range(10):
            scenes = S.sample_scenes(6_000, gen, n_objects=n_objects, split="train")
            counts = torch.zeros(len(S.COLOURS) * len(S.SHAPES), dtype=torch.long)
            counts.index_add_(0, (scenes.colour * len(S.SHAPES) + scenes.shape).flatten(),
                              torch.ones(scenes.colour.numel(), dtype=torch.long))
            seen += counts.view_as(seen)
            total += len(scenes)
    assert total >= 100_000
    assert seen[S.HELD_OUT_TABLE].sum() == 0
    assert (seen[~S.HELD_OUT_TABLE] > 0).all()  # every allowed pair does appear
    held = S.sample_scenes(2_000, gen, split="heldout")
    assert S.HELD_OUT_TABLE[held.colour, held.shape].all()


@pytest.mark.parametrize("n_objects", [1, 2])
def test_every_template_caption_matches_labels(n_objects):
    scenes = S.sample_scenes(200, 0, n_objects=n_objects, split="all")
    labels = scenes.labels()
    templates = S.SINGLE_TEMPLATES if n_objects == 1 else S.PAIR_TEMPLATES
    for index, template in enumerate(templates):
        for label, text in zip(labels, S.captions(scenes, template=index)):
            parsed = S.parse_caption(text)
            assert len(parsed["objects"]) == n_objects, text
            for got, want in zip(parsed["objects"], label["objects"]):
                assert got["colour"] == want["colour"] and got["shape"] == want["shape"], text
                if "{size}" in template:
                    assert got["size"] == want["size"], text
                else:
                    assert "size" not in got, text
            if n_objects == 2:
                assert parsed["relation"] == label["relation"], text
            elif "{position}" in template:
                assert parsed["position"] == label["position"], text
    assert "an orange" in S.captions(S.make_scenes("orange", "star"), template=0)[0]


def test_two_object_scenes_respect_their_relation():
    scenes = S.sample_scenes(500, 1, n_objects=2, split="all")
    for b, label in enumerate(scenes.labels()):
        dx = scenes.x[b, 0] - scenes.x[b, 1]
        dy = scenes.y[b, 0] - scenes.y[b, 1]
        expect = {"to the left of": dx < -0.3, "to the right of": dx > 0.3,
                  "above": dy < -0.3, "below": dy > 0.3}[label["relation"]]
        assert expect, (label, dx, dy)
        # The objects never touch: the gap between centres exceeds both radii.
        assert math.hypot(dx, dy) > scenes.radius[b].sum() + 0.05
    images = S.render(scenes, 32)
    assert images.shape == (500, 3, 32, 32)


def test_rendered_area_matches_geometry():
    """The circle's anti-aliased coverage integrates to πr² (a closed-form reference)."""
    scenes = S.make_scenes("red", "circle", size="large")
    r = scenes.radius.item()
    for resolution in (32, 64, 128):
        image = S.render(scenes, resolution, background=(0, 0, 0))
        red = torch.tensor(S.PALETTE["red"][0] / 255)
        coverage = image[0, 0] / red
        area = coverage.sum().item() / resolution**2
        assert area == pytest.approx(math.pi * r * r, rel=0.02)
    # Every shape is drawn with a sensible, comparable area and stays inside the frame.
    scenes = S.make_scenes("white" if "white" in S.PALETTE else "yellow", list(S.SHAPES))
    image = S.render(scenes, 64, background=(0, 0, 0))
    areas = (image.sum(1) > 0.5).float().mean((1, 2))
    assert ((areas > 0.08) & (areas < 0.25)).all(), areas
    assert image[:, :, 0].sum() == 0 and image[:, :, -1].sum() == 0  # top and bottom rows empty


def test_antialiasing_gives_partial_edge_pixels():
    scenes = S.make_scenes("blue", "star")
    soft = S.render(scenes, 32)
    hard = S.render(scenes, 32, antialias=False)
    assert len(torch.unique(soft[0, 2])) > 10
    assert len(torch.unique(hard[0, 2])) == 2


def test_eval_sets_are_fixed_and_respect_splits():
    a, sa = S.eval_set("heldout", n=50)
    b, sb = S.eval_set("heldout", n=50)
    assert torch.equal(a, b)
    assert S.HELD_OUT_TABLE[sa.colour, sa.shape].all()
    _, st = S.eval_set("train", n=200)
    assert not S.HELD_OUT_TABLE[st.colour, st.shape].any()


@pytest.mark.parametrize("call, message", [
    (lambda: S.make_scenes("mauve", "circle"), "unknown colour 'mauve'"),
    (lambda: S.make_scenes("red", "hexagon"), "unknown shape 'hexagon'"),
    (lambda: S.make_scenes("red", "circle", size="huge"), "unknown size"),
    (lambda: S.make_scenes("red", "circle", position="far away"), "unknown position"),
    (lambda: S.sample_scenes(4, 0, split="test"), "unknown split"),
    (lambda: S.sample_scenes(4, 0, n_objects=3), "n_objects must be 1 or 2"),
    (lambda: S.render(S.make_scenes("red", "circle"), resolution=2), "resolution"),
    (lambda: S.ShapesStream(batch_size=0), "batch_size must be positive"),
])
def test_bad_input_is_explained(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_non_positive_size_is_refused():
    scenes = S.make_scenes("red", "circle")
    scenes.radius = torch.zeros_like(scenes.radius)
    with pytest.raises(ValueError, match="radius must be positive"):
        S.render(scenes)
    scenes.radius = -torch.ones_like(scenes.radius)
    with pytest.raises(ValueError, match="radius must be positive"):
        S.render(scenes)


def test_recolouring_never_shows_a_held_out_pair():
    """Jittered colours stay nearest their own palette colour; unnamed (shape-only) objects
    are grey or a random colour whose nearest palette colour is no held-out partner."""
    scenes = S.sample_scenes(20_000, 3, split="train")
    out = S.recolour(scenes, 4, hue_jitter=10, sv_jitter=0.15, grey_fraction=0.4, any_hue=0.5)
    named = out.colour[:, 0] >= 0
    assert torch.equal(S.nearest_palette(out.rgb[named, 0]), out.colour[named, 0])
    unnamed = ~named
    assert 0.35 < unnamed.float().mean() < 0.45
    rgb = out.rgb[unnamed, 0]
    is_grey = (rgb.max(-1).values - rgb.min(-1).values) < 1e-6
    assert 0.2 < (~is_grey).float().mean() < 0.5  # about half vivid, minus the refused ones
    nearest = S.nearest_palette(rgb[~is_grey])
    assert not S.HELD_OUT_TABLE[nearest, out.shape[unnamed, 0][~is_grey]].any()
    for text in S.captions(out[:200], 0):
        parsed = S.parse_caption(text)["objects"][0]
        assert "shape" in parsed


def test_detailed_fraction_names_size_and_position_without_changing_the_default_stream():
    plain = S.ShapesStream(64, 32, seed=3, two_object_fraction=0.25)
    zero = S.ShapesStream(64, 32, seed=3, two_object_fraction=0.25, detailed_fraction=0.0)
    assert plain.batch(5)[1] == zero.batch(5)[1] and torch.equal(plain.batch(5)[0], zero.batch(5)[0])
    full = S.ShapesStream(64, 32, seed=3, two_object_fraction=0.25, detailed_fraction=1.0)
    images, texts, (single, pairs) = full.batch(5)
    assert torch.equal(images, plain.batch(5)[0])  # the same scenes, only the words differ
    for text, label in zip(texts[:len(single)], single.labels()):
        parsed = S.parse_caption(text)
        assert parsed["position"] == label["position"] and parsed["objects"][0]["size"] == label["objects"][0]["size"]
    assert texts[len(single):] == plain.batch(5)[1][len(single):]  # two-object captions untouched
    half = S.ShapesStream(400, 32, seed=3, detailed_fraction=0.5).batch(0)[1]
    named = sum(" in the " in t and ("small" in t or "large" in t) for t in half) / len(half)
    assert 0.4 < named < 0.7  # half by the knob, plus the random templates that name both
    with pytest.raises(ValueError, match="detailed_fraction"):
        S.ShapesStream(8, 32, detailed_fraction=1.5)
