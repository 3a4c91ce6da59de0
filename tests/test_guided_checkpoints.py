"""Chapter 03's methods as checkpoints without weights (clipdraw, vqgan-clip): composed from
shipped ones, checked against their sha256s, and driven by ``unclip-lite compose | sample | eval``."""
import json
import shutil

import pytest
import torch
from PIL import Image

from unclip_lite import cli
from unclip_lite.checkpoints import read_manifest, resolve
from unclip_lite.clipdraw.bundle import ClipDrawBundle
from unclip_lite.clipdraw.optimize import ClipDrawConfig
from unclip_lite.kinds import KINDS, kind_of
from unclip_lite.vqgan import VQGAN, VQGANBundle
from unclip_lite.vqgan.guided import VQGANClipBundle
from test_vqgan import tiny_config


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_vqgan_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vq") / "vq.safetensors"
    return VQGANBundle(VQGAN(tiny_config()).eval()).save(path, manifest={"command": "test"})


def test_compose_writes_a_weightless_checkpoint_that_loads_its_guide(tmp_path, capsys):
    path = tmp_path / "cd.safetensors"
    assert run(capsys, "compose", "clipdraw", "--out", str(path))[0] == 0
    manifest = read_manifest(path)
    assert manifest["command"] == f"unclip-lite compose clipdraw --out {path}" and "hardware" in manifest
    assert kind_of(path).name == "clipdraw"
    method = ClipDrawBundle.load(path)
    assert method.config == ClipDrawConfig() and method.clip.image_size == 32
    assert method.components["clip"] == {"name": "clip-shapes-tiny",
                                         "sha256": read_manifest("clip-shapes-tiny")["sha256"]}
    image = method.draw("a red star", seed=0, steps=2)
    assert image.shape == (3, 32, 32) and torch.equal(image, method.draw("a red star", seed=0, steps=2))


def test_a_component_changed_since_composing_is_refused(tmp_path, capsys):
    for suffix in (".safetensors", ".json"):  # a private copy of the guide whose manifest we can edit
        shutil.copy(resolve("clip-shapes-tiny").with_suffix(suffix), tmp_path / f"guide{suffix}")
    guide = tmp_path / "guide.safetensors"
    path = tmp_path / "cd.safetensors"
    assert run(capsys, "compose", "clipdraw", "--use", f"clip={guide}", "--out", str(path))[0] == 0
    manifest = json.loads((tmp_path / "guide.json").read_text())
    manifest["sha256"] = "0" * 64  # as if the guide had been retrained
    (tmp_path / "guide.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="component .*guide.* was composed with"):
        ClipDrawBundle.load(path)


@pytest.mark.parametrize("argv, message", [
    (["compose", "glide"], "trained, not composed; composable: clipdraw, vqgan-clip"),
    (["compose", "clipdraw", "--use", "vqgan=x"], "no component vqgan; its roles: clip"),
    (["compose", "clipdraw", "--use", "clip"], "ROLE=CHECKPOINT"),
    (["compose", "clipdraw", "--use", "clip=nope"], "no checkpoint 'nope'"),
])
def test_compose_refuses_bad_input(argv, message, capsys):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err


def test_a_vqgan_smaller_than_the_clip_is_refused_when_composing(tmp_path, capsys):
    torch.manual_seed(0)
    small = VQGANBundle(VQGAN(tiny_config(image_size=16))).save(tmp_path / "small.safetensors",
                                                                 manifest={"command": "test"})
    code, _, err = run(capsys, "compose", "vqgan-clip", "--use", f"vqgan={small}", "--out", str(tmp_path / "x"))
    assert code == 2 and "draws 16 px images but the CLIP reads 32 px" in err


def test_sample_and_eval_clipdraw_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "cd.safetensors"
    run(capsys, "compose", "clipdraw", "--out", str(path))
    out = tmp_path / "grid.png"
    code, _, err = run(capsys, "sample", "clipdraw", "--checkpoint", str(path), "--prompt", "a red star",
                       "--prompt", "a blue circle", "--n", "2", "--steps", "2", "--strokes", "4", "--out", str(out))
    assert code == 0 and "4 images, 2 per row" in err
    assert Image.open(out).size == (2 * 34 + 2, 2 * 34 + 2)  # 2 × 2 tiles of 32 px, 2 px padding
    code, _, err = run(capsys, "sample", "clipdraw", "--checkpoint", str(path), "--prompt", "a red star",
                       "--strokes", "0", "--out", str(out))
    assert code == 2 and "strokes must be >= 1" in err
    code, stdout, _ = run(capsys, "eval", str(path), "--n", "2", "--per-pair", "1", "--steps", "2", "--record")
    metrics = json.loads(stdout)
    assert code == 0 and set(metrics) == {"augment", "no_augment", "guide", "steps"} and metrics["steps"] == 2
    assert metrics["augment"]["n"] == 2 and 0 <= metrics["no_augment"]["joint"] <= 1
    assert "images" not in metrics["augment"] and read_manifest(path)["metrics"] == metrics
    assert read_manifest(path)["eval_hardware"] and read_manifest(path)["eval_threads"] >= 1


def test_eval_takes_a_kind_name_for_its_shipped_checkpoint():
    assert KINDS["clipdraw"].default_checkpoint == "clipdraw-shapes-tiny"
    assert KINDS["vqgan-clip"].default_checkpoint == "vqgan-clip-shapes-tiny"
    assert kind_of("clipdraw-shapes-tiny").name == "clipdraw"  # shipped: `unclip-lite eval clipdraw` finds it


def test_sample_vqgan_clip_with_weighted_prompts_and_an_init_image(tmp_path, tiny_vqgan_path, capsys):
    path = tmp_path / "vc.safetensors"
    assert run(capsys, "compose", "vqgan-clip", "--use", f"vqgan={tiny_vqgan_path}", "--out", str(path))[0] == 0
    method = VQGANClipBundle.load(path)
    assert method.components["vqgan"]["name"] == str(tiny_vqgan_path)
    common = ["sample", "vqgan-clip", "--checkpoint", str(path), "--steps", "2", "--n", "2"]
    out = tmp_path / "v.png"
    code, _, err = run(capsys, *common, "--prompt", "a red star:1", "--prompt", "a blue star:-0.5", "--out", str(out))
    assert code == 0 and Image.open(out).size == (2 * 34 + 2, 34 + 2)  # one row: both prompts steer each image
    Image.new("RGB", (32, 32), (200, 40, 40)).save(tmp_path / "init.png")
    assert run(capsys, *common, "--prompt", "a red star", "--init-image", str(tmp_path / "init.png"),
               "--out", str(out))[0] == 0
    for extra, message in [(["--prompt", "a red star:lots"], "must be a number"),
                           (["--prompt", "a red star", "--init-image", str(tmp_path / "nope.png")], "no image"),
                           (["--prompt", "a red star", "--init-image", str(tmp_path / "small.png")],
                            "init image must be [3, 32, 32]")]:
        Image.new("RGB", (16, 16)).save(tmp_path / "small.png")
        code, _, err = run(capsys, *common, *extra, "--out", str(out))
        assert code == 2 and message in err, err


def test_both_methods_take_an_open_clip_model_and_match_our_twin_of_it():
    """Any CLIP through the CLIP-embedding interface guides them: open_clip's model holding our
    weights draws what ours draws (same strokes, same latent), up to float rounding."""
    from test_clip_embedding import twins
    from unclip_lite.clipdraw import clipdraw
    from unclip_lite.vqgan.vqgan_clip import VQGANClipConfig, vqgan_clip

    ours, theirs = twins()
    a, _, history_a = clipdraw(ours, "a red star", ClipDrawConfig(steps=3))
    b, _, history_b = clipdraw(theirs, "a red star", ClipDrawConfig(steps=3))
    assert torch.allclose(a, b, atol=1e-4) and abs(history_a[-1]["clip_score"] - history_b[-1]["clip_score"]) < 1e-4
    torch.manual_seed(0)
    model = VQGAN(tiny_config()).eval()
    a, _ = vqgan_clip(model, ours, ["a red star:1", "a blue star:-0.5"], VQGANClipConfig(steps=3, cutn=2))
    b, _ = vqgan_clip(model, theirs, ["a red star:1", "a blue star:-0.5"], VQGANClipConfig(steps=3, cutn=2))
    assert torch.allclose(a, b, atol=1e-4)
