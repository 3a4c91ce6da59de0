"""Chapter 10 exercises: the arithmetic and the machinery of training at scale.

1. the bytes of weights, gradients and AdamW state per GPU (mixed precision, DDP or FSDP);
2. the FLOPs of one transformer block, forward + backward, checked against ``FlopCounterMode``;
3. the largest per-GPU batch that fits, from the planner's measurement of a model;
4. a stack of blocks run with per-block activation checkpointing, checked on its outputs, its
   gradients *and* its peak memory;
5. which samples of which shards rank r's micro-batch i holds.

The references reuse the package where it has the idea: :data:`unclip_lite.planner.STATE_BYTES`,
``FlopCounterMode`` over :class:`unclip_lite.nn.Block` on the meta device,
:func:`torch.utils.checkpoint.checkpoint` and :class:`unclip_lite.planner_measure.LiveBytes`.
Exercise 3's and 5's are closed forms of :func:`unclip_lite.planner.plan`'s fit and of
:class:`unclip_lite.data.sharded.EpochOrder`; ``tests/test_exercises_ch10.py`` holds them to those.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode

from unclip_lite.exercises.core import Case, Exercise, checker, compare_outputs, seeded
from unclip_lite.nn import Block
from unclip_lite.planner import GIB, STATE_BYTES, Measurement
from unclip_lite.planner_measure import LiveBytes


# --- 1. Bytes per parameter ------------------------------------------------------------------
def state_bytes(parameters: int, precision: str, gpus: int, fsdp: bool) -> float:
    """Reference: bytes per GPU of the weights, gradients and AdamW state of a model of
    ``parameters`` parameters trained in ``precision`` ("fp32", "bf16" or "fp16") data-parallel over
    ``gpus`` GPUs: every GPU holds all of it under DDP, a 1/gpus share under FSDP (ZeRO-3).
    Half precision: 2 B weights + 2 B gradients + 12 B (fp32 master weights, m, v); fp32: 4 + 4 + 8."""
    return sum(STATE_BYTES[precision]) * parameters / (gpus if fsdp else 1)


def _state_cases():
    yield Case((1_000_000, "bf16", 1, False), name="1M parameters, bf16, one GPU")
    yield Case((3_500_000_000, "bf16", 8, True), name="the 3.5B decoder, bf16, FSDP over 8")
    yield Case((3_500_000_000, "bf16", 8, False), name="the 3.5B decoder, bf16, DDP over 8")
    yield Case((151_277_313, "fp32", 4, False), name="ViT-B/32 CLIP, fp32, DDP over 4")
    yield Case((1_000_000_000, "fp16", 64, True), name="1B, fp16, FSDP over 64")
    yield Case((7, "fp32", 2, True), name="7 parameters, fp32, FSDP over 2")


EX_STATE = Exercise("ch10.state_bytes", state_bytes, _state_cases, rtol=1e-9, atol=0.0,
                    hint="per parameter: half precision 2 + 2 + (4 + 4 + 4) bytes, fp32 4 + 4 + (4 + 4); "
                         "divide by gpus only when fsdp shards the three.")


# --- 2. The FLOPs of one block ---------------------------------------------------------------------
def block_flops(batch: int, tokens: int, width: int, mlp_ratio: float = 4.0) -> int:
    """Reference: the matmul FLOPs of one forward + backward of a pre-LN transformer block
    (:class:`unclip_lite.nn.Block`: qkv and output projections, an MLP of ``int(width·mlp_ratio)``
    hidden units, attention over ``tokens``), its input needing a gradient, as ``FlopCounterMode``
    counts them with attention on the math backend. Counted on the meta device: nothing computed."""
    with torch.device("meta"):
        block = Block(width, 1, mlp_ratio)
        x = torch.randn(batch, tokens, width, requires_grad=True)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        block(x).sum().backward()
    return counter.get_total_flops()


def _flop_cases():
    yield Case((2, 5, 32, 4.0), name="batch 2, 5 tokens, width 32")
    yield Case((3, 7, 48, 2.0), name="an MLP of 2x the width")
    yield Case((1, 77, 64, 3.5), name="77 tokens, mlp_ratio 3.5")
    yield Case((4, 81, 128, 4.0), name="the prior's 81 tokens")


EX_FLOPS = Exercise("ch10.block_flops", block_flops, _flop_cases, rtol=0.0, atol=0.0,
                    hint="per token, each weight does one multiply-add forward (2 FLOPs) and two backward (4: "
                         "the input's gradient and the weight's); attention adds QKᵀ and AV, 2·S·W each per "
                         "token forward, twice that backward.")


# --- 3. The largest batch that fits ----------------------------------------------------------------
def largest_batch(m: Measurement, gpus: int, fsdp: bool, checkpointing: bool, gpu_memory_gib: float) -> int:
    """Reference: the largest per-GPU batch of a bf16 AdamW training step that fits in
    ``gpu_memory_gib`` GiB, for the planner's measurement ``m`` of a model: the states of exercise 1,
    plus under FSDP the buffers of one gathered unit being computed, one being prefetched and one
    unit's gradients (2 + 2 + 2 bytes per parameter of ``m.largest_unit``), plus activations
    ``a + b·batch`` (``m.activations``, or ``m.checkpointed`` with checkpointing). 0 when none fits."""
    weights, gradients, _ = STATE_BYTES["bf16"]
    states = state_bytes(m.parameters, "bf16", gpus, fsdp) + ((2 * weights + gradients) * m.largest_unit if fsdp else 0)
    fixed, per_example = m.checkpointed if checkpointing else m.activations
    return max(0, math.floor((gpu_memory_gib * GIB - states - fixed) / per_example))


def _measurement(parameters: int, unit: int, activations: tuple, checkpointed: tuple) -> Measurement:
    return Measurement(parameters, unit, 8, activations, checkpointed, (0.0, 1.0), (0.0, 1.0), "image", "")


def _batch_cases():
    from unclip_lite.planner import measure

    prior = measure("prior", "shapes-tiny", "bf16")  # a real one: the tiny prior traced on the meta device
    yield Case((prior, 1, False, False, 0.1), name="the shapes-tiny prior on 0.1 GiB")
    yield Case((prior, 4, True, True, 0.1), name="the same, FSDP over 4 with checkpointing")
    decoder = _measurement(3_565_000_000, 120_000_000, (2.0e8, 6.1e9), (3.0e8, 2.2e8))
    yield Case((decoder, 8, True, True, 80.0), name="a 3.5B model, FSDP over 8, checkpointing, 80 GiB")
    yield Case((decoder, 8, True, False, 80.0), name="the same without checkpointing")
    yield Case((decoder, 8, False, True, 80.0), name="the same under DDP: all the states on every GPU")
    yield Case((decoder, 8, False, True, 40.0), name="DDP on 40 GiB: the states alone do not fit")
    yield Case((_measurement(150_000_000, 7_000_000, (1.0e7, 3.3e7), (1.2e7, 4.0e6)), 1, False, False, 24.0),
               name="150M on one 24 GiB GPU")


EX_BATCH = Exercise("ch10.largest_batch", largest_batch, _batch_cases,
                    hint="bytes available = gpu_memory_gib · 2³⁰ − states − the fixed activations; divide by the "
                         "bytes per example and round down (never below 0).")


# --- 4. Activation checkpointing ---------------------------------------------------------------------
def checkpointed_stack(blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """Reference: ``x`` through every block of ``blocks`` in turn, each block under
    :func:`torch.utils.checkpoint.checkpoint` (non-reentrant): the forward keeps only each block's
    input, and the backward recomputes one block at a time."""
    for block in blocks:
        x = checkpoint(block, x, use_reentrant=False)  # [B, L, D]
    return x


class CheckpointExercise(Exercise):
    """A case is ``Case((depth, batch, tokens, width))``: the same seeded stack of :class:`Block` s
    for both, driven forward and backward under :class:`LiveBytes`; compared on the output, every
    gradient and the peak bytes (at most ``slack`` times the reference's)."""

    slack = 1.25

    def __post_init__(self):
        self.compare = self.values_and_memory  # Exercise.verdict reads the field
        super().__post_init__()

    def run(self, fn, case: Case):
        depth, batch, tokens, width = case.args
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            blocks = nn.ModuleList(Block(width, 2) for _ in range(depth))
            x = torch.randn(batch, tokens, width).requires_grad_()
        with LiveBytes([*blocks.parameters(), x]) as meter:
            out = fn(blocks, x)
            weight = torch.linspace(-1, 1, out.numel()).view_as(out)  # one fixed, uneven loss
            (out * weight).sum().backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in [x, *blocks.parameters()]]
        return out.detach(), grads, meter.peak

    def values_and_memory(self, got, expected) -> str | None:
        problem = compare_outputs(got[:2], expected[:2], atol=1e-5, rtol=1e-4)
        if problem:
            return problem
        if got[2] > self.slack * expected[2]:
            return (f"right values, but the step held {got[2] / 1024:.0f} KiB at its peak, "
                    f"{got[2] / expected[2]:.1f}x the {expected[2] / 1024:.0f} KiB of per-block checkpointing")
        return None


def _stack_cases():
    yield Case((8, 8, 32, 32), name="8 blocks of width 32, 32 tokens")
    yield Case((6, 4, 48, 48), name="6 blocks of width 48, 48 tokens")


EX_STACK = CheckpointExercise("ch10.checkpointed_stack", checkpointed_stack, _stack_cases, kind="step",
                              hint="x = checkpoint(block, x, use_reentrant=False) for each block: one call per "
                                   "block, not one around the whole loop.")


# --- 5. Which samples a rank reads ---------------------------------------------------------------------
def rank_samples(sizes: torch.Tensor, batch_size: int, rank: int, world_size: int, index: int) -> torch.Tensor:
    """Reference: the samples of rank ``rank``'s micro-batch ``index`` in one epoch whose shards, in
    this epoch's order, hold ``sizes`` [U] samples each: the epoch is the shards one after another,
    rank r of W owns the r-th contiguous ``N // W`` samples of it (N = all samples), and its batch i
    is positions ``[i·B, (i+1)·B)`` of its share. Returns [B, 2] longs: (shard, offset in the shard)."""
    per_rank = int(sizes.sum()) // world_size
    positions = rank * per_rank + index * batch_size + torch.arange(batch_size)  # [B] in the epoch
    ends = sizes.cumsum(0)  # [U] where each shard ends
    shard = torch.searchsorted(ends, positions, right=True)  # [B]
    return torch.stack([shard, positions - (ends[shard] - sizes[shard])], dim=1)


def _rank_cases():
    g = seeded(100)
    sizes = torch.tensor([12, 12, 12, 4])
    yield Case((sizes, 4, 0, 2, 0), name="40 samples in 4 shards, rank 0 of 2, batch 0")
    yield Case((sizes, 4, 1, 2, 4), name="rank 1 of 2, batch 4 (the end of its share)")
    yield Case((sizes, 3, 2, 3, 1), name="rank 2 of 3, batch 1")
    yield Case((torch.randint(1, 30, (9,), generator=g), 5, 3, 4, 2), name="9 shards of random sizes, rank 3 of 4")
    yield Case((torch.tensor([5, 5, 5, 5, 5, 5]), 5, 1, 6, 0), name="batch = shard: each rank one shard")


EX_RANKS = Exercise("ch10.rank_samples", rank_samples, _rank_cases,
                    hint="positions = rank · (N // W) + index · B + arange(B); the shard is the first whose "
                         "running total exceeds the position (torch.searchsorted(ends, positions, right=True)).")


check = checker("ch10")  # the notebook's `name = tests.check(name)`: see core.Exercise.accept
