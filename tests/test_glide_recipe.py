"""glide-shapes-tiny's machinery: Min-SNR weights, the training stream and loss, the saved
bundle, sampling knobs, the judge-based evaluation and the CLI (unclip_lite.glide.bundle /
.recipes / .evaluate, ``unclip-lite sample|train|eval glide``)."""
import json

import pytest
import torch
from helpers import tiny_bundle, unzero_
from PIL import Image

from unclip_lite import cli
from unclip_lite.data import shapes
from unclip_lite.diffusion import GaussianDiffusion
from unclip_lite.glide.bundle import GlideBundle, load_glide
from unclip_lite.glide.evaluate import (attribute_prompts, judge_attributes, judge_single, pair_breakdown,
                                        single_object_prompts, two_object_prompts)
from unclip_lite.glide.recipes import GlideData, GlideRecipe, diffusion_loss, glide_batches
from unclip_lite.glide.text2im import Text2Im
from unclip_lite.judge import load_judge
from unclip_lite.tokenizer import PromptTooLongError


# --- Min-SNR-γ -------------------------------------------------------------------------------
@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_min_snr_weight_gives_the_same_x0_weighted_loss_in_every_parameterisation(parameterization):
    """Hang et al. 2023 define the weight on ‖x̂_0 - x_0‖²: min(SNR, γ). Whatever the network
    predicts, weight × (its own squared error) must equal min(SNR, γ) × the x_0 error of the
    same prediction."""
    g = torch.Generator().manual_seed(0)
    diffusion = GaussianDiffusion.from_schedule("cosine", 1000, parameterization=parameterization)
    x0, noise = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(6, 3, 4, 4, generator=g,
                                                                                       dtype=torch.float64)
    t = torch.tensor([0, 3, 100, 500, 900, 999])
    xt = diffusion.q_sample(x0, t, noise)
    x0_hat = x0 + 0.1 * torch.randn(x0.shape, generator=g, dtype=torch.float64)  # some prediction of x_0
    eps_hat = diffusion.predict_eps_from_x0(xt, t, x0_hat)
    ab = diffusion.alphas_cumprod[t].view(-1, 1, 1, 1)
    own = {"eps": (eps_hat, noise), "x0": (x0_hat, x0),
           "v": (ab.sqrt() * eps_hat - (1 - ab).sqrt() * x0_hat, diffusion.v_target(x0, noise, t))}
    pred, target = own[parameterization]
    snr = ab.view(-1) / (1 - ab.view(-1))
    for floor in (0.0, 1.0):  # with a floor (upsamplers): min(max(SNR, floor), γ)
        weighted = diffusion.min_snr_weight(t, 5.0, floor) * ((pred - target) ** 2).mean((1, 2, 3))
        expected = snr.clamp(min=floor, max=5.0) * ((x0_hat - x0) ** 2).mean((1, 2, 3))
        torch.testing.assert_close(weighted, expected, rtol=1e-6, atol=1e-12)


def test_min_snr_weight_rejects_a_non_positive_gamma():
    with pytest.raises(ValueError, match="gamma"):
        GaussianDiffusion.from_schedule("cosine", 10).min_snr_weight(torch.tensor([1]), 0.0)
    with pytest.raises(ValueError, match="floor"):
        GaussianDiffusion.from_schedule("cosine", 10).min_snr_weight(torch.tensor([1]), 5.0, floor=6.0)


# --- the training stream and loss -------------------------------------------------------------
def test_training_batches_are_deterministic_in_range_and_drop_a_fifth_of_captions():
    bundle = tiny_bundle()
    batches = glide_batches(bundle, GlideData(batch_size=40, two_object_fraction=0.25, seed=3))
    x0, tokens = batches(7)
    x0_again, tokens_again = batches(7)
    assert torch.equal(x0, x0_again) and torch.equal(tokens, tokens_again)
    assert x0.shape == (40, 3, 32, 32) and x0.min() >= -1 and x0.max() <= 1
    empty = bundle.model.empty_tokens(1)[0]
    dropped = sum(int((batches(i)[1] == empty).all(1).sum()) for i in range(25))
    assert 0.15 < dropped / (25 * 40) < 0.25  # p_uncond = 0.2
    assert torch.equal(batches(0, rank=1, world=2)[1], batches(0)[1][20:])  # each rank its half


def test_the_stream_never_shows_a_held_out_pair():
    stream = shapes.ShapesStream(64, 32, seed=0, two_object_fraction=0.25)
    for index in range(20):
        for scenes in stream.batch(index)[2]:
            for label in scenes.labels():
                for obj in label["objects"]:
                    assert (obj["colour"], obj["shape"]) not in shapes.HELD_OUT_PAIRS


def test_the_loss_trains_the_text_path():
    """After a few steps the output depends on the caption (the U-Net's zero-initialised
    output layer means it cannot at step 0), and the loss is a finite scalar."""
    from unclip_lite.train import TrainConfig, Trainer

    bundle = tiny_bundle()
    recipe = GlideRecipe()
    loss_fn = diffusion_loss(bundle.diffusion, recipe.min_snr_gamma)
    batches = glide_batches(bundle, GlideData(batch_size=8))
    trainer = Trainer(bundle.model, loss_fn, batches,
                      TrainConfig(steps=4, lr=1e-2, warmup=0, precision="fp32", progress=False))
    trainer.fit()
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in trainer.history)
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([500])
    with torch.no_grad():
        a = bundle.model(x, t, bundle.tokenize("a red star"))
        b = bundle.model(x, t, bundle.tokenize("a blue circle"))
    assert (a - b).abs().max() > 1e-4


# --- the bundle: save, load, sample ------------------------------------------------------------
def test_bundle_round_trips_through_a_checkpoint(tmp_path):
    bundle = tiny_bundle()
    bundle.extra = {"recipe": {"note": "test"}}
    path = bundle.save(tmp_path / "g.safetensors", manifest={"metrics": {"x": 1.0}})
    loaded = load_glide(path)
    assert loaded.extra == bundle.extra and loaded.manifest["metrics"] == {"x": 1.0}
    assert loaded.diffusion.num_timesteps == 20
    for key, value in bundle.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key]), key
    a = bundle.sample(["a red star"], guidance=2.0, steps=5, seed=1)
    b = loaded.sample(["a red star"], guidance=2.0, steps=5, seed=1)
    assert torch.equal(a, b)


def test_sampling_is_seeded_and_in_range():
    bundle = tiny_bundle()
    a = bundle.sample(["a red star", "a blue circle"], guidance=3.0, steps=4, seed=0)
    b = bundle.sample(["a red star", "a blue circle"], guidance=3.0, steps=4, seed=0)
    c = bundle.sample(["a red star", "a blue circle"], guidance=3.0, steps=4, seed=1)
    d = bundle.sample(["a red star", "a blue circle"], guidance=3.0, sampler="ddpm", steps=4, seed=0)
    assert a.shape == (2, 3, 32, 32) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, d)
    # a respaced process: DDIM over "ddim5" is DDIM-5 on the original (the same strided steps)
    torch.testing.assert_close(bundle.sample("a red star", steps=5, seed=3),
                               bundle.sample("a red star", steps=None, respacing="ddim5", seed=3))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"sampler": "euler"}, ValueError, "unknown sampler 'euler'"),
    ({"steps": 0}, ValueError, r"steps must be an integer in \[1, 20\]"),
    ({"steps": 21}, ValueError, r"steps must be an integer in \[1, 20\]"),
    ({"steps": 2.5}, ValueError, "steps must be an integer"),
    ({"guidance": -1.0}, ValueError, "guidance scale"),
    ({"guidance": 51.0}, ValueError, "guidance scale"),
    ({"guidance": float("nan")}, ValueError, "guidance scale"),
    ({"precision": "fp8"}, ValueError, "precision"),
    ({"prompts": "a red star " * 20}, PromptTooLongError, "too long"),
    ({"prompts": "a red zebra"}, ValueError, "zebra"),
    ({"steps": None, "respacing": "fast10"}, ValueError, "bad respacing 'fast10'"),
    ({"steps": None, "respacing": "ddim0"}, ValueError, "bad respacing 'ddim0'"),
    ({"steps": 10, "respacing": "10"}, ValueError, "either steps or respacing"),
])
def test_bad_sampling_knobs_fail_fast_with_a_clear_error(kwargs, error, match):
    bundle = tiny_bundle()
    kwargs = {"prompts": "a red star", "steps": 5, **kwargs}
    with pytest.raises(error, match=match):
        bundle.sample(**kwargs)


# --- the judge-based evaluation ----------------------------------------------------------------
def test_single_object_prompts_cover_every_pair_and_flag_the_held_out_ones():
    prompts, colour, shape, heldout = single_object_prompts(per_pair=2)
    assert len(prompts) == 80 and int(heldout.sum()) == 2 * len(shapes.HELD_OUT_PAIRS)
    for p, c, s in zip(prompts, colour, shape):
        parsed = shapes.parse_caption(p)["objects"][0]
        assert (parsed["colour"], parsed["shape"]) == (shapes.COLOURS[c], shapes.SHAPES[s])


def test_judge_single_scores_true_renders_perfectly_and_wrong_labels_as_wrong():
    judge = load_judge()
    _, colour, shape, heldout = single_object_prompts(per_pair=1)
    scenes = shapes.make_scenes([shapes.COLOURS[c] for c in colour], [shapes.SHAPES[s] for s in shape])
    images = shapes.render(scenes, 32)
    right = judge_single(judge, images, colour, shape, heldout)
    assert right["all_joint"] == right["heldout_joint"] == right["one_object"] == 1.0
    wrong = judge_single(judge, images, (colour + 1) % len(shapes.COLOURS), shape, heldout)
    assert wrong["all_colour"] == 0.0 and wrong["all_shape"] == 1.0


def test_two_object_prompts_say_what_their_scenes_hold():
    texts, scenes = two_object_prompts(20)
    for text, label in zip(texts, scenes.labels()):
        parsed = shapes.parse_caption(text)
        assert parsed["relation"] == label["relation"]
        assert [(o["colour"], o["shape"]) for o in parsed["objects"]] == \
               [(o["colour"], o["shape"]) for o in label["objects"]]


# --- the command line --------------------------------------------------------------------------
@pytest.fixture()
def checkpoint(tmp_path):
    return str(tiny_bundle().save(tmp_path / "tiny-glide.safetensors", manifest={"metrics": {}}))


def test_cli_sample_writes_a_grid_or_one_png_per_sample(tmp_path, checkpoint):
    grid = tmp_path / "grid.png"
    assert cli.main(["sample", "glide", "--checkpoint", checkpoint, "--prompt", "a red star",
                     "--prompt", "a blue circle", "--n", "3", "--steps", "3", "--out", str(grid)]) == 0
    assert Image.open(grid).size == (3 * 34 + 2, 2 * 34 + 2)  # 32 px + 2 px padding
    out_dir = tmp_path / "many"
    assert cli.main(["sample", "glide", "--checkpoint", checkpoint, "--prompt", "a red star", "--n", "2",
                     "--sampler", "ddpm", "--steps", "3", "--out-dir", str(out_dir)]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["0000.png", "0001.png"]


@pytest.mark.parametrize("args, message", [
    (["--guidance", "60"], "guidance scale"),
    (["--steps", "0"], "steps must be an integer"),
    (["--sampler", "plms"], "unknown sampler 'plms'"),
    (["--prompt", "a red star " * 20], "too long"),
    (["--n", "0"], "--n must be >= 1"),
    (["--respacing", "sometimes"], "bad respacing 'sometimes'"),
])
def test_cli_sample_rejects_bad_input_with_a_message(args, message, checkpoint, tmp_path, capsys):
    argv = ["sample", "glide", "--checkpoint", checkpoint, "--prompt", "a red star",
            "--out", str(tmp_path / "x.png"), *args]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_cli_train_and_sample_reject_unknown_names(capsys):
    assert cli.main(["train", "glide", "--config", "imagenet-huge"]) == 2
    assert "no glide training recipe for config 'imagenet-huge'" in capsys.readouterr().err
    assert cli.main(["train", "dalle", "--config", "shapes-tiny"]) == 2
    assert "unknown model kind 'dalle'" in capsys.readouterr().err
    assert cli.main(["sample", "clip", "--prompt", "a red star"]) == 2
    assert "sampleable: glide" in capsys.readouterr().err


def test_cli_eval_prints_one_json_object_for_a_glide_checkpoint(checkpoint, capsys):
    assert cli.main(["eval", checkpoint, "--per-pair", "1", "--ddpm-per-pair", "1", "--pairs-n", "4",
                     "--steps", "4"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["best_guidance"] in (1.0, 2.0, 3.0, 5.0)
    for key in ("g1_all_colour", "g5_heldout_shape", "best_all_joint", "pairs_binding"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert "ddim_minus_ddpm_joint" in metrics


def test_cli_eval_record_stores_the_metrics_in_the_manifest_and_keeps_the_weights(checkpoint, capsys):
    from unclip_lite.checkpoints import load_checkpoint, read_manifest

    before = read_manifest(checkpoint)
    assert cli.main(["eval", checkpoint, "--per-pair", "1", "--ddpm-per-pair", "0", "--pairs-n", "0",
                     "--steps", "2", "--record"]) == 0
    printed = json.loads(capsys.readouterr().out)
    after = read_manifest(checkpoint)
    assert after["metrics"] == printed and after["eval_command"].startswith("unclip-lite eval")
    assert after["sha256"] == before["sha256"]
    load_checkpoint(checkpoint)  # the weights still match their hash


# --- inpainting and upsampling models through the same sampler ---------------------------------
def tiny_variant(extra_channels: int, image_size: int = 32) -> GlideBundle:
    bundle = tiny_bundle(image_size=image_size)
    cfg = bundle.model.config
    cfg.conditioning = {0: "text", 4: "inpaint", 3: "low_res"}[extra_channels]
    cfg.unet.in_channels = 3 + extra_channels
    cfg.low_res_size = image_size // 2 if extra_channels == 3 else None
    torch.manual_seed(1)
    model = Text2Im(cfg).eval()
    unzero_(model)
    return GlideBundle(model, bundle.vocab, bundle.diffusion_config)


def test_an_inpainting_model_keeps_the_known_pixels_bit_for_bit():
    bundle = tiny_variant(4)
    image = shapes.render(shapes.make_scenes(["red", "blue"], "star"), 32)  # [2, 3, 32, 32] in [0, 1]
    mask = torch.ones(2, 1, 32, 32)
    mask[:, :, 8:24, 16:] = 0
    out = bundle.sample(["a red star", "a green circle"], guidance=3.0, steps=4, seed=0, inpaint=(image, mask))
    keep = mask.expand_as(image).bool()
    assert torch.equal(out[keep], image[keep])
    assert not torch.equal(out[~keep], image[~keep])
    with pytest.raises(ValueError, match="inpainting model: pass inpaint"):
        bundle.sample("a red star", steps=2)
    with pytest.raises(ValueError, match="mask must have shape"):
        bundle.sample(["a red star"] * 2, steps=2, inpaint=(image, mask[:, :, :16]))
    with pytest.raises(ValueError, match="exactly 0"):
        bundle.sample(["a red star"] * 2, steps=2, inpaint=(image, mask * 0.5))
    with pytest.raises(ValueError, match="inpaint given, but this is a text-to-image model"):
        tiny_bundle().sample(["a red star"] * 2, steps=2, inpaint=(image, mask))


def test_an_upsampler_reads_its_low_res_image_and_checks_it():
    bundle = tiny_variant(3, image_size=32)
    low = torch.rand(2, 3, 16, 16)
    a = bundle.sample(["a red star", "a blue circle"], steps=3, seed=0, low_res=low)
    b = bundle.sample(["a red star", "a blue circle"], steps=3, seed=0, low_res=low.flip(-1))
    assert a.shape == (2, 3, 32, 32) and not torch.equal(a, b)
    with pytest.raises(ValueError, match="this is an upsampler"):
        bundle.sample("a red star", steps=2)
    with pytest.raises(ValueError, match="one per prompt"):
        bundle.sample(["a red star"] * 3, steps=2, low_res=low)
    with pytest.raises(ValueError, match="takes 16 px low-res images, got 12 px"):  # its size, checked first
        bundle.sample(["a red star"] * 2, steps=2, low_res=torch.rand(2, 3, 12, 12))
    with pytest.raises(ValueError, match="takes 16 px low-res images, got 8 px"):  # a divisor is still wrong
        bundle.sample(["a red star"] * 2, steps=2, low_res=torch.rand(2, 3, 8, 8))
    from unclip_lite.glide.upsample import upsample_channels
    with pytest.raises(ValueError, match="multiple of the low-res size"):
        upsample_channels(torch.rand(2, 3, 12, 12) * 2 - 1, 32)


@pytest.mark.parametrize("config, extra", [("shapes-tiny-inpaint", 4), ("shapes-tiny-upsample", 3)])
def test_inpainting_and_upsampling_recipes_make_their_inputs_and_train(config, extra):
    from unclip_lite.glide.recipes import RECIPES, new_glide
    from unclip_lite.train import TrainConfig, Trainer

    recipe = RECIPES[config]()
    bundle = new_glide(recipe.model)
    assert bundle.extra_channels == extra
    batches = glide_batches(bundle, GlideData(batch_size=4))
    x0, tokens, channels = batches(2)
    R = bundle.image_size
    assert x0.shape == (4, 3, R, R) and channels.shape == (4, extra, R, R)
    assert all(torch.equal(a, b) for a, b in zip(batches(2), (x0, tokens, channels)))
    if extra == 4:  # image·mask ⊕ mask
        mask = channels[:, 3:]
        assert set(mask.unique().tolist()) <= {0.0, 1.0} and torch.equal(channels[:, :3], x0 * mask)
    else:  # the low-res copy upsampled: close to the image, not equal
        assert 0 < (channels - x0).abs().mean() < 0.2
    trainer = Trainer(bundle.model, diffusion_loss(bundle.diffusion, 5.0), batches,
                      TrainConfig(steps=1, warmup=0, precision="fp32", progress=False))
    trainer.fit()
    assert torch.isfinite(torch.tensor(trainer.history[-1]["loss"]))


def test_attribute_prompts_name_every_pair_and_the_judge_reads_true_renders_of_them():
    prompts, targets, heldout = attribute_prompts(per_pair=2)
    assert len(prompts) == 80 and heldout.sum() == 2 * len(shapes.HELD_OUT_PAIRS)
    assert torch.bincount(targets["position"]).tolist() == [16] * 5 and torch.bincount(targets["size"]).tolist() == [40, 40]
    for text, c, s, z, p in zip(prompts, *(targets[k] for k in ("colour", "shape", "size", "position"))):
        label = shapes.parse_caption(text)
        assert label["objects"][0] == {"colour": shapes.COLOURS[c], "shape": shapes.SHAPES[s], "size": shapes.SIZE_NAMES[z]}
        assert label["position"] == shapes.POSITION_NAMES[p]
    judge = load_judge()
    truth = torch.cat([shapes.render(shapes.make_scenes(shapes.COLOURS[c], shapes.SHAPES[s], shapes.SIZE_NAMES[z],
                                                        shapes.POSITION_NAMES[p]), 32)
                       for c, s, z, p in zip(*(targets[k] for k in ("colour", "shape", "size", "position")))])
    right = judge_attributes(judge, truth, targets, heldout)
    assert right["all_joint"] >= 0.95 and right["heldout_position"] >= 0.9, right
    moved = {**targets, "position": (targets["position"] + 1) % 5}  # every image in the wrong place
    wrong = judge_attributes(judge, truth, moved, heldout)
    assert wrong["all_position"] <= 0.1 and wrong["all_colour"] == right["all_colour"]


def test_pair_breakdown_tells_swapped_colours_from_swapped_shapes():
    judge = load_judge()
    texts, scenes = two_object_prompts(40, seed=3)
    truth = shapes.render(scenes, 32)
    right = pair_breakdown(judge, truth, scenes)
    assert right["both_right"] >= 0.9 and right["binding"] >= 0.85 and right["colours_swapped"] <= 0.05, right
    swapped = shapes.Scenes(**{**{f: getattr(scenes, f) for f in ("shape", "size", "radius", "x", "y")},
                               "colour": scenes.colour.flip(1)}, relation=scenes.relation)
    crossed = pair_breakdown(judge, shapes.render(swapped, 32), scenes)
    differ = (scenes.colour[:, 0] != scenes.colour[:, 1]).float().mean().item()
    assert crossed["colours_swapped"] >= 0.8 * differ and crossed["both_right"] <= 1 - 0.8 * differ, crossed
    assert crossed["shapes_swapped"] <= 0.1


def test_max_weight_caps_an_eps_models_floor_weight_where_snr_vanishes():
    d = GaussianDiffusion.from_schedule("cosine", 1000)
    t = torch.tensor([300, 900, 999])
    snr = d.snr(t)
    floored = d.min_snr_weight(t, 5.0, floor=0.5)  # ε-weight max(SNR, 0.5) / SNR: ~2e8 at t = 999
    assert torch.allclose(floored, snr.clamp(min=0.5, max=5.0) / snr)
    capped = d.min_snr_weight(t, 5.0, floor=0.5, max_weight=20.0)
    assert torch.allclose(capped, floored.clamp(max=20.0)) and capped[0] == floored[0] and capped[2] == 20.0
    with pytest.raises(ValueError, match="max_weight"):
        d.min_snr_weight(t, 5.0, max_weight=0.0)


def test_high_noise_draws_that_share_of_the_batch_from_the_noisiest_steps():
    d = GaussianDiffusion.from_schedule("cosine", 1000)
    seen = []

    class Recorder(torch.nn.Module):  # records the timesteps it is asked about
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, tokens):
            seen.append(t.clone())
            return torch.zeros_like(x) + self.w

    model = Recorder()

    batch = (torch.zeros(10, 3, 8, 8), torch.zeros(10, 4, dtype=torch.long))
    torch.manual_seed(0)
    for _ in range(20):
        diffusion_loss(d, 5.0, high_noise=(0.4, 900))(model, batch)
    t = torch.stack(seen)  # [20, 10]
    assert (t[:, :4] >= 900).all() and (t[:, :4] < 1000).all()
    assert (t[:, 4:] < 900).any()  # the rest stays uniform over all steps
    seen.clear()
    diffusion_loss(d, 5.0)(model, batch)
    assert (seen[0] < 900).any()
    with pytest.raises(ValueError, match="high_noise"):
        diffusion_loss(d, 5.0, high_noise=(0.4, 1000))
