"""Chapter 01's exercise references agree with the package code the chapter runs: attention with
F.scaled_dot_product_attention and unclip_lite.nn.MultiheadAttention, the block with unclip_lite.nn.Block
(same state dict), the stem with the ViT's, and the pieces assembled with CLIP's two towers."""
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from unclip_lite.clip import build_clip, get_config
from unclip_lite.exercises import ch01
from unclip_lite.nn import Block, MultiheadAttention
from unclip_lite.tokenizer import get_tokenizer


def g(seed):
    return torch.Generator().manual_seed(seed)


def padding_mask(lengths, L):
    """bool [B, 1, 1, L]: True on each row's first ``lengths[b]`` keys."""
    return (torch.arange(L)[None] < torch.tensor(lengths)[:, None])[:, None, None, :]


@pytest.mark.parametrize("masking", ["none", "causal", "padding", "both", "cross"])
def test_attention_matches_scaled_dot_product_attention(masking):
    L, Lk = 7, (9 if masking == "cross" else 7)
    q = torch.randn(2, 3, L, 8, generator=g(0))
    k, v = torch.randn(2, 3, Lk, 8, generator=g(1)), torch.randn(2, 3, Lk, 8, generator=g(2))
    mask = {"none": None, "cross": None, "causal": ch01.causal_mask(L), "padding": padding_mask([7, 4], L),
            "both": ch01.causal_mask(L) & padding_mask([7, 4], L)}[masking]
    torch.testing.assert_close(ch01.attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    if masking == "causal":
        torch.testing.assert_close(ch01.attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, is_causal=True))


@pytest.mark.parametrize("masking", ["none", "causal", "padding"])
def test_attention_inside_the_packages_multihead_attention(masking):
    torch.manual_seed(0)
    mha = MultiheadAttention(24, 3)
    x = torch.randn(2, 6, 24, generator=g(3))
    q, k, v = rearrange(mha.qkv(x), "b l (three h d) -> three b h l d", three=3, h=3)
    mask = {"none": None, "causal": ch01.causal_mask(6), "padding": padding_mask([6, 2], 6)}[masking]
    ours = mha.out_proj(rearrange(ch01.attention(q, k, v, mask), "b h l d -> b l (h d)"))
    theirs = mha(x, causal=True) if masking == "causal" else mha(x, attn_mask=mask)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("masking", ["none", "causal", "padding"])
def test_transformer_block_loads_and_matches_the_packages_block(masking):
    torch.manual_seed(0)
    package = Block(32, 4)
    with torch.no_grad():  # not the identity LayerNorms of a fresh block
        for norm in (package.ln_1, package.ln_2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0, 0.2)
    ours = ch01.TransformerBlock(32, 4)
    ours.load_state_dict(package.state_dict())  # strict: the same names and shapes
    x = torch.randn(3, 5, 32, generator=g(4))
    mask = {"none": None, "causal": ch01.causal_mask(5), "padding": padding_mask([5, 3, 1], 5)}[masking]
    theirs = package(x, causal=True) if masking == "causal" else package(x, attn_mask=mask)
    torch.testing.assert_close(ours(x, mask), theirs)


def test_patch_embedding_matches_the_vits_stem():
    torch.manual_seed(0)
    visual = build_clip("shapes-tiny").visual.eval()
    stem = ch01.PatchEmbedding(32, 4, 128)
    stem.load_state_dict({k: v for k, v in visual.state_dict().items() if k in stem.state_dict()})
    seen = {}
    visual.ln_pre.register_forward_hook(lambda m, i, out: seen.setdefault("tokens", out))
    images = torch.randn(2, 3, 32, 32, generator=g(5))
    visual(images)
    torch.testing.assert_close(stem(images), seen["tokens"])  # [B, 65, D], what the blocks read
    # the stem's convolution is patchify followed by a Linear without bias
    patches = ch01.patchify(images, 4) @ stem.patch_embed.weight.flatten(1).T  # [B, 64, D]
    torch.testing.assert_close(patches, rearrange(stem.patch_embed(images), "b d h w -> b (h w) d"),
                               rtol=1e-4, atol=1e-5)


def test_the_pieces_assemble_into_both_towers():
    """The chapter's closing assembly: stem + blocks + ln_post + proj is encode_image; token and position
    embeddings + causal blocks + ln_final + eot_pool + proj is encode_text (CLIP's vocabulary)."""
    config = get_config("shapes-tiny")
    config.text.vocab_size, config.text.eot_token_id = 49408, None
    torch.manual_seed(0)
    model = build_clip(config).eval()
    visual, text = model.visual, model.text
    stem = ch01.PatchEmbedding(32, 4, 128)
    stem.load_state_dict({k: v for k, v in visual.state_dict().items() if k in stem.state_dict()})

    def blocks_of(transformer):
        out = []
        for package_block in transformer.blocks:
            block = ch01.TransformerBlock(128, 4)
            block.load_state_dict(package_block.state_dict())
            out.append(block)
        return out

    images = torch.randn(3, 3, 32, 32, generator=g(6))
    tokens = get_tokenizer()(["a red circle", "the star is yellow and large", ""], context_length=16)
    with torch.no_grad():
        x = stem(images)
        for block in blocks_of(visual.transformer):
            x = block(x)
        image_features = visual.ln_post(x[:, 0]) @ visual.proj
        t = text.token_embedding(tokens) + text.positional_embedding[: tokens.shape[1]]
        for block in blocks_of(text.transformer):
            t = block(t, ch01.causal_mask(tokens.shape[1]))
        text_features = ch01.eot_pool(text.ln_final(t), tokens) @ text.proj
        torch.testing.assert_close(image_features, model.encode_image(images), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(text_features, model.encode_text(tokens), rtol=1e-4, atol=1e-5)
        img, txt, scale = model(images, tokens)
        torch.testing.assert_close(ch01.clip_logits(image_features, text_features, model.logit_scale),
                                   scale * img @ txt.T, rtol=1e-4, atol=1e-4)


def test_the_module_checks_see_the_layer_norms():
    """The block check draws random LayerNorm weights: a block using ln_1 for both branches fails it."""
    from wrong_answers_ch01 import BlockOneNorm
    from unclip_lite.exercises.core import ExerciseFailed
    with pytest.raises(ExerciseFailed, match="TransformerBlock"):
        ch01.test_transformer_block(BlockOneNorm)
