"""The exercise machinery every chapter reuses.

A chapter asks the learner to write a function, then calls its check::

    from unclip_lite.exercises import ch00 as tests
    tests.test_circle_coverage(circle_coverage)

The check runs the learner's function and the reference solution on the same random and
edge-case inputs and compares the outputs. It prints one pass line, or raises
:class:`ExerciseFailed` with what differed (shape, dtype, the worst element) and a hint.
A function that still raises ``NotImplementedError`` is reported as "not done yet"
without an error, so a notebook with unsolved exercises still runs top to bottom.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

REGISTRY: dict[str, "Exercise"] = {}


class ExerciseFailed(AssertionError):
    """The learner's answer differs from the reference; the message says how."""


@dataclass
class Case:
    """One input to try: positional and keyword arguments, and a name for messages."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    name: str = ""


def compare_outputs(got: Any, expected: Any, atol: float = 1e-5, rtol: float = 1e-4) -> str | None:
    """None when ``got`` matches ``expected``, else a sentence saying what differs.

    Tensors must agree in shape, in dtype family (integer, floating, bool) and in value up
    to ``atol + rtol·|expected|``; tuples and lists element by element; anything else by ==.
    """
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"expected a torch.Tensor, got {type(got).__name__}"
        if tuple(got.shape) != tuple(expected.shape):
            return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        if got.is_floating_point() != expected.is_floating_point() or \
                (got.dtype == torch.bool) != (expected.dtype == torch.bool):
            return f"dtype {got.dtype}, expected {expected.dtype}"
        g, e = got.detach().double().cpu(), expected.detach().double().cpu()
        if torch.isnan(g).any() and not torch.isnan(e).any():
            return "the output contains NaN"
        err = (g - e).abs()
        bad = err > atol + rtol * e.abs()
        if bad.any():
            worst = tuple(torch.unravel_index(err.argmax(), err.shape)) if err.dim() else ()
            index = tuple(int(i) for i in worst)
            return (f"{int(bad.sum())} of {bad.numel()} values differ; worst at index {index}: "
                    f"got {g[worst].item():.6g}, expected {e[worst].item():.6g}")
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected a sequence of {len(expected)} items, got {got!r:.80}"
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = compare_outputs(g, e, atol, rtol)
            if problem:
                return f"item {i}: {problem}"
        return None
    if isinstance(expected, float):
        if not isinstance(got, (int, float)) or abs(got - expected) > atol + rtol * abs(expected):
            return f"got {got!r}, expected {expected!r}"
        return None
    return None if got == expected else f"got {got!r:.80}, expected {expected!r:.80}"


@dataclass
class Exercise:
    """A function to write, its reference solution, and the inputs to test it on."""

    name: str
    reference: Callable
    cases: Callable[[], Iterable[Case]]
    hint: str = ""
    atol: float = 1e-5
    rtol: float = 1e-4
    compare: Callable[[Any, Any], str | None] | None = None

    def __post_init__(self):
        REGISTRY[self.name] = self

    def check(self, fn: Callable, verbose: bool = True) -> bool:
        """True when ``fn`` matches the reference on every case; raises when it does not.

        Returns False (with a friendly line) when ``fn`` raises ``NotImplementedError``.
        """
        compare = self.compare or (lambda g, e: compare_outputs(g, e, self.atol, self.rtol))
        n = 0
        for n, case in enumerate(self.cases(), start=1):
            expected = self.reference(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
            try:
                got = fn(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
            except NotImplementedError:
                if verbose:
                    print(f"⏳ {self.name}: not implemented yet. Write it, then run this cell again.")
                return False
            except Exception as err:
                raise ExerciseFailed(
                    f"❌ {self.name}: raised {type(err).__name__}: {err}\n"
                    f"   on case {case.name or n}" + (f"\n   Hint: {self.hint}" if self.hint else "")
                ) from err
            problem = compare(got, expected)
            if problem:
                raise ExerciseFailed(
                    f"❌ {self.name}: wrong on case {case.name or n}: {problem}"
                    + (f"\n   Hint: {self.hint}" if self.hint else ""))
        if verbose:
            print(f"✅ {self.name}: all {n} cases match the reference.")
        return True


def seeded(seed: int) -> torch.Generator:
    """A fresh generator, so every check draws the same cases every time."""
    return torch.Generator().manual_seed(seed)
