"""Measuring a training step: on the ``meta`` device for the planner, on the CPU to check it.

:func:`trace_step` runs one forward + backward of a :class:`~unclip_lite.planner_models.Workload`
on the ``meta`` device (shapes only: a 3.5B model costs nothing) and records

* every tensor autograd saves for the backward pass (``torch.autograd.graph.saved_tensors_hooks``),
  summed over *unique storages*, parameters left out: the activation memory;
* which residual block saved each, and every block's inputs: what per-block activation
  checkpointing would keep (the package's models have no checkpointing of their own, so it is
  modelled: the block inputs plus whatever is saved outside blocks, plus one block's internals
  while that block is recomputed in the backward pass);
* FLOPs, by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention; no
  elementwise ops), forward and backward, and the forward FLOPs inside blocks (what
  checkpointing recomputes).

On the meta device ``F.scaled_dot_product_attention`` would take its math path and save the
full [B, heads, L, L] attention matrix; a GPU takes a fused kernel that saves only the
log-sum-exp. :class:`FusedAttention` routes it to the memory-efficient kernel's op, as a GPU
(and the CPU's flash kernel) does. Attention the package writes out by hand (the decoder's
gated attention) is measured as written: it does save its [L, L] weights.

:class:`LiveBytes` is the CPU's stand-in for ``torch.cuda.max_memory_allocated``: a dispatch
mode that counts every storage an op creates and forgets it when Python frees it.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode


def block_types() -> tuple[type, ...]:
    """The residual blocks of the package's models: the unit of checkpointing and FSDP wrapping."""
    from unclip_lite.clip.vision import Bottleneck
    from unclip_lite.nn import Block
    from unclip_lite.unet import ResBlock
    from unclip_lite.unet_attention import AttentionBlock
    return Block, ResBlock, AttentionBlock, Bottleneck


def top_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the blocks not inside another block, in module order."""
    types, found = block_types(), []
    for name, module in model.named_modules():
        if isinstance(module, types) and not any(name.startswith(outer + ".") for outer, _ in found):
            found.append((name, module))
    return found


def _efficient_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    bias = None
    if attn_mask is not None:
        bias = (torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(~attn_mask, float("-inf"))
                if attn_mask.dtype == torch.bool else attn_mask.to(q.dtype))
        bias = bias.expand(*q.shape[:-1], k.shape[-2])
    return torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, bias, True, dropout_p, is_causal, scale=scale)[0]


class FusedAttention(TorchFunctionMode):
    """``F.scaled_dot_product_attention`` through the memory-efficient kernel's op (see the docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            return _efficient_sdpa(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


@dataclass
class StepTrace:
    """One forward + backward at ``batch``; bytes at the dtype it ran in."""

    batch: int
    saved_bytes: int  # unique storages saved for backward, parameters and buffers left out
    checkpointed_bytes: int  # what per-block checkpointing keeps at its peak (see the module docstring)
    flops: int  # forward + backward
    recompute_flops: int  # forward FLOPs inside the blocks: what checkpointing computes twice
    forward_flops: int


def _tensors(obj) -> list[torch.Tensor]:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


def trace_step(workload, batch: int, dtype: torch.dtype = torch.float32) -> StepTrace:
    """Run ``workload``'s training step at ``batch`` on the meta device with the model in ``dtype``."""
    model = workload.model.to(dtype).train()
    device = next(model.parameters()).device
    if device.type != "meta":
        raise ValueError(f"trace_step runs on the meta device; the model is on {device}")
    owned = {id(t.untyped_storage()) for t in [*model.parameters(), *model.buffers()]}
    blocks = top_blocks(model)
    stack: list[int] = []
    storages: dict[int, torch.UntypedStorage] = {}  # keeps ids valid while we count
    saved: dict[int, set] = {}  # storage id -> contexts that saved it (block index, or None: outside blocks)
    block_inputs: set[int] = set()

    def remember(t: torch.Tensor) -> int | None:
        s = t.untyped_storage()
        if id(s) in owned:
            return None
        storages[id(s)] = s
        return id(s)

    def pre(index):
        def hook(module, args, kwargs):
            if not stack:  # a block's own inputs, not those of a block nested in it
                block_inputs.update(k for k in map(remember, _tensors((args, kwargs))) if k is not None)
            stack.append(index)
        return hook

    def pack(t):
        key = remember(t)
        if key is not None:
            saved.setdefault(key, set()).add(stack[-1] if stack else None)
        return t

    handles = [m.register_forward_pre_hook(pre(i), with_kwargs=True) for i, (_, m) in enumerate(blocks)]
    def post(module, args, output):
        stack.pop()  # returns None: the output stands

    handles += [m.register_forward_hook(post) for _, m in blocks]
    try:
        with FusedAttention(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with FlopCounterMode(display=False) as forward:
                args, kwargs = workload.inputs(batch, device, dtype)
                loss = workload.loss(model(*args, **kwargs))
        with FusedAttention(), FlopCounterMode(display=False) as backward:
            loss.backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)

    nbytes = {k: storages[k].nbytes() for k in set(saved) | block_inputs}
    kept = {k for k, ctx in saved.items() if None in ctx} | block_inputs
    inside = [sum(nbytes[k] for k, ctx in saved.items() if i in ctx and k not in kept) for i in range(len(blocks))]
    root = type(model).__name__
    counts = forward.get_flop_counts()
    recompute = sum(sum(counts.get(f"{root}.{name}", {}).values()) for name, _ in blocks)
    return StepTrace(batch, sum(nbytes[k] for k in saved), sum(nbytes[k] for k in kept) + max(inside, default=0),
                     forward.get_total_flops() + backward.get_total_flops(), recompute, forward.get_total_flops())


class LiveBytes(TorchDispatchMode):
    """Bytes of live tensor storages created under this mode: ``current`` and ``peak``.

    Every op's outputs are looked at; a storage not seen before (and not among ``existing``, the
    tensors alive before, e.g. weights and optimizer state) is counted until Python frees it
    (``weakref.finalize`` on the storage). In-place ops and views return a storage already
    counted, so they add nothing. The CPU has no ``max_memory_allocated``; this is it, minus
    allocator rounding and kernels' internal scratch space."""

    def __init__(self, existing=()):
        super().__init__()
        self._existing = {id(t.untyped_storage()): t.untyped_storage() for t in existing}
        self._live: dict[int, int] = {}
        self.current = self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in _tensors(out):
            if t.device.type == "meta" or t.is_sparse:
                continue
            s = t.untyped_storage()
            key = id(s)
            if key in self._existing or key in self._live:
                continue
            self._live[key] = s.nbytes()
            self.current += self._live[key]
            self.peak = max(self.peak, self.current)
            weakref.finalize(s, self._free, key)
        return out


def unique_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    return sum({id(t.untyped_storage()): t.untyped_storage().nbytes() for t in tensors}.values())


def measure_cpu_step(workload, batch: int, seed: int = 0) -> dict[str, int]:
    """The real peak of live tensor bytes over one fp32 AdamW training step on the CPU.

    The step is measured as the package's trainer runs it, from ``zero_grad(set_to_none=True)``
    through ``optimizer.step()``, with the AdamW state already there (a step on zero gradients
    creates it first, without a forward pass). Returns ``{"peak_bytes", "states_bytes"}`` (the
    weights, buffers and AdamW state alive before the step)."""
    model = workload.model.float().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=False)
    torch.manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()

    def step():
        optimizer.zero_grad(set_to_none=True)
        args, kwargs = workload.inputs(batch, torch.device("cpu"), torch.float32)
        workload.loss(model(*args, **kwargs)).backward()
        optimizer.step()

    optimizer.zero_grad(set_to_none=True)
    existing = [*model.parameters(), *model.buffers(),
                *(v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor))]
    with LiveBytes(existing) as meter:
        step()
    states = unique_bytes(existing)
    return {"peak_bytes": states + meter.peak, "states_bytes": states}
