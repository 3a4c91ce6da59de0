"""``unclip-lite plan``: the memory and FLOP planner against closed forms and real CPU training steps.

The tiny configs are planned in fp32 (cached per process: two meta-device traces each); the
full-size configs take their meta-device step in the ``slow`` test.
"""
from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from unclip_lite.planner import (GIB, PLAN_KIND_NAMES, STATE_BYTES, TABLE_LABELS, DoesNotFitError, PlanError,
                                 add_plan_arguments, cmd_plan, plan)
from unclip_lite.nn import set_grad_checkpointing
from unclip_lite.planner_measure import LiveBytes, measure_cpu_activations, measure_cpu_step, trace_step
from unclip_lite.planner_models import PLAN_KINDS, Workload, build_workload

# (kind, config, global batch): a real fp32 AdamW step on the CPU against the plan
REAL_STEPS = [("clip", "shapes-tiny", 32), ("glide", "shapes-tiny", 8)]


def _plan(kind="clip", config="shapes-tiny", batch=32, **kwargs):
    return plan(kind, config, batch, **{"precision": "fp32", **kwargs})


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
@pytest.mark.parametrize("kind, config, batch", REAL_STEPS)
def test_predicted_memory_matches_a_real_cpu_training_step(kind, config, batch, checkpointing):
    predicted = _plan(kind, config, batch, checkpointing=checkpointing)
    torch.manual_seed(0)
    workload = build_workload(kind, config, device="cpu")
    if checkpointing:
        set_grad_checkpointing(workload.model)  # the models' own checkpointing, as a training run sets it
    # the activations' peak over a real forward + backward, against the meta-device trace extended
    # linearly from batch 1 and 2: measured within 0.3%. (The checkpointed activations the planner
    # used to model, before the blocks could recompute, were 3% (GLIDE) and 11% (CLIP) short.)
    assert measure_cpu_activations(workload, batch) == pytest.approx(predicted.activations, rel=0.05)
    real = measure_cpu_step(workload, batch)
    # weights + AdamW's m and v: exact (the buffers are a few bytes)
    assert real["states_bytes"] == pytest.approx(predicted.weights + predicted.optimizer, rel=1e-3)
    # the plan holds weights, gradients, optimizer state and activations all at once: an upper bound
    assert real["peak_bytes"] <= predicted.total
    # the trainer frees gradients between steps, so the peak is at least weights + state +
    # max(gradients, activations) (without checkpointing, exactly that: the activations are gone
    # before the last gradients come; with it, the recomputed blocks overlap the gradients)
    assert real["peak_bytes"] >= 0.95 * predicted.peak_freed_gradients
    if not checkpointing:
        assert real["peak_bytes"] == pytest.approx(predicted.peak_freed_gradients, rel=0.05)


def test_parameter_counts_are_exact():
    from unclip_lite.clip import build_clip, count_parameters
    from unclip_lite.glide.recipes import new_glide

    assert _plan("clip", "shapes-tiny").parameters == count_parameters(build_clip("shapes-tiny"))
    glide = new_glide("shapes-tiny").model  # the shipped recipe's model, on the Shapes vocabulary
    assert _plan("glide", "shapes-tiny", 8).parameters == sum(p.numel() for p in glide.parameters())


def _linear_toy(requires_grad=True):
    """Two bias-free Linears on [batch, 10, 64] tokens: N = 2 * 64 * 256 weights."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(64, 256, bias=False), nn.Linear(256, 64, bias=False))

    def inputs(batch, device, dtype):
        return (torch.randn(batch, 10, 64, device=device, dtype=dtype, requires_grad=requires_grad),), {}
    return Workload(model, inputs, lambda out: out.float().sum())


def test_linear_flops_are_six_n_tokens_and_activations_are_the_inputs():
    n, batch = 2 * 64 * 256, 3
    tokens = batch * 10
    step = trace_step(_linear_toy(), batch)
    assert step.forward_flops == 2 * n * tokens
    assert step.flops == 6 * n * tokens  # forward 2N, backward 4N per token
    assert step.recompute_flops == 0  # no residual blocks: nothing to checkpoint
    assert step.saved_bytes == 4 * tokens * (64 + 256)  # each Linear keeps its input; weights are not activations
    half = trace_step(_linear_toy(), batch, torch.bfloat16)
    assert half.saved_bytes == step.saved_bytes // 2 and half.flops == step.flops
    # an input that needs no gradient skips the first layer's input gradient: 2N less per token for it
    assert trace_step(_linear_toy(requires_grad=False), batch).flops == 6 * n * tokens - 2 * 64 * 256 * tokens


def test_checkpointing_is_measured_on_the_blocks_own_recomputation():
    from unclip_lite.nn import Transformer

    layers, batch, length, width = 4, 2, 8, 32
    tokens = batch * length

    def transformer(device):
        with torch.device(device):
            return Transformer(width, layers, heads=4)

    def inputs(b, device, dtype):
        return (torch.randn(b, length, width, device=device, dtype=dtype, requires_grad=True),), {}
    step = trace_step(Workload(transformer("meta"), inputs, lambda out: out.sum()), batch)
    # every FLOP is inside a block, and each block is recomputed up to the input of its last
    # Linear (mlp.c_proj, width 4w -> w): its output is saved by nobody, so autograd stops there
    assert step.recompute_flops == step.forward_flops - layers * 2 * tokens * 4 * width * width
    # the checkpointed peak, against the same blocks checkpointed in a real CPU step
    cpu = Workload(transformer("cpu"), inputs, lambda out: out.sum())
    set_grad_checkpointing(cpu.model)
    assert step.checkpointed_bytes == pytest.approx(measure_cpu_activations(cpu, batch), rel=0.02)
    # and it keeps one block's internals, not four: well under half the plain step's peak
    block_input = 4 * tokens * width
    assert layers * block_input < step.checkpointed_bytes < step.peak_bytes / 2


def test_fsdp_divides_the_states_by_the_gpus():
    ddp, fsdp = _plan(batch=64, gpus=8), _plan(batch=64, gpus=8, fsdp=True)
    for name in ("weights", "gradients", "optimizer"):
        assert getattr(fsdp, name) * 8 == getattr(ddp, name)
    assert ddp.weights + ddp.gradients + ddp.optimizer == 16 * ddp.parameters
    assert fsdp.activations == ddp.activations  # data parallel: the same 8 examples per GPU either way
    assert ddp.fsdp_buffers == 0 and 0 < fsdp.fsdp_buffers < ddp.weights * 3
    assert fsdp.flops_per_step == ddp.flops_per_step
    assert fsdp.max_per_gpu_batch >= ddp.max_per_gpu_batch


def test_mixed_precision_convention():
    assert [sum(STATE_BYTES[p]) for p in ("fp32", "bf16", "fp16")] == [16, 16, 16]
    assert STATE_BYTES["bf16"] == (2, 2, 12)  # bf16 weights and gradients; fp32 master, m, v


@pytest.mark.parametrize("overrides, message", [
    ({"precision": "int8"}, "unknown precision 'int8'"),
    ({"fsdp": True, "gpus": 1}, "FSDP on a single process shards nothing"),
    ({"batch": 10, "gpus": 4}, "must be a positive multiple of --gpus"),
    ({"kind": "vqgan"}, "cannot plan model kind 'vqgan'"),
    ({"config": "ViT-Z-99"}, "unknown clip config 'ViT-Z-99'"),
    ({"gpu_memory_gb": 0}, "--gpu-memory must be positive"),
])
def test_impossible_requests_are_clear_errors(overrides, message):
    with pytest.raises(PlanError, match=message):
        _plan(**overrides)


def test_a_batch_that_does_not_fit_says_by_how_much():
    fits = _plan(gpu_memory_gb=1.0)
    largest = fits.max_per_gpu_batch
    assert _plan(batch=largest, gpu_memory_gb=1.0).fits
    too_big = _plan(batch=largest + 1, gpu_memory_gb=1.0)
    assert not too_big.fits and too_big.total > GIB
    with pytest.raises(DoesNotFitError, match=rf"GiB \(\d+%\) over the 1 GiB; the largest per-GPU batch "
                                              rf"that fits is {largest} \(global {largest}\)"):
        too_big.require_fit()
    with pytest.raises(DoesNotFitError, match="cannot fit at any batch"):
        _plan(gpu_memory_gb=0.01).require_fit()  # 16 B x 1.7M parameters is 0.025 GiB


def test_the_largest_batch_grows_with_memory_and_with_checkpointing():
    sizes = [_plan("glide", "shapes-tiny", 8, gpu_memory_gb=m).max_per_gpu_batch for m in (0.05, 0.25, 1, 8, 80)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    plain, checkpointed = _plan("glide", "shapes-tiny", 8), _plan("glide", "shapes-tiny", 8, checkpointing=True)
    assert checkpointed.activations < plain.activations and checkpointed.max_per_gpu_batch > plain.max_per_gpu_batch
    assert 0 < checkpointed.recompute_flops_per_step < checkpointed.flops_per_step / 2


def _run(argv):
    parser = argparse.ArgumentParser()
    add_plan_arguments(parser)
    return cmd_plan(parser.parse_args(argv))


def test_cmd_plan_prints_the_report_and_exit_codes(capsys):
    assert _run(["clip", "--config", "shapes-tiny", "--batch", "64", "--gpus", "2", "--fsdp",
                 "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "FSDP over 2 GPUs" in out and "largest per-GPU batch that fits" in out and "FLOPs per training step" in out
    assert _run(["clip", "--config", "shapes-tiny", "--fsdp"]) == 2
    assert "shards nothing" in capsys.readouterr().err
    assert _run(["clip", "--config", "shapes-tiny", "--precision", "fp8"]) == 2
    assert "unknown precision 'fp8'" in capsys.readouterr().err
    assert _run(["clip", "--config", "shapes-tiny", "--batch", "100000", "--precision", "fp32"]) == 1
    captured = capsys.readouterr()
    assert "fits: NO" in captured.out and "does not fit" in captured.err and "over the 80 GiB" in captured.err


def test_live_bytes_counts_what_is_alive():
    with LiveBytes() as meter:
        a = torch.zeros(1000)
        b = a.view(10, 100) * 2  # a view adds nothing; the product is new
        a.add_(1)  # in place: nothing new
        del a
        peak = meter.peak
        del b
    assert peak == 8000 and meter.current == 0


def test_kind_names_and_table_rows_name_real_configs():
    assert PLAN_KIND_NAMES == tuple(PLAN_KINDS)
    for kind, config in TABLE_LABELS:
        assert config in PLAN_KINDS[kind].configs() and config in PLAN_KINDS[kind].full_size


@pytest.mark.slow
def test_every_full_size_config_takes_a_meta_step():
    from unclip_lite.planner import full_size_table
    from unclip_lite.unclip.pipeline import paper_system_parameters

    rows = {(r["kind"], r["config"]): r for r in full_size_table()}
    paper = paper_system_parameters()
    assert rows[("decoder", "paper-3.5b")]["parameters"] == paper["decoder"]
    assert rows[("prior", "paper-1b")]["parameters"] == paper["prior"]
    assert rows[("clip", "ViT-H-16-256")]["parameters"] == paper["clip_image"] + paper["clip_text"] + 1
    assert rows[("upsampler", "paper-64-256")]["parameters"] == paper["upsampler_64->256"]
    assert all(r["fits"] and r["flops_per_image"] > 0 for r in rows.values())
