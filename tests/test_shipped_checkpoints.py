"""The shipped reference checkpoints load, match their manifests and meet their bars.

`unclip-lite eval NAME` recomputes the metrics; these tests hold the acceptance bars.
"""
import json

import pytest

from unclip_lite.checkpoints import REGISTRY_DIR, list_checkpoints, load_checkpoint, read_manifest
from unclip_lite.cli import main as cli

pytestmark = pytest.mark.slow  # every test here reads the shipped checkpoints; most evaluate them

EXPECTED = ["clip-emoji-tiny", "clip-shapes-tiny", "glide-shapes-tiny", "judge-shapes", "clip-noised-shapes-tiny",
            "classifier-noised-shapes-tiny", "glide-inpaint-shapes-tiny", "glide-upsample-shapes-tiny",
            "clip-shapes-tiny-pairs", "prior-shapes-tiny", "ar-prior-shapes-tiny", "decoder-shapes-tiny",
            "upsampler-shapes-64", "upsampler-shapes-128", "vqgan-shapes-tiny", "glide-shapes-tiny-positions"]


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
    images = glide.sample(prompts, m["best_guidance"], "ddim", 25, seed=123)
    live = judge_single(load_judge(), images, colour, shape, heldout)
    assert live["all_colour"] >= 0.9 and live["all_shape"] >= 0.8, live  # 40 samples, 25 steps


def test_glide_shapes_tiny_positions_follows_the_whole_caption():
    """Issue 11's bars, on ``unclip-lite eval glide-shapes-tiny-positions --record``: prompts naming
    size and position for every colour × shape pair (held-out pairs apart), and the guidance and
    DDIM-vs-DDPM checks of the GLIDE issue, which must still hold; plus a live look at position."""
    import torch

    from unclip_lite.glide.bundle import load_glide
    from unclip_lite.judge import judge_scenes, load_judge

    manifest = read_manifest("glide-shapes-tiny-positions")
    m = manifest["metrics"]
    assert manifest["eval_command"].startswith("unclip-lite eval glide-shapes-tiny-positions")
    assert manifest["config"]["extra"]["recipe"]["init_from"] == "glide-shapes-tiny"
    assert m["per_pair"] >= 4 and m["steps"] == 50
    assert m["attr_all_position"] >= 0.80, m
    assert m["attr_all_size"] >= 0.95 and m["attr_all_colour"] >= 0.95 and m["attr_all_shape"] >= 0.90, m
    for split in ("seen", "heldout"):  # the held-out pairs are reported apart
        assert 0.0 <= m[f"attr_{split}_position"] <= 1.0
    assert m["best_all_colour"] >= 0.95 and m["best_all_shape"] >= 0.90, m
    assert abs(m["ddim_minus_ddpm_joint"]) <= 0.03, m
    assert 0.0 <= m["pairs_binding"] <= m["pairs_objects"] <= 1.0

    glide = load_glide("glide-shapes-tiny-positions")
    assert glide.model.config.unet.attention_position_gain == 10.0
    places = ["top left", "top right", "bottom left", "bottom right"]
    images = glide.sample([f"a large blue circle in the {p}" for p in places] * 2, 3.0, "ddim", 25, seed=7)
    read = judge_scenes(load_judge(), images)["position"]
    wanted = torch.tensor([1, 2, 3, 4] * 2)  # POSITION_NAMES: center, top left, top right, ...
    assert (read == wanted).float().mean() >= 0.5, read  # 8 samples; chance is 0.2


@pytest.mark.parametrize("name, kind", [("clip-noised-shapes-tiny", "clip"),
                                        ("classifier-noised-shapes-tiny", "classifier")])
def test_the_guides_read_noisy_images_and_steer_the_unconditional_model(name, kind):
    """Chapter 06's guides, on the evaluation recorded by ``unclip-lite eval NAME --record``:
    they read clean and lightly noised images, and steered by them alone the unconditional
    GLIDE draws the prompt far more often than unguided; plus a live check of the reading."""
    import torch

    from unclip_lite.clip.bundle import load_clip
    from unclip_lite.clip.noised import evaluate_noised_clip
    from unclip_lite.glide import guide_recipes
    from unclip_lite.glide.classifier import load_classifier

    manifest = read_manifest(name)
    m = manifest["metrics"]
    assert manifest["eval_command"].startswith(f"unclip-lite eval {name}")
    attrs = ("joint",) if kind == "clip" else ("colour", "shape")
    for attr in attrs:
        assert m[f"t0_{attr}"] >= 0.9 and m[f"t250_{attr}"] >= 0.8, m
    best = m[f"{kind}_best_scale"]
    assert m[f"{kind}_s{best:g}_all_joint"] == pytest.approx(m[f"{kind}_best_all_joint"], abs=1e-4)
    # steered by the guide alone, the unconditional model draws what the guide can read: the
    # classifier both attributes, the noised CLIP the colour (it reads shapes only late, at low noise)
    attr = "joint" if kind == "classifier" else "colour"
    swept = [v for k, v in m.items() if k.startswith(f"{kind}_s") and k.endswith(f"_all_{attr}")]
    assert len(swept) >= 3 and max(swept) >= m[f"cfg_g0_all_{attr}"] + 0.3, m
    for key in ("cfg_g0", "cfg_g1", "cfg_g2", f"{kind}_plus_text"):
        assert 0.0 <= m[f"{key}_all_joint"] <= 1.0

    torch.manual_seed(0)
    if kind == "clip":
        live = evaluate_noised_clip(load_clip(name), n=200, timesteps=(0, 250))
    else:
        live = guide_recipes.evaluate_classifier(load_classifier(name), n=200, timesteps=(0, 250))
    for attr in attrs:
        assert live[f"t0_{attr}"] >= 0.85 and live[f"t250_{attr}"] >= 0.75, live


def test_glide_inpaint_shapes_tiny_keeps_pixels_and_draws_the_prompt():
    """The inpainting bars: pixels outside the hole unchanged exactly, the prompted object
    drawn in the hole in >= 85% of judged samples (``unclip-lite eval glide-inpaint-shapes-tiny``)."""
    import torch

    from unclip_lite.data import shapes
    from unclip_lite.glide.bundle import load_glide

    manifest = read_manifest("glide-inpaint-shapes-tiny")
    m = manifest["metrics"]
    assert manifest["eval_command"].startswith("unclip-lite eval glide-inpaint-shapes-tiny")
    assert manifest["config"]["extra"]["recipe"]["init_from"] == "glide-shapes-tiny"
    assert m["replace_kept_exact"] and m["add_kept_exact"] and m["replace_max_outside_change"] == 0.0
    assert m["replace_joint"] >= 0.85 and m["replace_drawn"] >= 0.85, m
    assert 0.0 <= m["add_joint"] <= m["add_objects"] <= 1.0

    glide = load_glide("glide-inpaint-shapes-tiny")
    image = shapes.render(shapes.make_scenes(["red", "green"], ["circle", "square"]), 32)
    mask = torch.ones(2, 1, 32, 32)
    mask[..., 4:28, 4:28] = 0
    out = glide.sample(["a blue star", "a yellow heart"], 3.0, "ddim", 10, seed=0, inpaint=(image, mask))
    keep = mask.expand_as(image).bool()
    assert torch.equal(out[keep], image[keep]) and not torch.equal(out[~keep], image[~keep])


def test_glide_upsample_shapes_tiny_beats_bicubic_by_2_db():
    import torch

    from unclip_lite.glide.bundle import load_glide
    from unclip_lite.glide.evaluate import evaluate_upsampler

    manifest = read_manifest("glide-upsample-shapes-tiny")
    m = manifest["metrics"]
    assert manifest["eval_command"].startswith("unclip-lite eval glide-upsample-shapes-tiny")
    assert m["n"] >= 100 and m["respacing"] == "fast27"
    assert m["gain_over_bicubic_db"] >= 2.0, m
    torch.manual_seed(0)
    live = evaluate_upsampler(load_glide("glide-upsample-shapes-tiny"), n=8, progress=False)
    assert live["gain_over_bicubic_db"] >= 1.5, live  # 8 images, so a little slack


def test_clip_shapes_tiny_pairs_keeps_single_objects_and_reads_two(capsys):
    """Issue 12: the CLIP unCLIP stands on — single-object zero-shot kept, two-object captions read."""
    from unclip_lite.clip.bundle import load_clip
    from unclip_lite.clip.recipes import evaluate_pairs

    manifest = read_manifest("clip-shapes-tiny-pairs")
    m = manifest["metrics"]
    assert manifest["config"]["extra"]["recipe"]["data"]["two_object_fraction"] == 0.25
    assert m["heldout_joint"] >= 0.95 and m["seen_joint"] >= 0.98, m
    for key in ("pairs_image_to_text_R@1", "pairs_swap_colour", "pairs_swap_shape", "pairs_swap_relation"):
        assert 0.0 <= m[key] <= 1.0
    live = evaluate_pairs(load_clip("clip-shapes-tiny-pairs"), n=200)
    assert live["pairs_image_to_text_R@5"] >= 10 * 5 / 200, live  # ten times chance among 200


@pytest.mark.parametrize("name", ["prior-shapes-tiny", "ar-prior-shapes-tiny"])
def test_the_priors_are_recorded_against_their_baselines(name):
    """Issue 12, on the evaluation recorded by ``unclip-lite eval NAME --record --n 250``: every
    group measured beside z_t, the mean image and another image of the caption; the predicted
    embedding is far closer to the captioned image than the mean training image is."""
    manifest = read_manifest(name)
    m = manifest["metrics"]
    assert manifest["eval_command"].startswith(f"unclip-lite eval {name}")
    assert manifest["train_seconds"] <= 30 * 60, "must train in at most 30 minutes on the 2-core CPU"
    assert manifest["config"]["clip"]["name"] == "clip-shapes-tiny-pairs"
    assert m["n"] >= 250 and m["candidates"] == 2
    for group in ("heldout", "seen", "pairs"):
        assert m[f"{group}_cos"] > m[f"{group}_cos_mean"] + 0.3, (group, m)
        for key in ("cos_text", "cos_same_caption", "R@1", "R@5", "text_R@1", "text_R@5"):
            assert -1.0 <= m[f"{group}_{key}"] <= 1.0


def test_the_diffusion_prior_beats_the_text_embedding_and_reads_as_its_caption():
    """The diffusion prior's bars: held-out zero-shot joint of the predicted embedding >= 0.95,
    and closer to the captioned image than z_t in every group; live on two-object captions."""
    import torch

    from unclip_lite.unclip.bundle import PriorBundle
    from unclip_lite.unclip.recipes import cosine, held_out_captions

    m = read_manifest("prior-shapes-tiny")["metrics"]
    assert m["heldout_joint"] >= 0.95 and m["steps"] == 64, m
    for group in ("heldout", "seen", "pairs"):
        assert m[f"{group}_cos"] > m[f"{group}_cos_text"], (group, m)
    torch.manual_seed(0)
    prior = PriorBundle.load("prior-shapes-tiny")
    data = held_out_captions(prior.clip, "pairs", 48, seed=3)
    z = prior.sample(data["texts"], guidance=2.0, candidates=2, steps=16)
    assert cosine(z, data["z_i"]) > cosine(prior.clip.encode_texts(data["texts"]), data["z_i"])


def test_the_decoder_reads_z_i_and_is_recorded_beside_its_glide():
    """Issue 13, on ``unclip-lite eval decoder-shapes-tiny --record``: the decoder judged with z_i
    from each source beside the GLIDE it was grown from; unCLIP (the prior's z_i) draws the
    named colour and shape, held-out pairs included; and live: with the empty caption, the z_i
    of a render alone decides what is drawn, while a zero z_i leaves it to chance."""
    import torch

    from unclip_lite.glide.evaluate import judge_single, single_object_prompts
    from unclip_lite.judge import load_judge
    from unclip_lite.unclip.decoder import load_decoder
    from unclip_lite.unclip.decoder_recipes import render_embeddings

    manifest = read_manifest("decoder-shapes-tiny")
    m = manifest["metrics"]
    assert manifest["eval_command"].startswith("unclip-lite eval decoder-shapes-tiny")
    assert manifest["config"]["clip"]["name"] == "clip-shapes-tiny-pairs"
    assert manifest["train_seconds"] <= 60 * 60, "a tiny model trains in at most an hour on the 2-core CPU"
    for source in ("render", "prior", "text", "none", "render_only", "glide"):
        for key in ("all_colour_shape", "heldout_colour_shape", "all_size", "all_position", "pairs_binding"):
            assert 0.0 <= m[f"{source}_{key}"] <= 1.0, (source, key)
    # issue 13's bar, 0.95 with held-out pairs included, over all 40 pairs and the held-out ones alone
    assert m["init_from"] == "glide-shapes-tiny-positions"
    assert m["prior_all_colour_shape"] >= 0.95 and m["prior_heldout_colour_shape"] >= 0.95, m
    # the paper's Figure 8 order: the caption alone is worst, an embedding of the image best
    assert m["none_all_colour_shape"] < m["text_all_colour_shape"] <= m["prior_all_colour_shape"], m
    # CLIP's embedding carries where the object is, and the decoder draws it there from z_i alone
    # (five positions: chance is 0.2)
    assert m["render_only_all_position"] >= 0.9 and m["prior_all_position"] >= 0.9, m
    decoder = load_decoder("decoder-shapes-tiny")
    clip_bundle = load_clip_for(decoder)
    prompts, colour, shape, heldout = single_object_prompts(1)  # the 40 colour × shape pairs
    z = render_embeddings(clip_bundle)(prompts, 0)
    judge = load_judge()
    torch.manual_seed(0)
    alone = judge_single(judge, decoder.sample([""] * 40, 3.0, "ddim", 12, seed=1, image_embed=z), colour, shape, heldout)
    nothing = judge_single(judge, decoder.sample([""] * 40, 3.0, "ddim", 12, seed=1, image_embed=torch.zeros_like(z)),
                           colour, shape, heldout)
    assert alone["all_joint"] >= 0.8 and nothing["all_joint"] <= 0.2, (alone, nothing)


def load_clip_for(decoder):
    from unclip_lite.clip.bundle import load_clip

    clip_bundle = load_clip(decoder.clip_name)
    decoder.check_clip(clip_bundle)
    return clip_bundle


def test_the_cascade_beats_bicubic_and_its_corruption_is_measured():
    """Issue 13, on ``unclip-lite eval upsampler-shapes-{64,128} --record`` and data/experiments/cascade.json:
    the first stage beats bicubic on clean inputs by more than 1 dB; the second, started from the
    first's weights and fine-tuned on BSR, beats it too (by little: a fraction of a dB on clean inputs
    and on the first stage's output); both stages are measured on clean inputs and on the stage
    below's output, beside their ``-clean`` ablations."""
    for name, low, high, corruption in (("upsampler-shapes-64", 32, 64, "blur"), ("upsampler-shapes-128", 64, 128, "bsr")):
        manifest = read_manifest(name)
        assert manifest["config"]["upsampler"]["degradation"] == corruption
        assert manifest["train_seconds"] <= 60 * 60, "a tiny model trains in at most an hour on the 2-core CPU"
        m = manifest["metrics"]
        assert (m["low_res_size"], m["size"]) == (low, high) and manifest["eval_command"].startswith("unclip-lite eval")
        if name == "upsampler-shapes-64":
            assert m["clean"]["gain_over_bicubic_db"] > 1.0, m
        else:
            assert m["clean"]["gain_over_bicubic_db"] > 0 and m["below"]["gain_over_bicubic_db"] > 0, m
        assert set(m["below"]) == {"psnr_upsampler", "psnr_bicubic", "gain_over_bicubic_db"}
    cascade = json.loads((REGISTRY_DIR.parent / "experiments" / "cascade.json").read_text())
    seen = {(r["stage"], r["trained_on"], r["input"]) for r in cascade["rows"]}
    assert {(s, t, i) for s, t in (("32->64", "blur"), ("64->128", "bsr"), ("32->64", "clean"), ("64->128", "clean"))
            for i in ("clean", "below")} <= seen


def test_the_pipeline_names_the_shipped_parts_and_is_recorded():
    """``unclip-shapes-tiny`` holds no weights: its components' sha256s match the shipped files,
    and ``unclip-lite eval unclip-shapes-tiny --record`` put unCLIP beside GLIDE in its manifest."""
    from unclip_lite.unclip.pipeline import UnCLIPBundle

    manifest = read_manifest("unclip-shapes-tiny")
    assert manifest["n_params"] == 0 and manifest["command"].startswith("python -m unclip_lite.unclip.pipeline")
    components = manifest["config"]["components"]
    for part in (*components["priors"].values(), components["decoder"], *components["super_res"]):
        assert read_manifest(part["name"])["sha256"] == part["sha256"], part
    bundle = UnCLIPBundle.load("unclip-shapes-tiny")
    assert [s.config.image_size for s in bundle.model.super_res] == [64, 128]
    m = manifest["metrics"]
    for model in ("unclip", "glide"):
        row = m[model]
        for key in ("all_joint", "heldout_joint", "named_all_position", "named_all_size", "pairs_binding"):
            assert 0.0 <= row[key] <= 1.0, (model, key)
        assert row["position_entropy"] >= 0 and row["frechet_judge"] >= 0
    assert set(m["seconds_per_image"]) == {"prior", "decoder", "super_res_1", "super_res_2"}
    # issue 13's bar: colour and shape right on >= 0.95 of single objects, held-out pairs included,
    # beside the GLIDE that follows the whole caption
    assert m["settings"]["glide"] == "glide-shapes-tiny-positions"
    assert m["unclip"]["all_joint"] >= 0.95 and m["unclip"]["heldout_joint"] >= 0.95, m["unclip"]


def test_chapter_09s_manipulations_are_recorded_with_the_shipped_decoder():
    """``python -m unclip_lite.unclip.manipulate_eval --record`` stored every part chapter 09 reads,
    each with the command that made it, in the decoder's manifest; the round trip is close and
    variations at η = 0 keep what the source shows."""
    from unclip_lite.unclip.manipulate_eval import PARTS

    record = read_manifest("decoder-shapes-tiny")["manipulations"]
    assert set(PARTS) <= set(record) and set(PARTS) <= set(record["commands"]), sorted(record)
    assert all(c.startswith("python -m unclip_lite.unclip.manipulate_eval") for c in record["commands"].values())
    assert record["settings"]["n"] == 100 and record["seconds"] > 0 and "CPU" in record["hardware"]
    assert min(record["reconstruction"].values()) > 25, record["reconstruction"]  # dB, the η = 0 round trip
    assert record["variations"]["0"]["kept"] >= 0.9, record["variations"]["0"]
    for what in ("colour", "shape", "relation"):
        assert 0.0 <= record["binding_retrieval"][f"swap_{what}"] <= 1.0


def test_clipdraw_is_recorded_and_shows_the_adversarial_gap():
    """Issue 15, on ``unclip-lite eval clipdraw --record`` (40 prompts × 2 seeds, 300 steps): without
    augmentations the guide's CLIP score is higher and the judge finds the prompt less often."""
    from unclip_lite.clipdraw.bundle import ClipDrawBundle

    manifest = read_manifest("clipdraw-shapes-tiny")
    assert manifest["n_params"] == 0 and manifest["command"] == "unclip-lite compose clipdraw"
    assert read_manifest("clip-shapes-tiny")["sha256"] == manifest["config"]["components"]["clip"]["sha256"]
    ClipDrawBundle.load("clipdraw-shapes-tiny")
    m = manifest["metrics"]
    assert m["guide"] == "clip-shapes-tiny" and m["steps"] == 300 and manifest["eval_command"] == \
        "unclip-lite eval clipdraw --record --threads 1"
    augmented, plain = m["augment"], m["no_augment"]
    assert augmented["n"] == plain["n"] == 80
    assert plain["clip_score"] > augmented["clip_score"] > augmented["clip_score_init"], m
    assert plain["joint"] < augmented["joint"] or plain["shape"] < augmented["shape"], m


def test_vqgan_shapes_tiny_reconstructs_what_the_judge_reads_with_a_live_codebook():
    """Issue 15's VQGAN, on ``unclip-lite eval vqgan-shapes-tiny --record`` (256 held-out renders)."""
    manifest = read_manifest("vqgan-shapes-tiny")
    assert manifest["command"].startswith("unclip-lite train vqgan --config shapes-tiny")
    assert manifest["train_seconds"] <= 60 * 60, "a tiny model trains in at most an hour on the 2-core CPU"
    m = manifest["metrics"]
    assert m["judge_colour"] >= 0.95 and m["judge_joint"] >= 0.9 and m["psnr"] >= 27, m
    assert m["dead_codes"] <= 0.05 * m["n_codes"] and m["perplexity"] >= 0.5 * m["n_codes"], m


def test_vqgan_clip_is_recorded_on_the_prompts_and_seeds_of_clipdraw():
    from unclip_lite.vqgan.guided import VQGANClipBundle

    manifest = read_manifest("vqgan-clip-shapes-tiny")
    components = manifest["config"]["components"]
    assert {c["name"] for c in components.values()} == {"vqgan-shapes-tiny", "clip-shapes-tiny"}
    VQGANClipBundle.load("vqgan-clip-shapes-tiny")  # the components' sha256s still match
    m = manifest["metrics"]
    assert m["n"] == read_manifest("clipdraw-shapes-tiny")["metrics"]["augment"]["n"] == 80
    assert m["clip_score"] > m["clip_score_init"] and m["seconds_per_image"] > 0
    assert 0 <= m["joint"] <= min(m["colour"], m["shape"]) <= 1
