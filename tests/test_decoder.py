"""unCLIP's decoder (§2.1): gated image tokens, the exact warm start from a GLIDE, the dual
dropout, guidance over (caption, z_i), checkpoints, and bad input."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_bundle, unzero_
from unclip_lite.clip.bundle import load_clip
from unclip_lite.diffusion.config import DiffusionConfig
from unclip_lite.glide.recipes import warm_start
from unclip_lite.glide.text2im import Text2ImConfig, get_text2im_config
from unclip_lite.kinds import load_bundle
from unclip_lite.unclip.decoder import Decoder, DecoderBundle, DecoderConfig, load_decoder, paper_decoder_config
from unclip_lite.unclip.decoder_recipes import DecoderRecipe, decoder_batches, new_decoder
from unclip_lite.unet_attention import gated_attention


def naive_attention(q, k, v, weight):
    """softmax with each key's unnormalised weight scaled by ``weight`` [K] — a plain loop."""
    B, H, N, d = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(N):
                w = torch.stack([weight[j] * torch.exp(q[b, h, i] @ k[b, h, j] / d ** 0.5) for j in range(k.shape[2])])
                out[b, h, i] = (w[:, None] * v[b, h]).sum(0) / w.sum()
    return out


def test_gated_attention_matches_a_loop_and_its_two_ends_are_known():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    gate = torch.tensor([0.5, 2.0])
    out = gated_attention(q, k, v, None, gate, 2)
    for h in range(2):
        ref = naive_attention(q[:, h:h + 1], k[:, h:h + 1], v[:, h:h + 1], torch.tensor([gate[h]] * 2 + [1.0] * 3))
        torch.testing.assert_close(out[:, h:h + 1], ref, atol=1e-5, rtol=1e-5)
    # gate 1: plain attention over every key; gate 0: as if the first two keys were not there
    torch.testing.assert_close(gated_attention(q, k, v, None, torch.ones(2), 2), F.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(gated_attention(q, k, v, None, torch.zeros(2), 2),
                               F.scaled_dot_product_attention(q, k[:, :, 2:], v[:, :, 2:]))
    # a negative gate counts as 0 going forward, but its gradient still flows (it can come back)
    g = torch.tensor([-1.0, 0.0], requires_grad=True)
    torch.testing.assert_close(gated_attention(q, k, v, None, g, 2), gated_attention(q, k, v, None, torch.zeros(2), 2))
    gated_attention(q, k, v, None, g, 2).square().sum().backward()
    assert (g.grad != 0).all()


def tiny_decoder(seed: int = 0) -> tuple[Decoder, object]:
    glide = tiny_bundle(seed)
    decoder = Decoder(DecoderConfig(Text2ImConfig.from_dict(glide.model.config.to_dict()), clip_dim=16))
    added = warm_start(decoder, glide.model.state_dict(), gated=("image_to_tokens.",))
    assert {"image_to_cond.weight", "image_to_tokens.weight"} <= set(added)
    assert any(name.endswith("token_gate") for name in added)
    return decoder.eval(), glide


def test_a_warm_started_decoder_computes_exactly_what_its_glide_does_until_it_learns():
    decoder, glide = tiny_decoder()
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([5, 10, 19])
    tokens = glide.tokenize(["a red star", "a blue circle in the top left", "a small green square"])
    z = F.normalize(torch.randn(3, 16), dim=-1)
    with torch.no_grad():
        reference = glide.model(x, t, tokens)
        torch.testing.assert_close(decoder(x, t, tokens, z), reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(decoder(x, t, tokens, torch.zeros_like(z)), reference, atol=1e-5, rtol=1e-5)
    # both ways in carry z_i once trained: open the gates, or move the timestep projection
    for change in ("gate", "cond"):
        opened, _ = tiny_decoder()
        with torch.no_grad():
            for name, p in opened.named_parameters():
                if (change == "gate" and name.endswith("token_gate")) or (change == "cond" and "image_to_cond" in name):
                    p.normal_()
            a, b = opened(x, t, tokens, z), opened(x, t, tokens, z.roll(1, 0))
        assert (a - b).abs().max() > 1e-3, change
    # and the gradient reaches the gates and the timestep projection from the very first step
    decoder.train()
    decoder(x, t, tokens, z).square().mean().backward()
    gates = [p.grad for name, p in decoder.named_parameters() if name.endswith("token_gate")]
    assert all(g is not None and g.abs().sum() > 0 for g in gates)
    assert decoder.image_to_cond.weight.grad.abs().sum() > 0


def test_dual_dropout_is_independent_and_guidance_drops_both():
    decoder, glide = tiny_decoder()
    tokens = glide.tokenize(["a red star"] * 4000)
    z = F.normalize(torch.randn(4000, 16), dim=-1)
    dropped_tokens, dropped_z = decoder.drop_conditioning(tokens, z, torch.Generator().manual_seed(0))
    no_text = (dropped_tokens != tokens).any(1)
    no_image = (dropped_z == 0).all(1)
    assert abs(no_text.float().mean() - 0.5) < 0.03 and abs(no_image.float().mean() - 0.1) < 0.015
    assert abs((no_text & no_image).float().mean() - 0.05) < 0.012  # independent: 0.5 x 0.1
    assert torch.equal(dropped_z[~no_image], z[~no_image])
    null = decoder.null_conditioning(tokens[:2], z[:2])
    assert torch.equal(null["image_embed"], torch.zeros(2, 16))
    assert torch.equal(null["tokens"], decoder.empty_tokens(2))


def test_decoder_checkpoint_round_trip_and_bad_input(tmp_path):
    decoder, glide = tiny_decoder()
    unzero_(decoder)
    bundle = DecoderBundle(decoder, glide.vocab, DiffusionConfig("cosine", 20), clip_name="clip-x", clip_sha256="ab" * 32)
    path = bundle.save(tmp_path / "decoder.safetensors", manifest={"command": "test"})
    loaded = load_bundle(path)
    assert isinstance(loaded, DecoderBundle) and loaded.clip_name == "clip-x"
    z = F.normalize(torch.randn(2, 16), dim=-1)
    a = bundle.sample(["a red star", "a blue circle"], 2.0, "ddim", 4, seed=1, image_embed=z)
    b = loaded.sample(["a red star", "a blue circle"], 2.0, "ddim", 4, seed=1, image_embed=z)
    torch.testing.assert_close(a, b)
    assert a.shape == (2, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    with pytest.raises(ValueError, match=r"expected CLIP image embeddings of shape \[2, 16\]"):
        bundle.sample(["a red star", "a blue circle"], image_embed=torch.zeros(2, 32))
    with pytest.raises(ValueError, match="a decoder needs image_embed"):
        bundle.sample(["a red star"])
    with pytest.raises(ValueError, match="guidance|scale"):
        bundle.sample(["a red star"], guidance=-1.0, steps=4, image_embed=z[:1])
    with pytest.raises(ValueError, match="embeds differently"):
        bundle.check_clip(load_clip("clip-shapes-tiny"))
    with pytest.raises(ValueError, match="not a 'inpaint' model|not a .inpaint. model"):
        DecoderConfig(get_text2im_config("shapes-tiny-inpaint", vocab_size=glide.vocab.size))
    with pytest.raises(ValueError, match="p_drop_image"):
        DecoderConfig(Text2ImConfig.from_dict(glide.model.config.to_dict()), p_drop_image=1.5)


def test_training_batches_pair_each_image_with_its_own_clip_embedding():
    recipe = DecoderRecipe()
    recipe.data.batch_size = 6
    clip = load_clip(recipe.clip)
    bundle = new_decoder(recipe, clip)
    x0, tokens, z = decoder_batches(bundle, clip, recipe.data)(3)
    assert x0.shape == (6, 3, 32, 32) and tokens.shape == (6, bundle.context_length) and z.shape == (6, 128)
    kept = z.abs().sum(1) > 0
    torch.testing.assert_close(z[kept], clip.encode_images((x0[kept] + 1) / 2))
    x0_again, _, z_again = decoder_batches(bundle, clip, recipe.data)(3)  # a pure function of the index
    assert torch.equal(x0, x0_again) and torch.equal(z, z_again)


def test_a_decoder_trained_on_text_embeddings_reads_each_captions_clip_text_embedding():
    from unclip_lite.data import shapes

    recipe = DecoderRecipe(embedding="text")
    recipe.data.batch_size = 6
    clip = load_clip(recipe.clip)
    bundle = new_decoder(recipe, clip)
    x0, tokens, z = decoder_batches(bundle, clip, recipe.data, recipe.embedding)(3)
    stream = shapes.ShapesStream(6, bundle.image_size, seed=recipe.data.seed,
                                 two_object_fraction=recipe.data.two_object_fraction,
                                 detailed_fraction=recipe.data.detailed_fraction)
    images, texts, _ = stream.batch(3)
    assert torch.equal(x0, images * 2 - 1)
    kept = z.abs().sum(1) > 0
    assert kept.any()
    torch.testing.assert_close(z[kept], clip.encode_texts([t for t, k in zip(texts, kept) if k]))
    assert not torch.allclose(z[kept], clip.encode_images(images[kept]), atol=1e-2)  # not the image embedding
    with pytest.raises(ValueError, match="embedding must be one of image, text"):
        decoder_batches(bundle, clip, recipe.data, "caption")


def test_a_decoder_recipe_can_continue_from_a_trained_decoder():
    recipe = DecoderRecipe(embedding="text", init_decoder="decoder-shapes-tiny")
    clip = load_clip(recipe.clip)
    bundle = new_decoder(recipe, clip)
    shipped = load_decoder("decoder-shapes-tiny")
    for name, value in shipped.model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[name], value), name
    # the shipped decoder grew from glide-shapes-tiny-positions: its weights fit glide-shapes-tiny's
    # layout key for key, but not its config (the position maps' gain), so the recipe refuses them
    with pytest.raises(ValueError, match="was not grown from 'glide-shapes-tiny'"):
        new_decoder(replace(recipe, init_from="glide-shapes-tiny"), clip)


def test_the_papers_decoder_counts_3_5_billion_on_the_meta_device():
    from unclip_lite.unet import count_parameters

    with torch.device("meta"):
        decoder = Decoder(paper_decoder_config())
    assert abs(count_parameters(decoder) / 3.5e9 - 1) < 0.05  # Table 3: 3.5B
    assert decoder.image_to_tokens.out_features == 4 * 2048 and decoder.image_to_cond.in_features == 1024
