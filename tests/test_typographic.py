"""The typographic world and attack (unclip_lite.data.shapes.typographic, unclip_lite.clip.typographic)."""

import pytest
import torch

from unclip_lite.data import shapes
from unclip_lite.data.shapes.typographic import word_ink


def test_a_label_is_a_white_sticker_with_dark_ink_at_the_top_or_bottom_edge():
    images = shapes.render(shapes.make_scenes(["red"] * 8, "star"), 32)
    out = shapes.print_labels(images, ["triangle"] * 8, generator=0)
    changed = (out != images).any(1)  # [B, R, R]
    for b in range(8):
        rows = changed[b].any(1).nonzero().squeeze(1)
        h = rows.max() - rows.min() + 1
        assert h == 7 and (rows.min() == 0 or rows.max() == 31)  # 0.22 × 32 px at one edge
        sticker = out[b][:, rows.min():rows.max() + 1][:, :, changed[b].any(0)]
        assert sticker.max() == 1.0 and sticker.min() < 0.2  # white paper, dark ink
    assert torch.equal(shapes.print_labels(images, [None] * 8, 0), images)
    assert torch.equal(out, shapes.print_labels(images, ["triangle"] * 8, generator=0))  # seeded


def test_words_print_differently_and_longer_words_print_wider():
    inks = {w: word_ink(w, 5, 28) for w in shapes.SHAPES}
    assert inks["triangle"].shape[1] > inks["star"].shape[1]
    assert all(0 <= ink.min() and ink.max() <= 1 for ink in inks.values())
    assert not torch.equal(inks["circle"], inks["square"][:, :inks["circle"].shape[1]])


@pytest.mark.parametrize("images, words, match", [
    (torch.rand(2, 3, 32, 32), ["star"], "1 words for 2 images"),
    (torch.rand(2, 32, 32), ["star", "star"], r"expected images \[B, 3, R, R\]"),
    (torch.rand(1, 3, 32, 32), [""], "printable word"),
])
def test_print_labels_refuses_bad_input(images, words, match):
    with pytest.raises(ValueError, match=match):
        shapes.print_labels(images, words)


def test_wrong_labels_never_tell_the_truth_and_cover_the_other_shapes():
    truth = torch.arange(5).repeat(200)
    words, printed = shapes.wrong_labels(truth, generator=1)
    assert (printed != truth).all() and words == [shapes.SHAPES[i] for i in printed.tolist()]
    assert len({(t, p) for t, p in zip(truth.tolist(), printed.tolist())}) == 20  # every (true, printed) pair


def test_the_labelled_stream_labels_only_its_fraction_and_keeps_the_rest_of_the_stream():
    plain = shapes.ShapesStream(64, 32, seed=3)
    labelled = shapes.ShapesStream(64, 32, seed=3, label_fraction=0.5)
    (a, ta, _), (b, tb, _) = plain.batch(0), labelled.batch(0)
    assert ta == tb  # same scenes and captions
    share = (a != b).flatten(1).any(1).float().mean().item()
    assert 0.3 < share < 0.7
    with pytest.raises(ValueError, match="label_fraction"):
        shapes.ShapesStream(8, 32, label_fraction=1.5)


def test_zero_shot_shapes_agrees_with_a_naive_loop_and_the_attack_reports_shares():
    from unclip_lite.clip.bundle import load_clip
    from unclip_lite.clip.typographic import typographic_attack, zero_shot_shapes

    clip = load_clip("clip-shapes-tiny")
    images, scenes = shapes.eval_set("train", 12, seed=5)
    read = zero_shot_shapes(clip, images)
    z = clip.encode_images(images)
    for b in range(12):  # naive: the shape whose summed softmax over the 8 colours is largest
        scores = torch.stack([(z[b] @ clip.encode_texts([shapes.zero_shot_prompt(c, s) for c in shapes.COLOURS]).T)
                              for s in shapes.SHAPES])  # [5, 8]
        assert read[b] == scores.logsumexp(1).argmax()
    m = typographic_attack(clip, n=40)
    assert set(m) == {"typo_sign_shape", "typo_clean_shape", "typo_honest_shape", "typo_attack_pixels", "typo_attack_text"}
    assert m["typo_clean_shape"] > 0.9 and m["typo_attack_pixels"] + m["typo_attack_text"] <= 1.0


@pytest.mark.slow
def test_the_reader_recipe_trains_the_image_tower_only(tmp_path):
    """Frozen text tower and temperature: the embedding space stays the decoder CLIP's."""
    from unclip_lite.clip.bundle import load_clip
    from unclip_lite.clip.recipes import reader_recipe, train_shapes_clip
    from unclip_lite.utils import override_fields

    recipe = reader_recipe()
    override_fields(recipe, ["train.steps=2", "data.batch_size=8", "train.progress=false", "train.precision=fp32"])
    bundle, _ = train_shapes_clip(recipe, out_dir=tmp_path / "run")
    start = load_clip(recipe.init_from).model.state_dict()
    after = bundle.model.state_dict()
    assert all(torch.equal(after[k], start[k]) for k in start if k.startswith("text.") or k == "logit_scale")
    assert any(not torch.equal(after[k], start[k]) for k in start if k.startswith("visual."))
    assert bundle.extra["recipe"]["init_from"] == "clip-shapes-tiny-pairs" and bundle.extra["recipe"]["freeze_text"]


@pytest.mark.slow
def test_the_shipped_typographic_clips_are_recorded_and_the_sign_reader_reads():
    """Issue 14: the experiment's CLIPs are shipped with their recipes; a CLIP trained with signs
    reads a sign alone, one trained without labels does not (chance 0.2), recomputed here."""
    import json

    from unclip_lite.checkpoints import REGISTRY_DIR, read_manifest
    from unclip_lite.clip.bundle import load_clip
    from unclip_lite.clip.typographic import typographic_attack

    record = json.loads((REGISTRY_DIR.parent / "experiments" / "typographic.json").read_text())
    names = [run["checkpoint"] for run in record["runs"]]
    assert {"clip-shapes-tiny", "clip-shapes-tiny-typo50", "clip-shapes-tiny-typo20-signs",
            "clip-shapes-tiny-typo50-signs", "clip-shapes-tiny-pairs-typo50"} <= set(names)
    for run in record["runs"]:
        data = read_manifest(run["checkpoint"])["config"]["extra"]["recipe"]["data"]
        assert data.get("label_fraction", 0.0) == run["label_fraction"]
    reader = typographic_attack(load_clip("clip-shapes-tiny-typo50-signs"), n=100)
    blind = typographic_attack(load_clip("clip-shapes-tiny"), n=100)
    assert reader["typo_sign_shape"] >= 0.9 and blind["typo_sign_shape"] <= 0.4, (reader, blind)
    assert reader["typo_clean_shape"] >= 0.95  # learning to read cost it nothing on plain renders
