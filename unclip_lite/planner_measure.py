"""Measuring a training step: on the ``meta`` device for the planner, on the CPU to check it.

:func:`trace_step` runs one forward + backward of a :class:`~unclip_lite.planner_models.Workload`
on the ``meta`` device (shapes only: a 3.5B model costs nothing) twice, once as it is and once with
every block recomputed in the backward pass (:func:`unclip_lite.nn.set_grad_checkpointing`), and
records of each

* the peak of live activation bytes over the forward and backward (:class:`LiveBytes`, which
  counts meta storages as it counts CPU ones): what autograd saves for the backward pass, plus
  the backward's working memory (the gradients flowing back through the activations, one
  block's recomputed internals under checkpointing). Weights, buffers and the parameters'
  gradients are allocated before and left out (they are the plan's other lines);
* FLOPs (the ``torch.utils.flop_counter`` formulas: matmuls, convolutions, attention; no
  elementwise ops), forward and backward. The checkpointed step's extra FLOPs are the
  recomputation: less than the blocks' forward, because autograd stops recomputing a block once
  it has what the backward needs (a block's last matmul, whose output nobody saved, is skipped);
* and, of the plain step, the bytes autograd saves for backward (unique storages, parameters
  left out; ``torch.autograd.graph.saved_tensors_hooks``).

Measured peaks, not a model of them: until the package's blocks could recompute, checkpointing
was modelled (block inputs + what is saved outside blocks + one block's internals), which missed
the backward's working memory — 3-26% of the checkpointed activations of the tiny models, next
to 1-8% without checkpointing — and counted a full forward of recomputation.

On the meta device ``F.scaled_dot_product_attention`` would take its math path and save the
full [B, heads, L, L] attention matrix; a GPU takes a fused kernel that saves only the
log-sum-exp. :func:`fused_attention` routes it to the memory-efficient kernel's op, as a GPU
(and the CPU's flash kernel) does. Attention the package writes out by hand (the decoder's
gated attention) is measured as written: it does save its [L, L] weights.

:class:`LiveBytes` is also the CPU's stand-in for ``torch.cuda.max_memory_allocated``: a dispatch
mode that counts every storage an op creates and forgets it when Python frees it.
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from unclip_lite.nn import repeated_blocks, set_grad_checkpointing


def _efficient_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    bias = None
    if attn_mask is not None:
        bias = (torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(~attn_mask, float("-inf"))
                if attn_mask.dtype == torch.bool else attn_mask.to(q.dtype))
        bias = bias.expand(*q.shape[:-1], k.shape[-2])
    return torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, bias, True, dropout_p, is_causal, scale=scale)[0]


@contextlib.contextmanager
def fused_attention():
    """``F.scaled_dot_product_attention`` through the memory-efficient kernel's op (see the docstring).

    The function itself is swapped, not intercepted by a ``TorchFunctionMode``: autograd runs a
    checkpointed block's recomputation without the torch-function modes of the forward, so the
    recomputed attention would take the math path and save other tensors (checkpoint's check
    that the recomputation saves what the forward saved then fails)."""
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _efficient_sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


class FlopCount(TorchDispatchMode):
    """FLOPs of the ops run under this mode, by ``torch.utils.flop_counter``'s formulas.

    ``FlopCounterMode`` would count the same, but its module tracker hooks every module call,
    recomputations included, and keeps tensors alive that the step would have freed: under it the
    checkpointed CLIP step peaked at twice its real activation memory."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **(kwargs or {}), out_val=out)
        return out


@dataclass
class StepTrace:
    """One forward + backward at ``batch``; bytes at the dtype it ran in."""

    batch: int
    saved_bytes: int  # unique storages saved for backward, parameters and buffers left out
    peak_bytes: int  # the peak of live activation bytes (see the module docstring)
    checkpointed_bytes: int  # the same with every block checkpointed
    flops: int  # forward + backward
    recompute_flops: int  # what checkpointing adds: the blocks' forward, recomputed (early-stopped)
    forward_flops: int


def _tensors(obj) -> list[torch.Tensor]:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


def _run(workload, batch: int, dtype: torch.dtype, checkpointing: bool) -> tuple[int, int, int, int]:
    """(saved bytes, peak activation bytes, forward FLOPs, FLOPs) of one meta-device step."""
    model = workload.model
    device = next(model.parameters()).device
    owned = {id(t.untyped_storage()) for t in [*model.parameters(), *model.buffers()]}
    saved: set[int] = set()  # ids of the live storages counted (holding them would skew the peak)
    saved_bytes = 0

    def pack(t):
        nonlocal saved_bytes
        s = t.untyped_storage()
        if id(s) not in owned and id(s) not in saved:
            saved.add(id(s))
            saved_bytes += s.nbytes()
            weakref.finalize(s, saved.discard, id(s))  # a later storage may reuse the id
        return t

    set_grad_checkpointing(model, checkpointing)
    # the gradients exist before the step (the plan's gradient line), so backward adds into them
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    existing = [*model.parameters(), *model.buffers(), *(p.grad for p in model.parameters())]
    try:
        with fused_attention(), LiveBytes(existing, device="meta") as memory, FlopCount() as flops:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                args, kwargs = workload.inputs(batch, device, dtype)
                loss = workload.loss(model(*args, **kwargs))
            forward_flops = flops.total
            loss.backward()
    finally:
        model.zero_grad(set_to_none=True)
        set_grad_checkpointing(model, False)
    return saved_bytes, memory.peak, forward_flops, flops.total


def trace_step(workload, batch: int, dtype: torch.dtype = torch.float32) -> StepTrace:
    """Run ``workload``'s training step at ``batch`` on the meta device with the model in ``dtype``,
    plain and (if it has blocks) checkpointed."""
    model = workload.model.to(dtype).train()
    device = next(model.parameters()).device
    if device.type != "meta":
        raise ValueError(f"trace_step runs on the meta device; the model is on {device}")
    saved, peak, forward_flops, flops = _run(workload, batch, dtype, checkpointing=False)
    checkpointed, recomputed = peak, flops  # a model without blocks has nothing to recompute
    if repeated_blocks(model):
        _, checkpointed, _, recomputed = _run(workload, batch, dtype, checkpointing=True)
    return StepTrace(batch, saved, peak, checkpointed, flops, recomputed - flops, forward_flops)


class LiveBytes(TorchDispatchMode):
    """Bytes of live tensor storages created under this mode: ``current`` and ``peak``.

    Every op's outputs are looked at; a storage not seen before (and not among ``existing``, the
    tensors alive before, e.g. weights and optimizer state) is counted until Python frees it
    (``weakref.finalize`` on the storage). In-place ops and views return a storage already
    counted, so they add nothing. The CPU has no ``max_memory_allocated``; this is it, minus
    allocator rounding and kernels' internal scratch space."""

    def __init__(self, existing=(), device: str = "cpu"):
        super().__init__()
        self.device = device  # the device type counted (the planner's steps run on "meta")
        self._existing = {id(t.untyped_storage()): t.untyped_storage() for t in existing}
        self._live: dict[int, int] = {}
        self.current = self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in _tensors(out):
            if t.device.type != self.device or t.is_sparse:
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


def measure_cpu_activations(workload, batch: int, seed: int = 0) -> int:
    """The real peak of live activation bytes over one fp32 forward + backward on the CPU, with the
    model as configured (checkpointed or not): what :func:`trace_step` measures on the meta device.
    The gradients are allocated first and, like the weights, left out."""
    model = workload.model.float().train()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    existing = [*model.parameters(), *model.buffers(), *(p.grad for p in model.parameters())]
    torch.manual_seed(seed)
    try:
        with LiveBytes(existing) as meter:
            args, kwargs = workload.inputs(batch, torch.device("cpu"), torch.float32)
            workload.loss(model(*args, **kwargs)).backward()
    finally:
        model.zero_grad(set_to_none=True)
    return meter.peak


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
