"""Issue 17: activation checkpointing per block (Chen et al. 2016; open_clip's set_grad_checkpointing).

A checkpointed training step must be the plain step, bit for bit (loss, every gradient, BatchNorm's
running statistics), while really recomputing each block in the backward pass and keeping far
less for it; an eval or no-grad forward must not recompute; the one switch counts and finds the
blocks (the FSDP units too); and the checkpointed CLIP compiles.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unclip_lite.clip import build_clip
from unclip_lite.clip.configs import CLIPConfig, TextConfig, VisionConfig
from unclip_lite.clip.loss import clip_loss
from unclip_lite.glide.text2im import Text2Im, Text2ImConfig
from unclip_lite.nn import Block, CheckpointableBlock, repeated_blocks, set_grad_checkpointing
from unclip_lite.planner_measure import LiveBytes
from unclip_lite.unclip.prior import DiffusionPrior, PriorConfig
from unclip_lite.unet import AttentionBlock, ResBlock, UNetConfig

VIT = dict(image_size=32, layers=2, width=32, heads=2, patch_size=8)
RESNET = dict(image_size=64, layers=(1, 2, 1, 1), width=8, heads=4, patch_size=None)
UNET = dict(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
            num_head_channels=16, image_size=16, encoder_channels=32, cond_dim=32, dropout=0.1)
PRIOR = dict(embed_dim=16, context_length=6, width=32, layers=2, heads=4)
B = 4


def _clip(vision: dict) -> nn.Module:
    return build_clip(CLIPConfig(embed_dim=16, vision=VisionConfig(**vision),
                                 text=TextConfig(context_length=8, vocab_size=40, width=32, heads=2, layers=2)))


def _clip_loss(model: nn.Module, g: torch.Generator) -> torch.Tensor:
    size = model.config.vision.image_size
    images, tokens = torch.randn(B, 3, size, size, generator=g), torch.randint(3, 40, (B, 8), generator=g)
    tokens[:, 6], tokens[:, 7] = 39, 0  # [EOS] is the largest id, then padding
    return clip_loss(*model(images, tokens))


def _glide() -> nn.Module:
    cfg = Text2ImConfig(UNetConfig(**UNET), vocab_size=12, context_length=8, text_width=32, text_layers=1,
                        text_heads=2)
    return Text2Im(cfg)


def _glide_loss(model: nn.Module, g: torch.Generator) -> torch.Tensor:
    x = torch.randn(B, 3, 16, 16, generator=g)
    tokens = torch.randint(3, 12, (B, 8), generator=g)
    tokens[:, 5:] = 0  # padding: the U-Net's attention masks it
    out = model(x, torch.randint(0, 1000, (B,), generator=g), tokens)
    return F.mse_loss(out, torch.randn(out.shape, generator=g))


def _prior_loss(model: nn.Module, g: torch.Generator) -> torch.Tensor:
    mask = torch.ones(B, PRIOR["context_length"], dtype=torch.bool)
    mask[0, 3:] = False
    out = model(torch.randn(B, 16, generator=g), torch.randint(0, 1000, (B,), generator=g),
                torch.randn(B, 16, generator=g), torch.randn(B, 6, 16, generator=g), mask)
    return F.mse_loss(out, torch.randn(out.shape, generator=g))


# name: (build, loss of one training step, blocks the config implies)
MODELS = {
    # the two towers' layers
    "clip-vit": (lambda: _clip(VIT), _clip_loss, VIT["layers"] + 2),
    # Bottlenecks per stage (BatchNorm: running statistics must be updated once, not twice)
    "clip-resnet": (lambda: _clip(RESNET), _clip_loss, sum(RESNET["layers"]) + 2),
    # text layers; ResBlocks: n per level down, 2 in the middle, n + 1 per level up; attention after
    # each at 8 px (the second level) and in the middle. Dropout on: recomputation replays the RNG
    "glide": (_glide, _glide_loss, 1 + (2 * 1 + 2 + 2 * 2) + (1 + 1 + 2)),
    "prior": (lambda: DiffusionPrior(PriorConfig(**PRIOR)), _prior_loss, PRIOR["layers"]),
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = MODELS[name][0]()
    with torch.no_grad():  # no zero-initialised layers: every parameter gets a gradient to compare
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.train()


def _step(name: str, model: nn.Module) -> torch.Tensor:
    torch.manual_seed(1)  # the same dropout masks in both runs
    loss = MODELS[name][1](model, torch.Generator().manual_seed(2))
    loss.backward()
    return loss.detach()


def _first_layer_calls(model: nn.Module) -> list[int]:
    """Counts of the calls to the first layer of every block (the first thing a block, or its
    recomputation, runs), one counter for the whole model."""
    calls = [0]

    def count(module, args):
        calls[0] += 1
    for block in repeated_blocks(model):
        next(block.children()).register_forward_pre_hook(count)
    return calls


@pytest.mark.parametrize("name", list(MODELS))
def test_a_checkpointed_step_is_the_plain_step_exactly(name):
    plain = _model(name)
    checkpointed = copy.deepcopy(plain)
    assert set_grad_checkpointing(checkpointed) == MODELS[name][2]
    torch.testing.assert_close(_step(name, checkpointed), _step(name, plain), rtol=0, atol=0)
    for (param_name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{param_name} got no gradient to compare"
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=0, msg=lambda m: f"{param_name}: {m}")
    for (buffer_name, b), c in zip(plain.named_buffers(), checkpointed.buffers()):
        torch.testing.assert_close(c, b, rtol=0, atol=0, msg=lambda m: f"{buffer_name}: {m}")


@pytest.mark.parametrize("name", list(MODELS))
def test_each_block_is_recomputed_and_far_less_is_kept(name):
    blocks = MODELS[name][2]
    held, recomputed = {}, {}
    for checkpointing in (False, True):
        model = _model(name)
        set_grad_checkpointing(model, checkpointing)
        calls = _first_layer_calls(model)
        torch.manual_seed(1)
        parameters = [*model.parameters(), *model.buffers()]
        with LiveBytes(parameters) as meter:
            loss = MODELS[name][1](model, torch.Generator().manual_seed(2))
            held[checkpointing] = meter.current  # what the forward leaves alive for the backward
        assert calls[0] == blocks  # the forward runs each block once
        loss.backward()
        recomputed[checkpointing] = calls[0] - blocks
    assert recomputed == {False: 0, True: blocks}  # ... and the backward runs each again, checkpointed
    # measured 2.3x (the ResNet: its stem, outside any block, keeps most of what is left) to 8.7x less
    assert held[True] < held[False] / 2


@pytest.mark.parametrize("name", ["clip-vit", "glide"])
def test_eval_and_no_grad_forwards_are_not_recomputed(name):
    plain, checkpointed = _model(name), _model(name)
    set_grad_checkpointing(checkpointed)
    calls = _first_layer_calls(checkpointed)
    blocks = MODELS[name][2]
    for model in (plain, checkpointed):
        model.eval()
    loss = _step(name, checkpointed)  # eval mode, grad enabled (a guidance gradient): no recomputation
    assert calls[0] == blocks
    torch.testing.assert_close(loss, _step(name, plain), rtol=0, atol=0)
    for model in (plain, checkpointed):
        model.train()
    with torch.no_grad():  # training mode, no grad: nothing to save, nothing to recompute
        torch.manual_seed(1)
        loss = MODELS[name][1](checkpointed, torch.Generator().manual_seed(2))
        torch.manual_seed(1)
        torch.testing.assert_close(loss, MODELS[name][1](plain, torch.Generator().manual_seed(2)), rtol=0, atol=0)
    assert calls[0] == 2 * blocks


def test_the_switch_counts_the_blocks_and_refuses_a_model_without_any():
    clip = _clip(VIT)
    assert clip.set_grad_checkpointing() == VIT["layers"] + 2  # open_clip's method name
    assert all(b.grad_checkpointing for b in clip.modules() if isinstance(b, CheckpointableBlock))
    assert clip.set_grad_checkpointing(False) == VIT["layers"] + 2
    assert not any(b.grad_checkpointing for b in clip.modules() if isinstance(b, CheckpointableBlock))
    with pytest.raises(ValueError, match="Sequential has no checkpointable block"):
        set_grad_checkpointing(nn.Sequential(nn.Linear(4, 4), nn.GELU()))
    assert set_grad_checkpointing(nn.Sequential(nn.Linear(4, 4)), enabled=False) == 0  # switching off is fine


class _Pair(CheckpointableBlock):
    """A block holding a block: the FSDP unit and the recomputed unit are the outer one."""

    def __init__(self, width: int):
        super().__init__()
        self.inner = Block(width, heads=2)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maybe_checkpoint(lambda h: h + self.proj(self.inner(h)), x)


def test_repeated_blocks_are_the_outermost_blocks_in_module_order():
    for name in MODELS:
        model = MODELS[name][0]()
        found = repeated_blocks(model)
        every = [m for m in model.modules() if isinstance(m, CheckpointableBlock)]
        assert found == every and len(found) == MODELS[name][2]  # none of the package's blocks nest
    glide = MODELS["glide"][0]()
    kinds = [type(b) for b in repeated_blocks(glide.unet)]
    assert kinds[:3] == [ResBlock, ResBlock, AttentionBlock]  # level 0: a ResBlock; level 1: ResBlock + attention

    torch.manual_seed(0)
    model = nn.Sequential(_Pair(8), Block(8, heads=2), _Pair(8))
    assert repeated_blocks(model) == [model[0], model[1], model[2]]
    reference = copy.deepcopy(model)
    assert set_grad_checkpointing(model) == 3
    assert not model[0].inner.grad_checkpointing  # recomputed with its outer block, not a third time
    x = torch.randn(2, 5, 8)
    model(x).square().sum().backward()
    reference(x).square().sum().backward()
    for p, q in zip(reference.parameters(), model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=0)


@pytest.mark.slow
def test_a_compiled_checkpointed_clip_trains_like_the_eager_one():
    """torch.compile (inductor, the CPU's C++ backend) with every block checkpointed: one training
    step matches eager. (Not fullgraph: the token-range check in CLIP's text tower reads values, a
    graph break by design; the checkpointed blocks themselves trace as checkpoint regions.)"""
    eager = _model("clip-vit")
    compiled = copy.deepcopy(eager)
    set_grad_checkpointing(compiled)
    step = torch.compile(compiled)
    g = torch.Generator().manual_seed(2)
    loss = _clip_loss(step, g)
    loss.backward()
    reference = _clip_loss(eager, torch.Generator().manual_seed(2))
    reference.backward()
    # fused kernels reorder floating-point sums: close, not equal
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    for (param_name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=lambda m: f"{param_name}: {m}")
