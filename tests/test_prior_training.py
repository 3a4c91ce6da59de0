"""Issue 12: the diffusion prior's conditioning, loss, sampling, keep-best, checkpoint and bad input,
checked against naive re-computations; and the Shapes helpers it is judged with."""
import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_clip
from unclip_lite.clip.recipes import evaluate_pairs, swapped
from unclip_lite.data import shapes
from unclip_lite.diffusion import GaussianDiffusion
from unclip_lite.tokenizer import UnknownWordError
from unclip_lite.unclip.ar_prior import (ARPrior, ARPriorConfig, choose_components, dequantise, fit_pca,
                                         pca_error_curve, quantise, top_half)
from unclip_lite.unclip.bundle import ARPriorBundle, PriorBundle, caption_conditioning, keep_best
from unclip_lite.unclip.prior import DiffusionPrior, PriorConfig
from unclip_lite.unclip.recipes import (PriorData, PriorRecipe, ar_prior_loss, embedding_pool, prior_batches,
                                       prior_loss, shapes_stream)


def tiny_prior(clip, scaling="standardise", seed=0) -> PriorBundle:
    clip.manifest = {"sha256": "c1" * 32}
    torch.manual_seed(seed)
    cfg = PriorConfig(embed_dim=clip.dim, text_width=clip.model.config.text.width,
                      context_length=clip.context_length, width=32, layers=2, heads=4, scaling=scaling)
    model = DiffusionPrior(cfg)
    with torch.no_grad():
        model.out_proj.weight.normal_(std=0.5)
    model.set_statistics(torch.randn(64, clip.dim) * 0.1 + 0.05)
    return PriorBundle(model.eval(), "tiny-clip", "c1" * 32).attach_clip(clip)


def test_caption_conditioning_reads_the_clip_and_masks_after_the_end_token():
    clip = tiny_clip(noised=False)
    texts = ["a red star", "a small blue circle in the top left"]
    cond = caption_conditioning(clip, texts)
    tokens = clip.tokenize(texts)
    assert torch.allclose(cond["text_embed"], clip.encode_texts(texts), atol=1e-6)
    assert torch.allclose(cond["text_tokens"], clip.model.text.forward_tokens(tokens), atol=1e-6)
    for row, mask in zip(tokens.tolist(), cond["text_mask"].tolist()):  # a naive loop
        end = row.index(clip.vocab.EOT)
        assert mask == [i <= end for i in range(len(row))]
    with pytest.raises(UnknownWordError):
        caption_conditioning(clip, ["a red zeppelin"])
    with pytest.raises(ValueError, match="over the limit of context_length=16"):
        caption_conditioning(clip, ["a red star " * 8])
    with pytest.raises(ValueError, match="at least one"):
        caption_conditioning(clip, [])


def test_dropped_captions_are_the_null_conditioning_and_stay_finite():
    clip = tiny_clip(noised=False)
    prior = tiny_prior(clip)
    cond = caption_conditioning(clip, ["a red star", "a blue heart", "a green square"])
    drop = torch.tensor([False, True, False])
    dropped = DiffusionPrior.drop_text(cond, drop)
    null = DiffusionPrior.null_conditioning(**cond)
    for k in cond:
        assert torch.equal(dropped[k][0], cond[k][0]) and torch.equal(dropped[k][2], cond[k][2])
        assert torch.equal(dropped[k][1], null[k][1])
    assert dropped["text_mask"][1].tolist() == [True] + [False] * (clip.context_length - 1)
    out = prior.model(torch.randn(3, clip.dim), torch.tensor([5, 500, 999]), **dropped)
    assert torch.isfinite(out).all()


def test_the_loss_is_the_x0_mse_in_the_diffusion_space():
    clip = tiny_clip(noised=False)
    prior = tiny_prior(clip)
    z_i = F.normalize(torch.randn(4, clip.dim), dim=-1)
    cond = caption_conditioning(clip, ["a red star"] * 4)
    torch.manual_seed(3)
    loss, _ = prior_loss(prior.diffusion)(prior.model, (z_i, cond, torch.zeros(4, dtype=torch.bool)))
    torch.manual_seed(3)  # the same t and noise, by hand
    diffusion = GaussianDiffusion.from_schedule("cosine", 1000, parameterization="x0")
    t = torch.randint(0, 1000, (4,))
    x0 = (z_i - prior.model.clip_mean) / prior.model.clip_std
    noise = torch.randn_like(x0)
    ab = diffusion.alphas_cumprod[t].float()[:, None]
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    expected = ((prior.model(xt, t, **cond) - x0) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("scaling", ["scale", "standardise"])
def test_the_diffusion_space_round_trips(scaling):
    prior = tiny_prior(tiny_clip(noised=False), scaling)
    z = F.normalize(torch.randn(5, prior.dim), dim=-1)
    x = prior.model.to_diffusion_space(z)
    assert torch.allclose(prior.model.from_diffusion_space(x), z, atol=1e-6)
    if scaling == "scale":
        assert torch.allclose(x, 17.2 * z)


def test_keep_best_matches_a_loop_and_rejects_bad_shapes():
    g = torch.Generator().manual_seed(0)
    candidates, z_t = torch.randn(6, 3, 8, generator=g), torch.randn(6, 8, generator=g)
    best = keep_best(candidates, z_t)
    for b in range(6):
        scores = [float(candidates[b, j] @ z_t[b]) for j in range(3)]
        assert torch.equal(best[b], candidates[b, scores.index(max(scores))])
    with pytest.raises(ValueError, match="candidates must be"):
        keep_best(candidates[:, 0], z_t)
    with pytest.raises(ValueError, match="candidates must be"):
        keep_best(candidates, z_t[:5])


def test_sampling_reproduces_keeps_the_best_candidate_and_checks_its_knobs():
    clip = tiny_clip(noised=False)
    prior = tiny_prior(clip)
    texts = ["a red star", "a blue circle to the left of a green heart"]
    z = prior.sample(texts, guidance=2.0, candidates=3, steps=4, seed=1)
    assert z.shape == (2, clip.dim) and torch.allclose(z.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.equal(z, prior.sample(texts, guidance=2.0, candidates=3, steps=4, seed=1))
    assert not torch.equal(z, prior.sample(texts, guidance=2.0, candidates=3, steps=4, seed=2))
    for kwargs, message in [({"guidance": -1.0}, "guidance"), ({"guidance": 51.0}, "guidance"),
                            ({"candidates": 0}, "candidates"), ({"candidates": 1.5}, "candidates"),
                            ({"steps": 0}, "steps"), ({"steps": 1001}, "steps")]:
        with pytest.raises(ValueError, match=message):
            prior.sample(texts, **kwargs)


def test_embeddings_of_the_wrong_width_are_refused():
    prior = tiny_prior(tiny_clip(noised=False))
    with pytest.raises(ValueError, match=r"\[B, 32\]"):
        prior.model.set_statistics(torch.randn(10, 16))
    cond = caption_conditioning(prior.clip, ["a red star"])
    with pytest.raises(ValueError, match="z_noisy must be"):
        prior.model(torch.randn(1, 31), torch.tensor([3]), **cond)


def test_a_prior_refuses_a_clip_it_was_not_trained_on_and_round_trips(tmp_path):
    clip = tiny_clip(noised=False)
    prior = tiny_prior(clip)
    other = tiny_clip(noised=False)
    other.manifest = {"sha256": "ff" * 32}
    with pytest.raises(ValueError, match="trained on the embeddings of 'tiny-clip'"):
        prior.attach_clip(other)
    path = prior.save(tmp_path / "prior.safetensors", manifest={"command": "test"})
    loaded = PriorBundle.load(path, clip=clip)
    assert loaded.clip_name == "tiny-clip" and torch.equal(loaded.model.clip_std, prior.model.clip_std)
    texts = ["a pink heart"]
    assert torch.equal(loaded.sample(texts, steps=3), prior.sample(texts, steps=3))
    with pytest.raises(ValueError, match="sha256"):
        PriorBundle.load(path, clip=other)


def test_training_batches_are_a_pure_function_of_the_index_and_drop_a_tenth():
    clip = tiny_clip(noised=False)
    batches = prior_batches(clip, PriorData(batch_size=200, text_drop=0.1))
    z_a, cond_a, drop_a = batches(3)
    z_b, cond_b, drop_b = batches(3)
    assert torch.equal(z_a, z_b) and all(torch.equal(cond_a[k], cond_b[k]) for k in cond_a)
    assert torch.equal(drop_a, drop_b) and torch.equal((cond_a["text_embed"] == 0).all(1), drop_a)
    assert 5 <= int(drop_a.sum()) <= 40
    assert PriorRecipe().clip == "clip-shapes-tiny-pairs"  # the CLIP that has seen two-object scenes


def test_pooled_batches_draw_from_examples_the_clip_encoded_once():
    clip = tiny_clip(noised=False)
    data = PriorData(batch_size=16, pool=40, two_object_fraction=0.25)
    pool = embedding_pool(clip, data)
    images, texts, _ = shapes_stream(clip, data).batch(0)  # the pool is the stream's first batches
    assert pool["z_i"].shape == (40, clip.dim)
    assert torch.allclose(pool["z_i"][:16], clip.encode_images(images), atol=1e-6)
    assert torch.allclose(pool["text_embed"][:16], clip.encode_texts(texts), atol=1e-6)
    batches = prior_batches(clip, data)
    z, cond, drop = batches(5)
    z_again, _, _ = batches(5)
    assert torch.equal(z, z_again) and z.shape == (16, clip.dim)
    rows = [int(((pool["z_i"] - row).abs().sum(1) < 1e-6).nonzero()[0]) for row in z]  # each a pool row
    kept = ~drop
    assert torch.equal(cond["text_tokens"][kept], pool["text_tokens"][torch.tensor(rows)][kept])


def test_scenes_for_captions_keep_what_each_caption_states():
    for objects in (1, 2):
        scenes = shapes.sample_scenes(40, 5, n_objects=objects)
        texts = shapes.captions(scenes, 5)
        again = shapes.scenes_for_captions(texts, 6)
        for text, label in zip(texts, again.labels()):
            stated, drawn = shapes.parse_caption(text), label
            for a, b in zip(stated["objects"], drawn["objects"]):
                assert all(b[key] == value for key, value in a.items()), (text, label)
            assert stated.get("position", drawn.get("position")) == drawn.get("position")
            assert stated.get("relation") == drawn.get("relation")
    with pytest.raises(ValueError, match="different numbers of objects"):
        shapes.scenes_for_captions(["a red star", "a red star above a blue heart"])
    with pytest.raises(ValueError, match="colour and a shape"):
        shapes.scenes_for_captions(["a large star"])


def test_swapped_scenes_swap_one_thing_and_evaluate_pairs_is_at_chance_for_an_untrained_clip():
    scenes = shapes.sample_scenes(12, 1, n_objects=2)
    for what in ("colour", "shape"):
        s = swapped(scenes, what)
        assert torch.equal(getattr(s, what)[:, 0], getattr(scenes, what)[:, 1])
    s = swapped(scenes, "relation")
    names = shapes.RELATION_NAMES
    opposite = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below",
                "below": "above"}
    assert [names[i] for i in s.relation] == [opposite[names[i]] for i in scenes.relation]
    metrics = evaluate_pairs(tiny_clip(noised=False), n=64)
    assert set(metrics) >= {"pairs_swap_colour", "pairs_swap_shape", "pairs_swap_relation", "pairs_image_to_text_R@1"}
    assert all(0 <= v <= 1 for v in metrics.values())


# ----------------------------------------------------------------------------- the AR prior

def embeddings(n=400, E=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -2, E)  # a few strong directions, many weak ones
    basis = torch.linalg.qr(torch.randn(E, E, generator=g))[0]
    return F.normalize((torch.randn(n, E, generator=g) * scales) @ basis + 0.3, dim=-1)


def test_pca_error_curve_matches_projecting_and_reconstructing():
    z = embeddings()
    mean, components, eigenvalues = fit_pca(z)
    assert torch.allclose(components @ components.T, torch.eye(32), atol=1e-4)
    assert (eigenvalues[:-1] >= eigenvalues[1:]).all()
    errors = pca_error_curve(eigenvalues)
    for k in (0, 1, 5, 17, 32):
        kept = components[:k]
        reconstructed = mean + ((z - mean) @ kept.T) @ kept
        naive = ((z - reconstructed) ** 2).sum(1).mean()
        assert errors[k].item() == pytest.approx(naive.item(), abs=1e-5)
    k = choose_components(errors, 0.01)
    assert errors[k] < 0.01 <= errors[k - 1]
    with pytest.raises(ValueError, match="no number of components"):
        choose_components(errors, -1.0)


def test_buckets_round_trip_within_half_a_bin_and_match_a_loop():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(50, 3, generator=g) * 4 - 2
    low, high = torch.tensor([-2.0, -1.0, -3.0]), torch.tensor([2.0, 1.0, 3.0])
    codes = quantise(values, low, high, 8)
    for i in range(50):
        for j in range(3):
            width = float(high[j] - low[j]) / 8
            expected = min(max(int((float(values[i, j]) - float(low[j])) // width), 0), 7)
            assert int(codes[i, j]) == expected
    inside = (values >= low) & (values <= high)
    error = (dequantise(codes, low, high, 8) - values).abs()
    assert (error[inside] <= ((high - low) / 16).expand_as(values)[inside] + 1e-6).all()


def test_top_half_keeps_the_highest_bins_holding_half_the_mass():
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.25, 0.15], [0.7, 0.1, 0.1, 0.05, 0.05]])
    got = top_half(probs)
    # row 0: from the top 0.15, 0.40, 0.70 -> the top three bins; row 1: everything down to bin 0
    assert torch.allclose(got[0], torch.tensor([0, 0, 0.3, 0.25, 0.15]) / 0.7)
    assert torch.allclose(got[1], probs[1])


def tiny_ar_prior(clip, components=6, buckets=16) -> ARPriorBundle:
    clip.manifest = {"sha256": "c1" * 32}
    torch.manual_seed(0)
    cfg = ARPriorConfig(embed_dim=clip.dim, text_width=clip.model.config.text.width,
                        context_length=clip.context_length, components=components, buckets=buckets, dot_buckets=8,
                        width=32, layers=2, heads=4)
    model = ARPrior(cfg)
    model.set_codec(embeddings(200, clip.dim), embeddings(200, clip.dim, seed=1))
    return ARPriorBundle(model.eval(), "tiny-clip", "c1" * 32).attach_clip(clip)


def test_ar_prior_predicts_each_code_from_the_codes_before_it_only():
    clip = tiny_clip(noised=False)
    prior = tiny_ar_prior(clip)
    cond = caption_conditioning(clip, ["a red star", "a blue heart above a green circle"])
    codes = torch.randint(0, 16, (2, 6))
    dot = torch.tensor([3, 5])
    dot_logits, logits = prior.model(codes, dot, **cond)
    assert dot_logits.shape == (2, 8) and logits.shape == (2, 6, 16)
    for j in range(6):
        changed = codes.clone()
        changed[:, j:] = (changed[:, j:] + 7) % 16
        _, again = prior.model(changed, dot, **cond)
        assert torch.allclose(again[:, :j + 1], logits[:, :j + 1], atol=1e-5)  # code j sees codes < j
        if j + 1 < 6:
            assert not torch.allclose(again[:, j + 1], logits[:, j + 1])
    other_dot, _ = prior.model(codes, dot + 1, **cond)
    assert torch.allclose(other_dot, dot_logits, atol=1e-6)  # the dot token is predicted before it is read
    short_dot, short = prior.model(codes[:, :2], dot, **cond)
    assert torch.allclose(short, logits[:, :3], atol=1e-5) and torch.allclose(short_dot, dot_logits, atol=1e-5)


def test_ar_prior_loss_is_the_mean_cross_entropy_of_its_k_plus_one_predictions():
    clip = tiny_clip(noised=False)
    prior = tiny_ar_prior(clip)
    z_i = embeddings(4, clip.dim, seed=3)
    cond = caption_conditioning(clip, ["a red star"] * 4)
    drop = torch.tensor([False, True, False, False])
    loss, _ = ar_prior_loss(prior.model, (z_i, DiffusionPrior.drop_text(cond, drop), drop))
    codes, dot = prior.model.encode(z_i), prior.model.dot_token(z_i, cond["text_embed"])
    dropped = DiffusionPrior.drop_text(cond, drop)
    code_losses, dot_losses = [], []
    for b in range(4):  # a loop over examples and positions
        one = {k: v[b:b + 1] for k, v in dropped.items()}
        dot_b = torch.tensor([8 if drop[b] else int(dot[b])])  # 8: the "none" token of a dropped caption
        dot_logits, logits = prior.model(codes[b:b + 1], dot_b, **one)
        code_losses += [F.cross_entropy(logits[0, j:j + 1], codes[b, j:j + 1]).item() for j in range(6)]
        if not drop[b]:
            dot_losses.append(F.cross_entropy(dot_logits, dot_b).item())
    expected = (6 * sum(code_losses) / len(code_losses) + sum(dot_losses) / len(dot_losses)) / 7
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_ar_prior_samples_reproduce_round_trip_and_check_their_knobs(tmp_path):
    clip = tiny_clip(noised=False)
    prior = tiny_ar_prior(clip)
    texts = ["a red star", "a blue circle to the left of a green heart"]
    z = prior.sample(texts, guidance=2.0, candidates=2, seed=4)
    assert z.shape == (2, clip.dim) and torch.allclose(z.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.equal(z, prior.sample(texts, guidance=2.0, candidates=2, seed=4))
    path = prior.save(tmp_path / "ar.safetensors", manifest={"command": "test"})
    loaded = ARPriorBundle.load(path, clip=clip)
    assert torch.equal(loaded.sample(texts, seed=4), prior.sample(texts, seed=4))
    for kwargs, message in [({"guidance": 60.0}, "guidance"), ({"candidates": 0}, "candidates"),
                            ({"temperature": 0.0}, "temperature")]:
        with pytest.raises(ValueError, match=message):
            prior.sample(texts, **kwargs)


def test_ar_prior_config_refuses_impossible_codecs():
    with pytest.raises(ValueError, match="cannot keep 40 principal components of a 32-d"):
        ARPriorConfig(embed_dim=32, components=40)
    with pytest.raises(ValueError, match="at least 2 buckets"):
        ARPriorConfig(embed_dim=32, components=4, buckets=1)
