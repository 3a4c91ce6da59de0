"""Shared by the benchmarks: time two implementations' training steps in alternation.

Alternating (ours, theirs, ours, theirs, …) instead of timing one then the other means a
noisy machine slows both alike, so their ratio stays meaningful.
"""
import statistics
import time
from typing import Callable

import torch


def adamw_step(model: torch.nn.Module, loss_of: Callable[..., torch.Tensor]) -> Callable:
    """``step(precision, *inputs)``: forward under optional CPU bf16 autocast, backward, AdamW."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(precision: str, *inputs) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_of(*inputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def alternate(steps: dict[str, Callable[[], None]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each step, calling them in turn for ``warmup + rounds`` rounds."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def ratio_line(medians: dict[str, float], ours: str, theirs: str, goal: float = 1.0) -> str:
    ratio = medians[ours] / medians[theirs]
    return (f"{ours} {medians[ours] * 1000:.1f} ms/step, {theirs} {medians[theirs] * 1000:.1f} ms/step, "
            f"ratio {ours}/{theirs} = {ratio:.3f}   goal <= {goal}: {'met' if ratio <= goal else 'MISSED'}")
