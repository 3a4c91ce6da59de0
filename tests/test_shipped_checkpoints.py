"""The shipped reference checkpoints load, match their manifests and meet their bars.

`unclip-lite eval NAME` recomputes the metrics; these tests hold the acceptance bars.
"""
import json

import pytest

from unclip_lite.checkpoints import REGISTRY_DIR, list_checkpoints, load_checkpoint, read_manifest
from unclip_lite.cli import main as cli

EXPECTED = ["clip-emoji-tiny", "clip-shapes-tiny"]


def test_expected_checkpoints_are_shipped_with_manifests():
    assert set(EXPECTED) <= set(list_checkpoints())
    for name in EXPECTED:
        manifest = read_manifest(name)
        assert manifest["command"].startswith("unclip-lite train")
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
