"""The unCLIP pipeline: prior -> decoder -> upsamplers, composed from checkpoints (unclip_lite.unclip.pipeline)."""
import json

import pytest
import torch

from unclip_lite import cli
from unclip_lite.unclip.pipeline import UnCLIP, UnCLIPBundle, compose_unclip, load_unclip
from unclip_lite.unclip.upsampler import Upsampler, UpsamplerBundle, UpsamplerConfig

FAST = dict(prior_num_inference_steps=2, decoder_num_inference_steps=2, super_res_num_inference_steps=2)


def tiny_stage(path, low, high):
    torch.manual_seed(low)
    bundle = UpsamplerBundle(Upsampler(UpsamplerConfig(low, high, model_channels=8, channel_mult=(1, 2),
                                                       num_res_blocks=1)))
    return str(bundle.save(path))


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    d = tmp_path_factory.mktemp("unclip")
    stages = (tiny_stage(d / "up64.safetensors", 32, 64), tiny_stage(d / "up128.safetensors", 64, 128))
    return compose_unclip(d / "unclip.safetensors", super_res=stages), stages


def test_the_pipeline_draws_every_stage_seeded_and_reranks(composed):
    pipe = load_unclip(composed[0])
    out = pipe(["a red star", "a blue circle"], num_images_per_prompt=2, seed=3, **FAST)
    assert [s.shape[-1] for s in out.stages] == [32, 64, 128] and out.images.shape == (4, 3, 128, 128)
    assert out.image_embeds.shape == (4, pipe.clip.dim) and out.clip_scores.shape == (4,)
    assert set(out.seconds_per_image) == {"prior", "decoder", "super_res_1", "super_res_2"}
    again = pipe(["a red star", "a blue circle"], num_images_per_prompt=2, seed=3, **FAST)
    assert torch.equal(out.images, again.images)
    # reranking keeps, of 3 draws, the one with the best CLIP score: never worse than the first draw
    one = pipe("a green heart", seed=0, num_stages=0, **FAST)
    best = pipe("a green heart", seed=0, num_stages=0, rerank=3, **FAST)
    assert best.images.shape == (1, 3, 32, 32) and best.clip_scores[0] >= one.clip_scores[0] - 1e-6
    assert torch.allclose(best.clip_scores, pipe.clip_scores(best.images, ["a green heart"]), atol=1e-5)


def test_the_ar_prior_swaps_in(composed):
    pipe = load_unclip(composed[0], prior="ar")
    assert type(pipe.prior).__name__ == "ARPriorBundle"
    assert pipe("a red star", num_stages=1, **FAST).images.shape == (1, 3, 64, 64)


@pytest.mark.parametrize("kwargs, match", [
    (dict(decoder_guidance_scale=-1.0), "decoder_guidance_scale"), (dict(prior_guidance_scale=99.0), "guidance"),
    (dict(rerank=0), "rerank"), (dict(num_images_per_prompt=1.5), "num_images_per_prompt"),
    (dict(num_stages=3), "has 2 upsamplers"), (dict(super_res_num_inference_steps="fast9999"), "super_res"),
    (dict(decoder_num_inference_steps=5000), "steps"), (dict(prompt="a " * 60 + "star"), "long"),
    (dict(prompt=[]), "at least one prompt"),
])
def test_bad_knobs_are_refused_before_any_sampling(composed, kwargs, match, monkeypatch):
    pipe = load_unclip(composed[0])
    monkeypatch.setattr(type(pipe.prior), "draw", lambda *a, **k: pytest.fail("sampled before checking"))
    kwargs = {"prompt": "a red star", **kwargs}
    with pytest.raises(ValueError, match=match):
        pipe(**kwargs)


def test_parts_that_do_not_fit_are_refused(composed):
    pipe = load_unclip(composed[0])
    with pytest.raises(ValueError, match="upsampler 1 takes 64 px"):
        UnCLIP(pipe.prior, pipe.decoder, pipe.super_res[::-1])
    other = UnCLIPBundle.load(composed[0]).model
    other.prior.clip = type(other.prior.clip).load("clip-shapes-tiny")  # not the decoder's CLIP
    with pytest.raises(ValueError, match="this decoder reads embeddings of"):
        UnCLIP(other.prior, pipe.decoder, pipe.super_res)


def test_a_component_retrained_since_composing_is_refused(composed, tmp_path):
    path, stages = composed
    manifest = json.loads(path.with_suffix(".json").read_text())
    manifest["config"]["components"]["super_res"][0]["sha256"] = "0" * 64
    with pytest.raises(ValueError, match="component .*up64.* was composed with 000000"):
        UnCLIPBundle.from_config(manifest["config"])


def test_cli_sample_unclip_writes_a_grid(composed, tmp_path, capsys):
    out = tmp_path / "grid.png"
    args = ["sample", "unclip", "--checkpoint", str(composed[0]), "--prompt", "a red star", "--n", "2",
            "--steps", "2", "--prior-steps", "2", "--respacing", "2", "--prior", "ar", "--out", str(out)]
    assert cli.main(args) == 0 and out.is_file()
    assert "seconds per image: prior" in capsys.readouterr().err
    assert cli.main(args[:-2] + ["--guidance", "-3", "--out", str(tmp_path / "bad.png")]) == 2
    assert not (tmp_path / "bad.png").exists()


def test_frechet_distance_matches_the_closed_form_and_an_independent_route():
    from unclip_lite.unclip.compare import frechet_distance
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    b = torch.randn(4000, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64) + 1
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    mu = a.mean(0) - b.mean(0)
    # tr sqrt(Σa Σb) from the eigenvalues of the (non-symmetric) product: an independent route
    cross = torch.linalg.eigvals(ca @ cb).real.clamp(min=0).sqrt().sum()
    expected = float(mu @ mu + ca.trace() + cb.trace() - 2 * cross)
    assert abs(frechet_distance(a, b) - expected) < 1e-6
    # population values: diagonal Gaussians, Σ (σa - σb)² + |Δμ|² = 1 + 1 + 0 + 3 = 5
    assert abs(frechet_distance(a, b) - 5.0) < 0.3
    assert abs(frechet_distance(a, a)) < 1e-8
    with pytest.raises(ValueError, match="feature matrices"):
        frechet_distance(a, b[:, :2])


def test_diversity_measures_on_known_cases():
    from unclip_lite.unclip.compare import entropy_bits, mean_pairwise_distance
    assert entropy_bits(torch.tensor([0, 0, 0, 0]), 5) == 0.0
    assert abs(entropy_bits(torch.tensor([0, 1, 2, 3]), 5) - 2.0) < 1e-12
    images = torch.stack([torch.zeros(3, 2, 2), torch.ones(3, 2, 2), torch.zeros(3, 2, 2)])
    # pairs (0,1) and (1,2) are 1 apart, (0,2) 0: mean over the 6 ordered pairs = 4/6
    assert abs(mean_pairwise_distance(images) - 4 / 6) < 1e-12


@pytest.mark.slow
def test_the_comparison_runs_end_to_end_on_a_tiny_budget(composed):
    from unclip_lite.unclip.compare import evaluate_unclip
    metrics = evaluate_unclip(UnCLIPBundle.load(composed[0]), guidances=(1.0, 3.0), per_pair=1, seeds=2,
                              n_diversity=2, pairs_n=2, steps=2, prior_steps=2)
    for row in (metrics["unclip"], metrics["glide"]):
        assert set(row["sweep"]) == {"1", "3"} and row["best_guidance"] in (1.0, 3.0)
        assert 0 <= row["all_joint"] <= 1 and 0 <= row["position_entropy"] <= 1.0 + 1e-9  # 2 seeds: ≤ 1 bit
        assert row["frechet_judge"] >= 0 and "pairs_binding" in row and "named_all_position" in row
    assert metrics["matched"]["glide_guidance"] in (1.0, 3.0)
    assert set(metrics["seconds_per_image"]) == {"prior", "decoder", "super_res_1", "super_res_2"}


def test_the_paper_system_is_about_six_and_a_half_billion():
    from unclip_lite.unclip.pipeline import paper_system_parameters
    parts = paper_system_parameters()
    paper = {"clip_image": 632e6, "clip_text": 340e6, "prior": 1e9, "decoder": 3.5e9,
             "upsampler_64->256": 700e6, "upsampler_256->1024": 300e6}
    for name, size in paper.items():  # each part within 6% of the paper's figure (text: our 49k-token embedding)
        assert abs(parts[name] / size - 1) < 0.06, (name, parts[name])
    assert abs(parts["total"] / 6.5e9 - 1) < 0.03 and parts["total"] == sum(parts[k] for k in paper)
