"""The shipped reference checkpoints load, match their manifests and meet their bars.

`unclip-lite eval NAME` recomputes the metrics; these tests hold the acceptance bars.
"""
import json

import pytest

from unclip_lite.checkpoints import REGISTRY_DIR, list_checkpoints, load_checkpoint, read_manifest
from unclip_lite.cli import main as cli

EXPECTED = ["clip-emoji-tiny", "clip-shapes-tiny", "glide-shapes-tiny", "judge-shapes"]


def test_expected_checkpoints_are_shipped_with_manifests():
    assert set(EXPECTED) <= set(list_checkpoints())
    for name in EXPECTED:
        manifest = read_manifest(name)
        assert manifest["command"].startswith(("unclip-lite train", "python -m unclip_lite.judge"))
        assert manifest["sha256"] and manifest["hardware"] and manifest["train_seconds"] > 0
        assert manifest["metrics"]
        assert (REGISTRY_DIR / f"{name}.safetensors").stat().st_size <= 10 * 2**20
        load_checkpoint(name)  # verifies the sha256


def test_clip_shapes_tiny_meets_its_bars(capsys):
    manifest = read_manifest("clip-shapes-tiny")
    assert manifest["train_seconds"] <= 15 * 60, "must train in at most 15 minutes on the 2-core CPU"
    assert cli(["eval", "clip-shapes-tiny", "--n", "1000"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["heldout_joint"] >= 0.95
    assert metrics["heldout_colour"] >= 0.98 and metrics["heldout_shape"] >= 0.98 or \
        pytest.fail(f"attribute accuracy below 0.98: {metrics}")
    assert metrics["seen_joint"] >= 0.98
    assert 0 < metrics["heldout_image_to_text_R@1"] <= 1
    # The manifest's numbers are the ones eval recomputes (up to an argmax flipped by the
    # float rounding of another thread count: 3 images in 1,000).
    assert metrics["heldout_joint"] == pytest.approx(manifest["metrics"]["heldout_joint"], abs=0.003)


def test_clip_emoji_tiny_beats_chance(capsys):
    assert cli(["eval", "clip-emoji-tiny"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["n_test"] >= 350 and m["n_subgroups"] >= 90
    assert m["subgroup_zeroshot_top1"] > 2 * m["subgroup_chance_top1"]
    assert m["subgroup_zeroshot_top5"] > m["subgroup_chance_top5"]
    assert m["name_image_to_text_R@5"] > m["name_chance_R@5"]


def test_glide_shapes_tiny_meets_its_bars():
    """The bars of the GLIDE issue, on the full evaluation recorded in the manifest by
    ``unclip-lite eval glide-shapes-tiny --record`` (about half an hour on the 2-core CPU:
    DDPM-1000 is the slow part), plus a live check that the shipped weights draw it."""
    import torch

    from unclip_lite.glide.bundle import load_glide
    from unclip_lite.glide.evaluate import judge_single, single_object_prompts
    from unclip_lite.judge import load_judge

    manifest = read_manifest("glide-shapes-tiny")
    m = manifest["metrics"]
    assert manifest["eval_command"].startswith("unclip-lite eval glide-shapes-tiny")
    assert m["per_pair"] >= 4 and m["steps"] == 50
    assert m["best_all_colour"] >= 0.95, m
    assert m["best_all_shape"] >= 0.90, m
    for scale in (1, 2, 3, 5):  # accuracy vs guidance scale, seen and held-out pairs apart
        for key in ("seen_colour", "seen_shape", "heldout_colour", "heldout_shape"):
            assert 0.0 <= m[f"g{scale}_{key}"] <= 1.0
    assert abs(m["ddim_minus_ddpm_joint"]) <= 0.03, m  # DDIM-50 within 3 points of DDPM-1000
    assert 0.0 <= m["pairs_binding"] <= m["pairs_objects"] <= 1.0

    torch.manual_seed(0)
    glide = load_glide("glide-shapes-tiny")
    prompts, colour, shape, heldout = single_object_prompts(per_pair=1)
    images = glide.sample(prompts, m["best_guidance"], "ddim", 25, seed=123, precision="bf16")
    live = judge_single(load_judge(), images, colour, shape, heldout)
    assert live["all_colour"] >= 0.9 and live["all_shape"] >= 0.8, live  # 40 samples, 25 steps
