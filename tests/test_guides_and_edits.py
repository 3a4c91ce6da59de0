"""Chapter 06's recipes and evaluations: warm starts, the two guides' training streams and
checkpoints, gradient guidance inside ``GlideBundle.sample``, the inpainting / upsampling
evaluations and the command line (``unclip-lite train classifier``, ``sample --guide``,
``--image/--hole``, ``--low-res/--base``, ``eval`` of every new kind)."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_bundle, tiny_classifier, tiny_clip, unzero_
from PIL import Image
from torchvision.utils import save_image

from unclip_lite import cli
from unclip_lite.checkpoints import CheckpointError, read_manifest
from unclip_lite.clip import noised as noised_clip
from unclip_lite.data import shapes
from unclip_lite.diffusion import GaussianDiffusion
from unclip_lite.glide import evaluate, guide_recipes
from unclip_lite.glide.bundle import DiffusionConfig, GlideBundle
from unclip_lite.glide.classifier import ClassifierBundle, load_classifier
from unclip_lite.glide.recipes import warm_start
from unclip_lite.glide.text2im import Text2Im, Text2ImConfig


def variant(base: GlideBundle, extra_channels: int, image_size: int = 32) -> GlideBundle:
    cfg = Text2ImConfig.from_dict(base.model.config.to_dict())
    cfg.conditioning = {0: "text", 4: "inpaint", 3: "low_res"}[extra_channels]
    cfg.unet.in_channels, cfg.unet.image_size = 3 + extra_channels, image_size
    cfg.low_res_size = image_size // 2 if extra_channels == 3 else None
    torch.manual_seed(1)
    model = Text2Im(cfg).eval()
    unzero_(model)
    return GlideBundle(model, base.vocab, base.diffusion_config)


# --- warm starts ------------------------------------------------------------------------------
def test_a_warm_started_inpainting_model_computes_what_the_base_model_did():
    base = tiny_bundle()
    wide = variant(base, 4)
    assert warm_start(wide.model, base.model.state_dict()) == ["unet.input_blocks.0.0.weight"]
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 15])
    tokens = base.tokenize(["a red star", "a blue circle"])
    with torch.no_grad():
        expected = base.model(x, t, tokens)
        got = wide.model(x, t, tokens, extra=torch.randn(2, 4, 32, 32))  # the new inputs start at zero weight
    assert torch.allclose(got, expected, atol=1e-5)
    cfg = Text2ImConfig.from_dict(base.model.config.to_dict())
    cfg.unet.model_channels = 8  # another architecture
    with pytest.raises(ValueError, match="another architecture"):
        warm_start(wide.model, Text2Im(cfg).state_dict())


def test_warm_start_noised_clip_moves_the_patch_positions_past_the_timestep_token():
    clean, noised = tiny_clip(noised=False), tiny_clip(noised=True)
    noised_clip.warm_start_noised_clip(noised.model, clean.model.state_dict())
    old = clean.model.visual.positional_embedding
    new = noised.model.visual.positional_embedding
    assert torch.equal(new[0], old[0]) and torch.equal(new[2:], old[1:]) and not new[1].any()
    assert torch.equal(noised.model.text.token_embedding.weight, clean.model.text.token_embedding.weight)
    with pytest.raises(ValueError, match="no place"):
        noised_clip.warm_start_noised_clip(noised.model, {"bogus": torch.zeros(1)})


# --- the classifier's data, loss and checkpoint -------------------------------------------------
def test_classifier_batches_are_seeded_noised_renders_with_their_labels():
    diffusion = GaussianDiffusion.from_schedule("cosine", 1000)
    batches = guide_recipes.classifier_batches(diffusion, guide_recipes.ClassifierData(batch_size=8))
    x_t, t, labels = batches(3)
    again = batches(3)
    assert torch.equal(x_t, again[0]) and torch.equal(t, again[1])
    assert x_t.shape == (8, 3, 32, 32) and t.min() >= 0 and t.max() < 1000
    stream = shapes.ShapesStream(8, 32, seed=0, hue_jitter=10.0)
    _, texts, _ = stream.batch(3)
    for text, c, s in zip(texts, labels["colour"], labels["shape"]):  # the labels say what the captions say
        obj = shapes.parse_caption(text)["objects"][0]
        assert obj["shape"] == shapes.SHAPES[s] and obj.get("colour", shapes.COLOURS[c]) == shapes.COLOURS[c]
    # x_t is q(x_t | x_0): at t = 0 it is (almost) the render itself
    zero = guide_recipes.noised(stream.batch(3)[0], diffusion, 0)
    assert (zero - (stream.batch(3)[0] * 2 - 1)).abs().max() < 0.05


def test_classifier_loss_is_the_summed_cross_entropy():
    model = tiny_classifier()
    x_t, t = torch.randn(4, 3, 16, 16), torch.tensor([0, 10, 500, 999])
    labels = {"colour": torch.tensor([0, 1, 2, 3]), "shape": torch.tensor([4, 3, 2, 1])}
    loss, info = guide_recipes.classifier_loss(model, (x_t, t, labels))
    logits = model(x_t, t)
    expected = sum(-F.log_softmax(logits[k], -1)[torch.arange(4), y].mean() for k, y in labels.items())
    assert torch.allclose(loss, expected, atol=1e-5)
    assert 0 <= info["colour_acc"] <= 1


def test_a_classifier_bundle_round_trips_and_refuses_another_kind(tmp_path):
    bundle = ClassifierBundle(tiny_classifier(), DiffusionConfig("cosine", 50))
    path = bundle.save(tmp_path / "clf.safetensors")
    loaded = load_classifier(path)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([1, 40])
    with torch.no_grad():
        assert torch.allclose(loaded.model(x, t)["shape"], bundle.model(x, t)["shape"])
    assert loaded.diffusion_config == DiffusionConfig("cosine", 50)
    glide = tiny_bundle().save(tmp_path / "glide.safetensors")
    with pytest.raises(CheckpointError, match="glide"):
        load_classifier(glide)


def test_prompt_labels_read_single_object_prompts_only():
    labels = guide_recipes.prompt_labels(["a red star", "a blue circle"])
    assert labels["colour"].tolist() == [shapes.colour_index("red"), shapes.colour_index("blue")]
    assert labels["shape"].tolist() == [shapes.shape_index("star"), shapes.shape_index("circle")]
    with pytest.raises(ValueError, match="one colour and one shape"):
        guide_recipes.prompt_labels(["a red star to the left of a blue circle"])
    with pytest.raises(ValueError, match="one colour and one shape"):
        guide_recipes.prompt_labels(["a star"])


# --- gradient guidance inside sample --------------------------------------------------------------
def toward(target: float):
    """A guide whose log-probability is highest when every pixel of x_t equals ``target``."""
    return lambda prompts: (lambda x_t, t: -((x_t - target) ** 2).flatten(1).sum(1))


def test_a_guide_steers_samples_and_scale_zero_changes_nothing():
    bundle = tiny_bundle()
    prompts = ["a red star", "a blue circle"]
    plain = bundle.sample(prompts, guidance=0.0, steps=5, seed=0)
    assert torch.equal(bundle.sample(prompts, guidance=0.0, steps=5, seed=0, guide=toward(1.0), guide_scale=0.0), plain)
    up = bundle.sample(prompts, guidance=0.0, steps=5, seed=0, guide=toward(1.0), guide_scale=3.0)
    down = bundle.sample(prompts, guidance=0.0, steps=5, seed=0, guide=toward(-1.0), guide_scale=3.0)
    assert up.mean() > plain.mean() + 0.05 and down.mean() < plain.mean() - 0.05


@pytest.mark.parametrize("kwargs, match", [
    ({"guide": toward(1.0), "guide_scale": -1.0}, "guidance scale must be finite"),
    ({"guide": toward(1.0), "guide_scale": float("nan")}, "guidance scale must be finite"),
    ({"guide": toward(1.0), "guide_scale": 5000.0}, r"in \[0, 1000\]"),
    ({"guide": "clip-noised-shapes-tiny", "guide_scale": 1.0}, "guide must be a callable"),
])
def test_bad_guides_fail_before_sampling(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_bundle().sample(["a red star"], steps=2, **kwargs)


def test_the_real_guides_push_toward_their_prompt():
    """One guided step's ε shift is -√(1-ᾱ_t)·s·∇ log p: check it against autograd by hand."""
    clip, clf = tiny_clip(), ClassifierBundle(tiny_classifier())
    for guide, size in ((noised_clip.clip_guide(clip), 32), (guide_recipes.classifier_guide(clf), 16)):
        x = torch.randn(2, 3, size, size, requires_grad=True)
        t = torch.tensor([100, 100])
        log_prob = guide(["a red star", "a blue circle"])(x, t)
        assert log_prob.shape == (2,)
        grad = torch.autograd.grad(log_prob.sum(), x)[0]
        with torch.no_grad():  # a small step along the gradient raises the log-probability
            assert (guide(["a red star", "a blue circle"])(x + 1e-2 * grad / grad.norm(), t) > log_prob).all()


# --- evaluations ------------------------------------------------------------------------------
def test_psnr_is_the_closed_form():
    a = torch.full((2, 3, 4, 4), 0.5)
    assert torch.allclose(evaluate.psnr(a + 0.1, a), torch.full((2,), 20.0), atol=1e-4)  # -10 log10(0.01)
    assert torch.allclose(evaluate.psnr(a + 0.01, a), torch.full((2,), 40.0), atol=1e-3)


def test_box_masks_cover_the_object_they_erase():
    gen = torch.Generator().manual_seed(0)
    scenes = shapes.sample_scenes(16, gen, n_objects=2, split="all")
    masks = evaluate._box_masks(scenes, 1, 32)
    second = shapes.render(evaluate._only(scenes, 1), 32)
    bg = torch.tensor(shapes.BACKGROUND).view(1, 3, 1, 1) / 255
    painted = ((second - bg).abs().amax(1, keepdim=True) > 1e-3)  # [B, 1, 32, 32]
    assert not (painted & (masks == 1)).any()  # every pixel of the object lies in the hole
    first = shapes.render(evaluate._only(scenes, 0), 32)
    assert ((first - bg).abs().amax(1, keepdim=True) > 0.5).logical_and(masks == 1).flatten(1).any(1).all()


def test_inpainting_evaluation_keeps_pixels_and_scores_true_renders_well():
    bundle = variant(tiny_bundle(), 4)
    m = evaluate.evaluate_inpainting(bundle, per_pair=1, pairs_n=4, steps=2, progress=False)
    assert m["replace_kept_exact"] and m["add_kept_exact"] and m["replace_max_outside_change"] == 0.0
    for key in ("replace_joint", "replace_drawn", "add_joint", "add_objects"):
        assert 0.0 <= m[key] <= 1.0
    # the judge and the drawn check give full marks to the true answer pasted into the hole
    images = shapes.render(shapes.make_scenes("red", "star"), 32)
    hole = torch.ones(1, 1, 32, 32)
    hole[..., 8:24, 8:24] = 0
    assert evaluate.drawn_in_hole(images, hole).all()
    assert not evaluate.drawn_in_hole(torch.ones_like(images) * torch.tensor(shapes.BACKGROUND).view(1, 3, 1, 1) / 255,
                                      hole).any()


def test_upsampler_evaluation_compares_with_bicubic_on_the_same_inputs():
    bundle = variant(tiny_bundle(), 3, image_size=32)
    m = evaluate.evaluate_upsampler(bundle, n=4, respacing="ddim3", progress=False)
    assert m["n"] == 4 and m["low_res_size"] == 16
    assert m["psnr_bicubic"] > 20 and math.isfinite(m["psnr_upsampler"])
    assert m["gain_over_bicubic_db"] == pytest.approx(m["psnr_upsampler"] - m["psnr_bicubic"], abs=2e-3)


# --- the command line -------------------------------------------------------------------------
@pytest.fixture()
def files(tmp_path):
    base = tiny_bundle()
    inpaint, upsample = variant(base, 4), variant(base, 3, image_size=32)
    clf = ClassifierBundle(tiny_classifier())
    return {"base": str(base.save(tmp_path / "base.safetensors")),
            "base16": str(tiny_bundle(image_size=16).save(tmp_path / "base16.safetensors")),
            "inpaint": str(inpaint.save(tmp_path / "inpaint.safetensors")),
            "upsample": str(upsample.save(tmp_path / "upsample.safetensors")),
            "clip": str(tiny_clip().save(tmp_path / "clip.safetensors")),
            "clf": str(clf.save(tmp_path / "clf.safetensors")), "dir": tmp_path}


def test_cli_samples_with_a_guide_an_inpainting_hole_and_an_upsampler(files):
    d = files["dir"]
    assert cli.main(["sample", "glide", "--checkpoint", files["base"], "--prompt", "a red star", "--n", "2",
                     "--steps", "2", "--guidance", "0", "--guide", files["clip"], "--guide-scale", "2",
                     "--out", str(d / "clip.png")]) == 0
    image = d / "scene.png"
    save_image(shapes.render(shapes.make_scenes("red", "circle"), 32), image)
    assert cli.main(["sample", "glide", "--checkpoint", files["inpaint"], "--prompt", "a blue star", "--n", "2",
                     "--steps", "2", "--image", str(image), "--hole", "8,8,24,24", "--out-dir", str(d / "ed")]) == 0
    scene = torch.from_numpy(np.array(Image.open(image).convert("RGB")))
    for name in ("0000.png", "0001.png"):
        edited = torch.from_numpy(np.array(Image.open(d / "ed" / name).convert("RGB")))
        keep = torch.ones(32, 32, dtype=torch.bool)
        keep[8:24, 8:24] = False
        assert torch.equal(edited[keep], scene[keep])  # outside the hole: unchanged, as saved
    low = d / "low.png"
    save_image(torch.rand(1, 3, 16, 16), low)
    assert cli.main(["sample", "glide", "--checkpoint", files["upsample"], "--prompt", "a red star", "--n", "1",
                     "--steps", "2", "--low-res", str(low), "--out", str(d / "up.png")]) == 0
    assert Image.open(d / "up.png").size == (32, 32)  # one image: no grid padding
    assert cli.main(["sample", "glide", "--checkpoint", files["upsample"], "--prompt", "a red star", "--n", "1",
                     "--base", files["base16"], "--respacing", "ddim3", "--steps", "2", "--out", str(d / "up2.png")]) == 0
    assert cli.main(["sample", "glide", "--checkpoint", files["upsample"], "--prompt", "a red star", "--n", "1",
                     "--base", files["base"], "--steps", "2", "--out", str(d / "up3.png")]) == 2  # 32 px base


@pytest.mark.parametrize("args, message", [
    (["--image", "{dir}/scene.png"], "needs both --image PNG and --hole"),
    (["--image", "{dir}/scene.png", "--hole", "8,8,40,24"], "must lie inside the 32 px image"),
    (["--image", "{dir}/scene.png", "--hole", "8,8,24"], "four integers"),
    (["--image", "{dir}/wide.png", "--hole", "8,8,24,24"], "a row of 1 tiles of 32 px"),
    (["--guide", "{base}"], "not a guide"),
    (["--guide", "{clf}", "--guide-scale", "-3"], "guidance scale must be finite"),
])
def test_cli_sample_rejects_bad_edit_and_guide_input(args, message, files, capsys):
    d = files["dir"]
    save_image(shapes.render(shapes.make_scenes("red", "circle"), 32), d / "scene.png")
    save_image(torch.rand(1, 3, 20, 50), d / "wide.png")
    checkpoint = files["inpaint"] if "--image" in args else files["base"]
    argv = ["sample", "glide", "--checkpoint", checkpoint, "--prompt", "a red star", "--n", "1", "--steps", "2",
            "--out", str(d / "x.png"), *[a.format(**files) for a in args]]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (d / "x.png").exists()


def test_cli_sample_rejects_a_low_res_image_of_the_wrong_size(files, capsys):
    d = files["dir"]
    save_image(torch.rand(1, 3, 12, 12), d / "low12.png")
    assert cli.main(["sample", "glide", "--checkpoint", files["upsample"], "--prompt", "a red star", "--n", "1",
                     "--steps", "2", "--low-res", str(d / "low12.png"), "--out", str(d / "x.png")]) == 2
    assert "16 px image" in capsys.readouterr().err


def test_cli_trains_and_evaluates_a_classifier_and_evaluates_every_new_kind(files, capsys, tmp_path):
    out = tmp_path / "clf-trained.safetensors"
    assert cli.main(["train", "classifier", "--config", "shapes-tiny", "--steps", "2", "--out", str(out),
                     "--run-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    manifest = read_manifest(out)
    assert manifest["kind"] == "classifier" and manifest["steps"] == 2
    assert manifest["command"].startswith("unclip-lite train classifier")
    assert set(manifest["metrics"]) == {f"t{t}_{h}" for t in guide_recipes.EVAL_TIMESTEPS for h in ("colour", "shape")}
    assert cli.main(["eval", files["clf"], "--n", "20", "--pairs-n", "0"]) == 0
    assert "t900_shape" in json.loads(capsys.readouterr().out)
    assert cli.main(["eval", files["clip"], "--n", "20", "--pairs-n", "0", "--record"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "t500_joint" in printed and read_manifest(files["clip"])["metrics"] == printed
    assert cli.main(["eval", files["inpaint"], "--per-pair", "1", "--pairs-n", "2", "--steps", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["replace_kept_exact"] is True
    assert cli.main(["eval", files["upsample"], "--n", "2", "--respacing", "ddim3"]) == 0
    assert "gain_over_bicubic_db" in json.loads(capsys.readouterr().out)
