"""Plausible wrong answers to chapter 10's exercises; tests/test_exercises.py loads this file."""
import math

import torch
from torch.utils.checkpoint import checkpoint

_HALF = {"fp32": False, "bf16": True, "fp16": True}


# --- ch10.state_bytes -------------------------------------------------------------------------
def state_no_master_weights(parameters, precision, gpus, fsdp):  # forgets the fp32 copy: 2 + 2 + 8
    per = 12 if _HALF[precision] else 16
    return per * parameters / (gpus if fsdp else 1)


def state_zero1(parameters, precision, gpus, fsdp):  # shards only the optimizer state (ZeRO-1), not all three
    w, g, o = (2, 2, 12) if _HALF[precision] else (4, 4, 8)
    return (w + g + o / (gpus if fsdp else 1)) * parameters


def state_ddp_shards_too(parameters, precision, gpus, fsdp):  # thinks DDP splits the model over the GPUs
    return 16 * parameters / gpus


def state_fp32_has_master(parameters, precision, gpus, fsdp):  # gives fp32 a master copy as well: 4 + 4 + 12
    per = 16 if _HALF[precision] else 20
    return per * parameters / (gpus if fsdp else 1)


# --- ch10.block_flops -------------------------------------------------------------------------
def _matmul_weights(width, mlp_ratio):
    return 4 * width * width + 2 * width * int(width * mlp_ratio)


def flops_six_n_t(batch, tokens, width, mlp_ratio=4.0):  # the 6·N·D rule alone: no attention
    return 6 * batch * tokens * _matmul_weights(width, mlp_ratio)


def flops_forward_only(batch, tokens, width, mlp_ratio=4.0):  # forgets the backward pass
    return 2 * batch * tokens * _matmul_weights(width, mlp_ratio) + 4 * batch * tokens ** 2 * width


def flops_fused_recompute(batch, tokens, width, mlp_ratio=4.0):  # counts a fused kernel's backward (5 matmuls)
    return 6 * batch * tokens * _matmul_weights(width, mlp_ratio) + 14 * batch * tokens ** 2 * width


def flops_twelve_w_squared(batch, tokens, width, mlp_ratio=4.0):  # 12·W² per layer whatever the MLP ratio
    return 6 * batch * tokens * 12 * width * width + 12 * batch * tokens ** 2 * width


# --- ch10.largest_batch -----------------------------------------------------------------------
def _states(m, gpus, fsdp, buffers=True):
    shards = gpus if fsdp else 1
    return 16 * m.parameters / shards + (6 * m.largest_unit if fsdp and buffers else 0)


def batch_gigabytes(m, gpus, fsdp, checkpointing, gpu_memory_gib):  # 10⁹ bytes where the GPU has 2³⁰
    fixed, per = m.checkpointed if checkpointing else m.activations
    return max(0, math.floor((gpu_memory_gib * 1e9 - _states(m, gpus, fsdp) - fixed) / per))


def batch_no_fsdp_buffers(m, gpus, fsdp, checkpointing, gpu_memory_gib):  # forgets the gathered units
    fixed, per = m.checkpointed if checkpointing else m.activations
    return max(0, math.floor((gpu_memory_gib * 2 ** 30 - _states(m, gpus, fsdp, buffers=False) - fixed) / per))


def batch_rounded(m, gpus, fsdp, checkpointing, gpu_memory_gib):  # rounds to the nearest: may not fit
    fixed, per = m.checkpointed if checkpointing else m.activations
    return max(0, round((gpu_memory_gib * 2 ** 30 - _states(m, gpus, fsdp) - fixed) / per))


def batch_ignores_checkpointing(m, gpus, fsdp, checkpointing, gpu_memory_gib):  # always the full activations
    fixed, per = m.activations
    return max(0, math.floor((gpu_memory_gib * 2 ** 30 - _states(m, gpus, fsdp) - fixed) / per))


def batch_negative(m, gpus, fsdp, checkpointing, gpu_memory_gib):  # a negative batch when nothing fits
    fixed, per = m.checkpointed if checkpointing else m.activations
    return math.floor((gpu_memory_gib * 2 ** 30 - _states(m, gpus, fsdp) - fixed) / per)


# --- ch10.checkpointed_stack ----------------------------------------------------------------------
def stack_plain(blocks, x):  # no checkpointing: right values, every block's activations kept
    for block in blocks:
        x = block(x)
    return x


def stack_checkpointed_whole(blocks, x):  # one checkpoint around the loop: the backward rebuilds all at once
    return checkpoint(stack_plain, blocks, x, use_reentrant=False)


def stack_detached(blocks, x):  # detaches between blocks: the earlier blocks get no gradient
    for block in blocks:
        x = checkpoint(block, x.detach().requires_grad_(), use_reentrant=False)
    return x


# --- ch10.rank_samples ------------------------------------------------------------------------
def _locate(sizes, positions):
    ends = sizes.cumsum(0)
    shard = torch.searchsorted(ends, positions, right=True)
    return torch.stack([shard, positions - (ends[shard] - sizes[shard])], dim=1)


def ranks_interleaved(sizes, batch_size, rank, world_size, index):  # sample k to rank k mod W
    positions = (index * batch_size + torch.arange(batch_size)) * world_size + rank
    return _locate(sizes, positions)


def ranks_ceil_share(sizes, batch_size, rank, world_size, index):  # shares of ceil(N / W): overlap the next rank's
    per_rank = -(-int(sizes.sum()) // world_size)
    return _locate(sizes, rank * per_rank + index * batch_size + torch.arange(batch_size))


def ranks_left_search(sizes, batch_size, rank, world_size, index):  # searchsorted without right=True
    per_rank = int(sizes.sum()) // world_size
    positions = rank * per_rank + index * batch_size + torch.arange(batch_size)
    ends = sizes.cumsum(0)
    shard = torch.searchsorted(ends, positions)
    return torch.stack([shard, positions - (ends[shard] - sizes[shard])], dim=1)


def ranks_batches_interleaved(sizes, batch_size, rank, world_size, index):  # batch i of rank r = global batch i·W + r
    positions = (index * world_size + rank) * batch_size + torch.arange(batch_size)
    return _locate(sizes, positions)


WRONG_ANSWERS = {
    "ch10.state_bytes": [state_no_master_weights, state_zero1, state_ddp_shards_too, state_fp32_has_master],
    "ch10.block_flops": [flops_six_n_t, flops_forward_only, flops_fused_recompute, flops_twelve_w_squared],
    "ch10.largest_batch": [batch_gigabytes, batch_no_fsdp_buffers, batch_rounded, batch_ignores_checkpointing,
                           batch_negative],
    "ch10.checkpointed_stack": [stack_plain, stack_checkpointed_whole, stack_detached],
    "ch10.rank_samples": [ranks_interleaved, ranks_ceil_share, ranks_left_search, ranks_batches_interleaved],
}
