"""The exercise machinery every chapter reuses.

A chapter asks the learner to write a function, then calls its check::

    from unclip_lite.exercises import ch00 as tests
    tests.test_circle_coverage(circle_coverage)

The check runs the learner's function and the reference solution on the same random and
edge-case inputs and compares the outputs. It prints one pass line, or raises
:class:`ExerciseFailed` with what differed (shape, dtype, the worst element) and a hint.
A function that still raises ``NotImplementedError`` is reported as "not done yet"
without an error, so a notebook with unsolved exercises still runs top to bottom.

In the chapters every exercise cell ends with ``name = tests.check(name)``
(:meth:`Exercise.accept`): the cells below use the learner's function once it passes. Until
then they use the reference, and the cell says so with ⏳, never ✅. The book and the test
suite set ``UNCLIP_LITE_SOLUTIONS=1`` to run every chapter with the references filled in; the
solutions the learner may read sit in collapsed ``<details>`` blocks, out of reach of Run All.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

REGISTRY: dict[str, "Exercise"] = {}
SOLUTIONS_ENV = "UNCLIP_LITE_SOLUTIONS"


def solutions_filled() -> bool:
    """True when ``$UNCLIP_LITE_SOLUTIONS`` asks for the reference solutions (the book and CI)."""
    return os.environ.get(SOLUTIONS_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


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
    # What the learner builds: "function" (one formula), or "module", "step" (a training step) and
    # "loop" (a sampler or optimisation loop), the central machinery the course counts.
    kind: str = "function"

    def __post_init__(self):
        REGISTRY[self.name] = self

    def run(self, fn: Callable, case: Case) -> Any:
        """Call a candidate (the reference or the learner's) on one case; subclasses that check a
        module or a training step override this to build, load and drive it."""
        return fn(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))

    def verdict(self, fn: Callable) -> int | None:
        """The number of cases ``fn`` matches, or None while it raises ``NotImplementedError``.

        Raises :class:`ExerciseFailed` with the first case that differs.
        """
        compare = self.compare or (lambda g, e: compare_outputs(g, e, self.atol, self.rtol))
        n = 0
        for n, case in enumerate(self.cases(), start=1):
            expected = self.run(self.reference, case)
            try:
                got = self.run(fn, case)
            except NotImplementedError:
                return None
            except ExerciseFailed:
                raise
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
        return n

    def check(self, fn: Callable, verbose: bool = True) -> bool:
        """True when ``fn`` matches the reference on every case; raises when it does not.

        Returns False (with a friendly line) when ``fn`` raises ``NotImplementedError``.
        """
        n = self.verdict(fn)
        if verbose:
            print(f"⏳ {self.name}: not implemented yet. Write it, then run this cell again." if n is None
                  else f"✅ {self.name}: all {n} cases match the reference.")
        return n is not None

    def accept(self, fn: Callable) -> Callable:
        """What the cells after an exercise use: the learner's ``fn`` once it passes.

        While ``fn`` is a stub, the reference stands in so the chapter still runs to the end, and
        the line printed says so (⏳, or 🔑 when ``$UNCLIP_LITE_SOLUTIONS`` fills the solutions in).
        A wrong answer raises :class:`ExerciseFailed`, stopping Run All where the mistake is.
        """
        n = self.verdict(fn)
        if n is not None:
            print(f"✅ {self.name}: all {n} cases match the reference. The cells below use your version.")
            return fn
        if solutions_filled():
            print(f"🔑 {self.name}: the reference solution is filled in ({SOLUTIONS_ENV}=1).")
        else:
            print(f"⏳ {self.name}: not done yet. The cells below use the reference solution until yours "
                  "passes: write it, then run this cell again.")
        return self.reference


def checker(chapter: str) -> Callable[..., Callable]:
    """A chapter's ``check(fn)``: finds the exercise ``"<chapter>.<fn's name>"`` and accepts ``fn``."""

    def check(fn: Callable, name: str | None = None) -> Callable:
        key = f"{chapter}.{name or fn.__name__}"
        if key not in REGISTRY:
            known = sorted(k.split(".", 1)[1] for k in REGISTRY if k.startswith(chapter + "."))
            raise KeyError(f"no exercise {key!r}: keep the name the cell gave your function (one of {known})")
        return REGISTRY[key].accept(fn)

    return check


def seeded(seed: int) -> torch.Generator:
    """A fresh generator, so every check draws the same cases every time."""
    return torch.Generator().manual_seed(seed)


class ModuleExercise(Exercise):
    """An exercise whose answer is an ``nn.Module`` class (a block, an embedding, a layer).

    A case is ``Case((constructor_kwargs, *inputs))``. The check builds the reference module
    (seeded), builds the learner's with the same arguments, copies the reference's weights into
    it (so the parameter names the cell gives must be kept), and compares the forward output,
    then the gradients that one fixed loss sends to every parameter and floating input.
    """

    def __post_init__(self):
        if self.kind == "function":  # the dataclass default: a module exercise builds a module
            self.kind = "module"
        super().__post_init__()

    def prepare(self, reference: torch.nn.Module) -> None:
        """Set the reference's weights before they are copied (e.g. randomise a zero-initialised layer)."""

    def run(self, cls: Callable, case: Case) -> Any:
        init, *inputs = copy.deepcopy(case.args)
        with torch.random.fork_rng(devices=[]):  # building the modules leaves the notebook's RNG alone
            torch.manual_seed(0)
            reference = self.reference(**init)
            module = reference if cls is self.reference else cls(**init)
        self.prepare(reference)
        if module is not reference:
            want, have = set(reference.state_dict()), set(module.state_dict())
            if want != have:
                raise ExerciseFailed(
                    f"❌ {self.name}: the parameters are named differently on case {case.name}: missing "
                    f"{sorted(want - have)}, unexpected {sorted(have - want)}. Keep the names the cell gives.")
            module.load_state_dict(reference.state_dict())
        inputs = [x.detach().requires_grad_() if isinstance(x, torch.Tensor) and x.is_floating_point() else x
                  for x in inputs]
        out = module(*inputs, **copy.deepcopy(case.kwargs))
        if not isinstance(out, torch.Tensor):
            return out
        weight = torch.linspace(-1, 1, out.numel()).view_as(out)  # one fixed, uneven loss
        if out.requires_grad:
            (out * weight).sum().backward()
        param_grads = [torch.zeros_like(p) if p.grad is None else p.grad
                       for _, p in sorted(module.named_parameters())]
        input_grads = [torch.zeros_like(x) if x.grad is None else x.grad
                       for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
        return out.detach(), param_grads, input_grads
