"""Issue 12 (first part): the diffusion prior network, its causal sequence, its presets and its
conversion to and from diffusers' PriorTransformer (the independent reference)."""
import pytest
import torch
from diffusers import PriorTransformer

from unclip_lite.unclip import DiffusionPrior, PriorConfig, causal_mask, count_parameters, get_prior_config
from unclip_lite.unclip.convert import (config_from_diffusers, diffusers_config, from_diffusers_state_dict,
                                        load_diffusers_prior, to_diffusers_state_dict)

TINY = dict(embed_dim=16, context_length=6, width=32, layers=2, heads=4)


def inputs(cfg: PriorConfig, B: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, cfg.context_length, dtype=torch.bool)
    mask[0, 4:] = False  # a short caption: padding at the end
    mask[1, 2:] = False
    return (torch.randn(B, cfg.embed_dim, generator=g), torch.tensor([0, 500, 999])[:B].float(),
            torch.randn(B, cfg.embed_dim, generator=g), torch.randn(B, cfg.context_length, cfg.text_width, generator=g),
            mask)


def randomised(prior: DiffusionPrior, seed: int = 1) -> DiffusionPrior:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in prior.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        prior.clip_mean.normal_(generator=g)
        prior.clip_std.uniform_(0.5, 2.0, generator=g)
    return prior.eval()


def test_causal_mask_matches_a_naive_loop():
    text_mask = torch.tensor([[True, True, False], [True, True, True]])
    got = causal_mask(text_mask)
    assert got.shape == (2, 1, 7, 7)
    for b in range(2):
        for i in range(7):
            for j in range(7):
                visible = j <= i and (j >= 3 or bool(text_mask[b, j]))
                assert bool(got[b, 0, i, j]) == visible, (b, i, j)


def test_the_prediction_ignores_caption_padding_and_reads_every_real_input():
    prior = randomised(DiffusionPrior(PriorConfig(**TINY)))
    z, t, zt, tokens, mask = inputs(prior.config)
    with torch.no_grad():
        out = prior(z, t, zt, tokens, mask)
        assert out.shape == (3, 16)
        padded = tokens.clone()
        padded[0, 4:] += 10.0  # padding of example 0 only
        assert torch.equal(prior(z, t, zt, padded, mask)[0], out[0])
        assert not torch.allclose(prior(z + 1, t, zt, tokens, mask), out)  # the noised image embedding
        assert not torch.allclose(prior(z, t, zt + 1, tokens, mask), out)  # the text embedding
        assert not torch.allclose(prior(z, t + 1, zt, tokens, mask), out)
        real = tokens.clone()
        real[2, 0] += 1.0
        assert not torch.allclose(prior(z, t, zt, real, mask)[2], out[2])


@pytest.mark.parametrize("norms", [False, True])
def test_the_prior_agrees_with_diffusers_prior_transformer_both_ways(norms):
    cfg = PriorConfig(**TINY, norm_in=norms, text_embed_norm=norms, time_embed_dim=48)
    ours = randomised(DiffusionPrior(cfg))
    theirs = PriorTransformer(**diffusers_config(cfg)).eval()
    missing, unexpected = theirs.load_state_dict(to_diffusers_state_dict(ours), strict=False)
    assert not missing and not unexpected
    z, t, zt, tokens, mask = inputs(cfg)
    with torch.no_grad():
        want = theirs(z, t, zt, encoder_hidden_states=tokens, attention_mask=mask).predicted_image_embedding
        got = ours(z, t, zt, tokens, mask)
        back = from_diffusers_state_dict(theirs.state_dict(), cfg).eval()(z, t, zt, tokens, mask)
    assert (got - want).abs().max() < 1e-5
    assert (back - want).abs().max() < 1e-5
    assert torch.equal(theirs.clip_std[0], ours.clip_std)  # Karlo's statistics travel too


def test_a_local_diffusers_folder_loads_without_a_download(tmp_path):
    cfg = PriorConfig(**TINY)
    theirs = PriorTransformer(**diffusers_config(cfg)).eval()
    theirs.load_state_dict(to_diffusers_state_dict(randomised(DiffusionPrior(cfg))), strict=False)
    theirs.save_pretrained(tmp_path, safe_serialization=True)
    loaded = load_diffusers_prior(tmp_path)
    z, t, zt, tokens, mask = inputs(cfg)
    with torch.no_grad():
        want = theirs(z, t, zt, encoder_hidden_states=tokens, attention_mask=mask).predicted_image_embedding
        assert (loaded(z, t, zt, tokens, mask) - want).abs().max() < 1e-5
    with pytest.raises(FileNotFoundError, match="not a diffusers PriorTransformer folder"):
        load_diffusers_prior(tmp_path / "nowhere")


def test_karlo_config_has_diffusers_weight_count_and_the_paper_prior_is_1b():
    karlo = get_prior_config("karlo")
    assert diffusers_config(karlo)["num_layers"] == 20 and config_from_diffusers(diffusers_config(karlo)) == karlo
    with torch.device("meta"):
        ours = DiffusionPrior(karlo)
        theirs = PriorTransformer(**diffusers_config(karlo))
        paper = DiffusionPrior(get_prior_config("paper-1b"))
    numel = lambda m: sum(v.numel() for v in m.state_dict().values())  # noqa: E731 (weights and statistics)
    assert numel(ours) == numel(theirs)
    assert all(p.is_meta for p in paper.parameters())
    assert abs(count_parameters(paper) - 1e9) / 1e9 < 0.05, count_parameters(paper)


def test_both_scalings_round_trip_and_standardise_uses_the_statistics():
    z = torch.nn.functional.normalize(torch.randn(200, 16), dim=-1) + torch.linspace(-0.2, 0.2, 16)
    scaled = DiffusionPrior(PriorConfig(**TINY, scaling="scale"))
    assert torch.allclose(scaled.to_diffusion_space(z), 17.2 * z)
    standard = DiffusionPrior(PriorConfig(**TINY, scaling="standardise"))
    standard.set_statistics(z)
    x = standard.to_diffusion_space(z)
    assert torch.allclose(x.mean(0), torch.zeros(16), atol=1e-5) and torch.allclose(x.std(0), torch.ones(16), atol=1e-4)
    for prior in (scaled, standard):
        assert torch.allclose(prior.from_diffusion_space(prior.to_diffusion_space(z)), z, atol=1e-6)


def test_bad_inputs_get_clear_errors():
    prior = DiffusionPrior(PriorConfig(**TINY))
    z, t, zt, tokens, mask = inputs(prior.config)
    with pytest.raises(ValueError, match=r"\[B, 16\]"):
        prior(torch.randn(3, 15), t, zt, tokens, mask)
    with pytest.raises(ValueError, match="text_tokens"):
        prior(z, t, zt, tokens[:, :5], mask[:, :5])
    with pytest.raises(ValueError, match="at least 2"):
        prior.set_statistics(z[:1])
    with pytest.raises(ValueError, match="scaling"):
        PriorConfig(**TINY, scaling="unit")
    with pytest.raises(ValueError, match="divisible"):
        PriorConfig(embed_dim=16, width=30, heads=4)
    with pytest.raises(ValueError, match="as wide as the embedding"):
        diffusers_config(PriorConfig(**TINY, text_width=24))
    with pytest.raises(ValueError, match="no equivalent"):
        config_from_diffusers({**diffusers_config(PriorConfig(**TINY)), "added_emb_type": None})
