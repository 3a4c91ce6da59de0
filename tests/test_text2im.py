"""GLIDE's text-conditional model and classifier-free guidance (unclip_lite.glide.text2im / .guidance)."""
import copy
import math

import pytest
import torch
from helpers import unzero_

from unclip_lite.diffusion import GaussianDiffusion, sample
from unclip_lite.glide.guidance import classifier_free_guidance
from unclip_lite.glide.text2im import (EOT, PAD, SOT, TEXT2IM_CONFIGS, Text2Im, Text2ImConfig, drop_captions,
                                       empty_tokens, encode_prompts, get_text2im_config)
from unclip_lite.unet import UNetConfig, count_parameters
from unclip_lite.tokenizer import PromptTooLongError

VOCAB, CTX, W = 12, 8, 32


def tiny_config(learn_sigma: bool = False, **kw) -> Text2ImConfig:
    unet = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                      num_head_channels=16, image_size=16, encoder_channels=W, cond_dim=W,
                      learn_sigma=learn_sigma)
    return Text2ImConfig(unet, vocab_size=VOCAB, context_length=CTX, text_width=W, text_layers=1,
                         text_heads=2, **kw)


def tiny_model(learn_sigma: bool = False, seed: int = 0) -> Text2Im:
    torch.manual_seed(seed)
    model = Text2Im(tiny_config(learn_sigma)).eval()
    unzero_(model)
    return model


def captions() -> torch.Tensor:
    return torch.tensor([[SOT, 5, 6, 7, EOT, PAD, PAD, PAD],
                         [SOT, 8, EOT, PAD, PAD, PAD, PAD, PAD]])


def test_shapes_and_mask():
    model = tiny_model(learn_sigma=True)
    tokens = captions()
    xf, pooled, mask = model.text(tokens)
    assert xf.shape == (2, CTX, W) and pooled.shape == (2, W)
    assert torch.equal(pooled, xf[:, -1])
    assert torch.equal(mask, tokens != PAD)
    assert mask[0, :5].all() and not mask[0, 5:].any()  # nothing after EOT counts as a real token
    out = model(torch.randn(2, 3, 16, 16), torch.tensor([3, 700]), tokens)
    assert out.shape == (2, 6, 16, 16)
    assert torch.equal(empty_tokens(2, CTX), torch.tensor([[SOT, EOT] + [PAD] * (CTX - 2)] * 2))
    assert torch.equal(model.empty_tokens(3), empty_tokens(3, CTX))


def test_padding_embedding_is_used_and_pad_row_is_not():
    model = tiny_model()
    tokens, x, t = captions(), torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    with torch.no_grad():
        base = model(x, t, tokens)
        model.text.token_embedding.weight[PAD].add_(1.0)  # the PAD row is never read
        assert torch.allclose(model(x, t, tokens), base, atol=0, rtol=0)
        model.text.padding_embedding[-1].add_(torch.randn(W))  # the learned padding vector is (a
        # constant shift would vanish in LayerNorm)
        assert not torch.allclose(model(x, t, tokens), base, atol=1e-4)


def test_unet_masks_padding_slots():
    model = tiny_model()
    xf, pooled, mask = model.text(captions())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    with torch.no_grad():
        base = model.unet(x, t, context=xf, context_mask=mask, cond=pooled)
        xf2 = torch.where(mask[..., None], xf, xf + 5.0)  # change only the padding slots' context
        assert torch.allclose(model.unet(x, t, context=xf2, context_mask=mask, cond=pooled), base, atol=1e-5)


def naive(model, x, t, tokens, scale):
    cond = model(x, t, tokens)
    uncond = model(x, t, model.empty_tokens(len(x)))
    C = x.shape[1]
    return torch.cat([uncond[:, :C] + scale * (cond[:, :C] - uncond[:, :C]), cond[:, C:]], dim=1)


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_guidance_matches_two_passes(learn_sigma):
    model = tiny_model(learn_sigma)
    tokens, x, t = captions(), torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    C = 3
    with torch.no_grad():
        cond, uncond = model(x, t, tokens), model(x, t, model.empty_tokens(2))
        assert not torch.allclose(cond, uncond, atol=1e-4)
        for scale in (0.0, 1.0, 3.0):
            out = classifier_free_guidance(model, tokens, scale)(x, t)
            assert out.shape == cond.shape
            assert torch.allclose(out, naive(model, x, t, tokens, scale), atol=1e-5)
        assert torch.allclose(classifier_free_guidance(model, tokens, 1.0)(x, t), cond, atol=1e-5)
        s0 = classifier_free_guidance(model, tokens, 0.0)(x, t)
        assert torch.allclose(s0[:, :C], uncond[:, :C], atol=1e-5)
        if learn_sigma:  # the variance half is the conditional one at every scale
            assert torch.allclose(classifier_free_guidance(model, tokens, 7.0)(x, t)[:, C:], cond[:, C:], atol=1e-5)


@pytest.mark.parametrize("scale", [-0.1, 50.5, float("nan"), float("inf"), "big"])
def test_guidance_rejects_bad_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        classifier_free_guidance(tiny_model(), captions(), scale)


def test_guidance_rejects_batch_mismatch():
    fn = classifier_free_guidance(tiny_model(), captions(), 3.0)
    with pytest.raises(ValueError, match="batch"):
        fn(torch.randn(3, 3, 16, 16), torch.tensor([1, 1, 1]))


def test_extra_channels_reach_the_unet_and_guidance_passes_them_to_both_halves():
    """An inpainting-shaped model (3 + 4 input channels): the extra channels change the output,
    and guided output equals the naive two-pass computation with the same extra channels."""
    cfg = tiny_config()
    cfg.unet.in_channels, cfg.conditioning = 7, "inpaint"
    torch.manual_seed(0)
    model = Text2Im(cfg).eval()
    unzero_(model)
    tokens, x, t = captions(), torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    extra = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        a, b = model(x, t, tokens, extra=extra), model(x, t, tokens, extra=extra * 0)
        assert a.shape == (2, 3, 16, 16) and not torch.allclose(a, b, atol=1e-4)
        guided = classifier_free_guidance(model, tokens, 3.0, extra=extra)(x, t)
        # The reference is the naive two-pass formula in float64. The float32 batched pass may
        # differ from it by each half's float32 error (which depends on the CPU's GEMM
        # blocking), amplified by the guidance: |Δguided| <= (1 + 2s)·max|Δhalf|. We measure
        # the halves' float32 error here instead of assuming one machine's rounding.
        double = copy.deepcopy(model).double()
        x64, extra64 = x.double(), extra.double()
        cond64 = double(x64, t, tokens, extra=extra64)
        uncond64 = double(x64, t, model.empty_tokens(2), extra=extra64)
        half_error = max((a.double() - cond64).abs().max().item(),
                         (model(x, t, model.empty_tokens(2), extra=extra).double() - uncond64).abs().max().item())
        reference = uncond64 + 3.0 * (cond64 - uncond64)
        assert (guided.double() - reference).abs().max().item() <= 4 * (1 + 2 * 3.0) * half_error + 1e-12
        # ...and a wrong formula (no guidance, or the halves swapped) lies far outside that bound
        assert (a.double() - reference).abs().max().item() > 100 * (1 + 2 * 3.0) * half_error
    with pytest.raises(ValueError, match="extra channels"):
        model(x, t, tokens, extra=torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="extra has batch 3"):
        classifier_free_guidance(model, tokens, 3.0, extra=torch.randn(3, 4, 16, 16))


def test_drop_captions_rate():
    tokens = captions()[:1].repeat(4000, 1)
    dropped = drop_captions(tokens, 0.2, torch.Generator().manual_seed(0))
    is_empty = (dropped == empty_tokens(1, CTX)).all(1)
    assert torch.equal(dropped[~is_empty], tokens[~is_empty])
    assert abs(is_empty.float().mean().item() - 0.2) < 0.03
    model = Text2Im(tiny_config(p_uncond=0.5))
    rate = (model.drop_captions(tokens, torch.Generator().manual_seed(1)) == model.empty_tokens(1)).all(1)
    assert abs(rate.float().mean().item() - 0.5) < 0.04
    assert torch.equal(drop_captions(tokens, 0.0), tokens)


def test_tiny_model_trains_and_samples_with_guidance():
    torch.manual_seed(0)
    model = Text2Im(tiny_config())
    diffusion = GaussianDiffusion.from_schedule("cosine", 100)
    x0 = torch.rand(4, 3, 16, 16) * 2 - 1
    tokens = captions().repeat(2, 1)
    t = torch.tensor([10, 30, 60, 90])
    noise = torch.randn_like(x0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        loss = diffusion.training_losses(model, x0, t, noise, model_kwargs={"tokens": tokens})["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert min(losses[-5:]) < 0.7 * losses[0], losses
    model.eval()
    with torch.no_grad():
        imgs = sample(diffusion, classifier_free_guidance(model, tokens, 3.0), (4, 3, 16, 16),
                      sampler="ddim", steps=5, generator=torch.Generator().manual_seed(0), progress=False)
    assert imgs.shape == (4, 3, 16, 16) and torch.isfinite(imgs).all()


def test_config_validation_and_roundtrip():
    cfg = tiny_config()
    assert Text2ImConfig.from_dict(cfg.to_dict()) == cfg
    bad = tiny_config().unet
    bad.encoder_channels = 64
    with pytest.raises(ValueError, match="encoder_channels"):
        Text2ImConfig(bad, vocab_size=VOCAB, context_length=CTX, text_width=W, text_layers=1, text_heads=2)
    bad = tiny_config().unet
    bad.cond_dim = None
    with pytest.raises(ValueError, match="cond_dim"):
        Text2ImConfig(bad, vocab_size=VOCAB, context_length=CTX, text_width=W, text_layers=1, text_heads=2)
    with pytest.raises(ValueError, match="unknown Text2Im config"):
        get_text2im_config("glide-huge")
    with pytest.raises(ValueError, match="vocab_size"):
        Text2Im(get_text2im_config("shapes-tiny"))
    with pytest.raises(ValueError, match=r"unknown Text2ImConfig field\(s\)"):
        Text2ImConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    assert set(TEXT2IM_CONFIGS) == {"shapes-tiny", "glide-base-released", "glide-base-paper", "shapes-tiny-inpaint",
                                    "glide-inpaint-released", "shapes-tiny-upsample", "glide-upsample-released",
                                    "glide-upsample-paper", "shapes-tiny-positions",
                                    "shapes-tiny-positions-x10"}
    for name, channels in (("shapes-tiny-inpaint", 7), ("glide-inpaint-released", 7),
                           ("shapes-tiny-upsample", 6), ("glide-upsample-released", 6)):
        assert TEXT2IM_CONFIGS[name].unet.in_channels == channels and TEXT2IM_CONFIGS[name].unet.out_channels == 3


def test_encode_prompts():
    from unclip_lite.clip.recipes import shapes_vocab

    vocab = shapes_vocab()
    ids = encode_prompts(vocab, ["a red circle", "a blue square"], 24)
    assert ids.shape == (2, 24) and (ids[:, 0] == SOT).all()
    long_prompt = " ".join(["a red circle"] * 10)
    with pytest.raises(PromptTooLongError, match="red circle"):
        encode_prompts(vocab, ["a red circle", long_prompt], 24)


def test_released_preset_builds_on_meta():
    with torch.device("meta"):
        model = Text2Im(get_text2im_config("glide-base-released"))
    assert all(p.is_meta for p in model.parameters())  # no memory allocated, nothing initialised
    assert count_parameters(model) == 385_030_726  # glide-text2im's base model: 385M
    assert count_parameters(model.text) == 76_301_824


def test_inpainting_and_upsampling_presets_on_meta_have_the_expected_sizes():
    with torch.device("meta"):
        base = Text2Im(get_text2im_config("glide-base-released"))
        inpaint = Text2Im(get_text2im_config("glide-inpaint-released"))
        released = Text2Im(get_text2im_config("glide-upsample-released"))
        paper = Text2Im(get_text2im_config("glide-upsample-paper"))
    # inpainting = the base model + 4 input channels into its first 3x3 conv (192 filters)
    assert count_parameters(inpaint) - count_parameters(base) == 192 * 4 * 3 * 3
    # the released upsampler: the base's text transformer, a 6-channel U-Net at 256 px
    assert count_parameters(released.text) == count_parameters(base.text)
    assert released.config.unet.in_channels == 6 and released.config.unet.image_size == 256
    # the paper's (§4): ~1.5B in all, its text transformer 1024 wide, 24 blocks:
    # 24 · (12·w² + 13·w) for the blocks, plus token/position embeddings, final norm and projection
    w, layers = 1024, 24
    blocks = layers * (12 * w * w + 13 * w)
    assert paper.config.text_width == w and paper.config.text_layers == layers
    assert 1.40e9 < count_parameters(paper) < 1.55e9
    assert abs(count_parameters(paper.text) - blocks) < 0.25 * blocks


def test_models_declare_their_conditioning_and_build_their_own_inputs():
    """The config says what the model reads; channel counts that disagree are refused, and the
    model turns named inputs into the channels it reads (glide-text2im's Inpaint/SuperRes models)."""
    cfg = tiny_config()
    with pytest.raises(ValueError, match="'inpaint' model reads 7 input channels"):
        Text2ImConfig.from_dict({**cfg.to_dict(), "conditioning": "inpaint"})
    with pytest.raises(ValueError, match="conditioning must be one of"):
        Text2ImConfig.from_dict({**cfg.to_dict(), "conditioning": "depth"})
    cfg.unet.in_channels, cfg.conditioning, cfg.low_res_size = 6, "low_res", 8
    torch.manual_seed(0)
    model = Text2Im(cfg).eval()
    unzero_(model)
    low = torch.rand(2, 3, 8, 8) * 2 - 1
    extra = model.extra_inputs(2, low_res=low)  # [2, 3, 16, 16]: the low-res image, upsampled
    assert extra.shape == (2, 3, 16, 16)
    x, t, tokens = torch.randn(2, 3, 16, 16), torch.tensor([5, 500]), captions()
    with torch.no_grad():
        by_name, built = model(x, t, tokens, low_res=low), model(x, t, tokens, extra=extra)
        assert torch.equal(by_name, built) and not torch.allclose(by_name, model(x, t, tokens, low_res=-low))
    with pytest.raises(ValueError, match="not both"):
        model(x, t, tokens, extra=extra, low_res=low)
    with pytest.raises(ValueError, match="inpaint given, but this is an upsampler"):
        model.extra_inputs(2, inpaint=(torch.zeros(2, 3, 16, 16), torch.ones(2, 1, 16, 16)))
    with pytest.raises(ValueError, match="this is an upsampler: pass low_res"):
        model.extra_inputs(2)
    with pytest.raises(ValueError):
        model.extra_inputs(2, low_res=torch.zeros(2, 3, 4, 4))  # not the declared 8 px
    cfg.unet.in_channels = 7  # edited after the fact: checked again when a model is built
    with pytest.raises(ValueError, match="'low_res' model reads 6"):
        Text2Im(cfg)


def test_shipped_checkpoints_made_before_the_declaration_load_with_it():
    from unclip_lite.glide.bundle import load_glide

    assert load_glide("glide-shapes-tiny").conditioning == "text"
    inpaint, upsample = load_glide("glide-inpaint-shapes-tiny"), load_glide("glide-upsample-shapes-tiny")
    assert inpaint.conditioning == "inpaint" and inpaint.low_res_size is None
    assert (upsample.conditioning, upsample.low_res_size, upsample.image_size) == ("low_res", 32, 64)
    assert upsample.config_dict()["text2im"]["conditioning"] == "low_res"  # and a re-save declares it
