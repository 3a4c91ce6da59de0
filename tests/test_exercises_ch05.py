"""Chapter 05's exercise references agree with the package code the chapter runs: the attention
block (unclip_lite.unet_attention.AttentionBlock, on random weights and on every attention layer
of the shipped glide-shapes-tiny), caption dropout (unclip_lite.glide.text2im.drop_captions) and
the guidance of one batched forward (unclip_lite.glide.guidance.classifier_free_guidance)."""
import pytest
import torch

from unclip_lite.exercises import ch05
from unclip_lite.glide.text2im import drop_captions as package_drop_captions
from unclip_lite.unet_attention import AttentionBlock


def g(seed):
    return torch.Generator().manual_seed(seed)


def _run(block, x, context, mask, weight):
    """Output, and the gradients one fixed loss sends to every parameter, x and the context."""
    x, context = x.clone().requires_grad_(), context.clone().requires_grad_()
    out = block(x, context, mask)
    (out * weight).sum().backward()
    grads = {name: p.grad.clone() for name, p in block.named_parameters()}
    return out.detach(), grads, x.grad, context.grad


@pytest.mark.parametrize("channels, heads, encoder_channels, groups, size, lengths", [
    (8, 2, 6, 4, (4, 4), [3, 5]),
    (16, 4, 8, 32, (2, 6), [2, 7]),
    (144, 3, 128, 32, (8, 8), [9, 2]),  # glide-shapes-tiny's layers
])
def test_reference_block_is_the_packages_attention_block(channels, heads, encoder_channels, groups, size, lengths):
    torch.manual_seed(0)
    package = AttentionBlock(channels, heads, encoder_channels, groups)
    with torch.no_grad():  # the package starts proj_out at zero (the block is then the identity): perturb it
        torch.nn.init.normal_(package.proj_out.weight, std=channels ** -0.5)
        torch.nn.init.normal_(package.proj_out.bias, std=0.1)
        package.norm.weight.add_(0.2 * torch.randn(channels))
        package.norm.bias.add_(0.2 * torch.randn(channels))
    ours = ch05.TextAttentionBlock(channels, heads, encoder_channels, groups)
    ours.load_state_dict(package.state_dict())  # the names match, parameter for parameter
    L = max(lengths)
    x, context = torch.randn(2, channels, *size, generator=g(1)), torch.randn(2, L, encoder_channels, generator=g(2))
    mask = torch.arange(L)[None] < torch.tensor(lengths)[:, None]  # [2, L]
    weight = torch.randn(2, channels, *size, generator=g(3))
    out_p, grads_p, gx_p, gc_p = _run(package, x, context, mask, weight)
    out_o, grads_o, gx_o, gc_o = _run(ours, x, context, mask, weight)
    torch.testing.assert_close(out_o, out_p, atol=1e-5, rtol=1e-4)
    for name in grads_p:
        torch.testing.assert_close(grads_o[name], grads_p[name], atol=1e-4, rtol=1e-4, msg=name)
    torch.testing.assert_close(gx_o, gx_p, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gc_o, gc_p, atol=1e-5, rtol=1e-4)
    padding = ~mask
    assert gc_o[padding].abs().max() == 0  # masked slots receive no gradient


def test_reference_block_reproduces_every_attention_layer_of_the_shipped_glide():
    from unclip_lite.glide.bundle import load_glide

    glide = load_glide("glide-shapes-tiny")
    model = glide.model.float().eval()
    layers = [m for m in model.unet.modules() if isinstance(m, AttentionBlock)]
    assert layers and all(m.encoder_kv is not None for m in layers)
    seen = []
    handles = [m.register_forward_hook(lambda mod, args, out: seen.append((mod, args, out))) for m in layers]
    tokens = glide.tokenize(["a red star above a blue circle", "a green heart"])
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32, generator=g(4)), torch.tensor([800, 200]), tokens)
    for h in handles:
        h.remove()
    assert len(seen) == len(layers)
    for layer, (x, context, mask), out in seen:
        ours = ch05.TextAttentionBlock(layer.qkv.in_features, layer.heads, layer.encoder_kv.in_features,
                                       layer.norm.num_groups)
        ours.load_state_dict(layer.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(ours(x, context, mask), out, atol=1e-4, rtol=1e-4)


def test_drop_captions_reference_is_the_packages():
    tokens = torch.tensor([[1, 7, 9, 2, 0, 0], [1, 5, 2, 0, 0, 0], [1, 4, 4, 4, 8, 2], [1, 6, 2, 0, 0, 0]])
    drop = torch.rand(len(tokens), generator=g(5)) < 0.5
    torch.testing.assert_close(ch05.drop_captions(tokens, drop), package_drop_captions(tokens, 0.5, g(5)))
    torch.testing.assert_close(ch05.drop_captions(tokens, torch.ones(4, dtype=torch.bool)),
                               package_drop_captions(tokens, 1.0))


def test_guided_output_reference_is_the_plain_formula():
    out = torch.randn(4, 6, 2, 2, generator=g(6))
    eps_c, eps_u = out[:2, :3], out[2:, :3]
    expected = torch.cat([eps_u + 3.0 * (eps_c - eps_u), out[:2, 3:]], dim=1)
    torch.testing.assert_close(ch05.guided_output(out, 3.0, 3), expected)
    torch.testing.assert_close(ch05.guided_eps(eps_c, eps_u, 3.0), expected[:, :3])
