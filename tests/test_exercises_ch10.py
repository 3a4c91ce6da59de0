"""Chapter 10's exercise references agree with the package machinery they stand for: the planner's
fit (``plan().max_per_gpu_batch``), the data stream's order (``EpochOrder.locate``), a FLOP count
on real CPU tensors, and the package's own per-block checkpointing (``set_grad_checkpointing``)."""
import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from unclip_lite.data.sharded import EpochOrder
from unclip_lite.exercises import ch10
from unclip_lite.nn import Block, set_grad_checkpointing
from unclip_lite.planner import measure, plan


@pytest.mark.parametrize("kind, config", [("prior", "shapes-tiny"), ("clip", "shapes-tiny")])
@pytest.mark.parametrize("gpus, fsdp, checkpointing, memory", [(1, False, False, 0.2), (4, True, True, 0.1),
                                                               (2, False, True, 0.3), (8, True, False, 0.05)])
def test_largest_batch_is_the_planners(kind, config, gpus, fsdp, checkpointing, memory):
    p = plan(kind, config, gpus, gpus, "bf16", fsdp, checkpointing, memory)
    assert ch10.largest_batch(measure(kind, config, "bf16"), gpus, fsdp, checkpointing, memory) == p.max_per_gpu_batch
    assert ch10.state_bytes(p.parameters, "bf16", gpus, fsdp) == p.weights + p.gradients + p.optimizer


def test_rank_samples_is_the_streams_order():
    sizes = np.array([12, 12, 12, 4, 9, 7])
    for world_size, batch_size in ((1, 4), (2, 3), (3, 5)):
        for rank in range(world_size):
            order = EpochOrder(sizes, batch_size, rank, world_size, seed=3)
            units = order.epoch_units(0)  # this epoch's shard permutation, the same on every rank
            for index in range(order.batches_per_epoch):
                ours = ch10.rank_samples(torch.as_tensor(sizes[units]), batch_size, rank, world_size, index)
                theirs = [(ref.unit, ref.offset) for ref in order.locate(index)]
                assert [(int(units[s]), int(o)) for s, o in ours.tolist()] == theirs


def test_block_flops_on_the_meta_device_equal_a_real_cpu_count():
    torch.manual_seed(0)
    block, x = Block(32, 2, 3.0), torch.randn(2, 9, 32, requires_grad=True)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        block(x).sum().backward()
    assert ch10.block_flops(2, 9, 32, 3.0) == counter.get_total_flops()


def test_the_packages_checkpointing_saves_what_the_reference_saves():
    case = next(iter(ch10._stack_cases()))
    _, _, reference_peak = ch10.EX_STACK.run(ch10.checkpointed_stack, case)

    def plain(blocks, x):
        for block in blocks:
            x = block(x)
        return x

    def package(blocks, x):
        set_grad_checkpointing(blocks, True)
        return plain(blocks, x)

    out, grads, peak = ch10.EX_STACK.run(package, case)
    expected_out, expected_grads, _ = ch10.EX_STACK.run(ch10.checkpointed_stack, case)
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(grads, expected_grads)
    assert peak <= 1.1 * reference_peak
    assert ch10.EX_STACK.run(plain, case)[2] > 2 * reference_peak
