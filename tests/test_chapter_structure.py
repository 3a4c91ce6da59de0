"""Chapters 00–06 read the way the course promises (issue 16): every exercise is labelled, hinted
and has its solution in a collapsed block (never an executable cell Run All would use); every
solution written in a chapter passes its own check; each chapter opens with prerequisites,
objectives and its run time and ends with a recap, open questions and further reading; and the
exercises add up to the machinery the course promises."""
import ast
import builtins
import importlib
import json
import math
import re
from pathlib import Path

import pytest
import torch

from unclip_lite.exercises.core import REGISTRY

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LEARNER_CHAPTERS = ["00", "01", "02", "03", "04", "05", "06"]
ALL_CHAPTERS = sorted(p.name[:2] for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
LABEL = re.compile(r"\*\*Difficulty\*\* [★☆]{5} · \*\*Importance\*\* [★☆]{5} · \*\*≈ \d+ min\*\*")
SOLUTION = re.compile(r"<details><summary>Solution[^<]*</summary>\s*```python\n(.*?)```\s*</details>", re.S)
STUB_CHECK = re.compile(r"^(\w+) = tests\.check\(\1(?:, \"(\w+)\")?\)\s*$", re.M)


def cells(chapter: str) -> list[dict]:
    (path,) = NOTEBOOKS.glob(f"{chapter}_*.ipynb")
    return [{"type": c["cell_type"], "source": "".join(c["source"]), "tags": c.get("metadata", {}).get("tags", [])}
            for c in json.loads(path.read_text())["cells"]]


def exercises(chapter: str):
    """(markdown before the stub, the stub, the markdown after it) for each exercise cell."""
    cs = cells(chapter)
    for i, c in enumerate(cs):
        if c["type"] == "code" and STUB_CHECK.search(c["source"]):
            before = []
            for prev in reversed(cs[:i]):
                if prev["type"] != "markdown":
                    break
                before.insert(0, prev["source"])
            after = cs[i + 1]["source"] if i + 1 < len(cs) and cs[i + 1]["type"] == "markdown" else ""
            yield "\n".join(before), c["source"], after


@pytest.mark.parametrize("chapter", ALL_CHAPTERS)
def test_no_executable_solution_cell_and_every_stub_has_a_collapsed_solution(chapter):
    found = list(exercises(chapter))
    assert found, f"chapter {chapter} has no exercise cells"
    for _, stub, after in found:
        assert "raise NotImplementedError" in stub, stub
        assert SOLUTION.search(after), f"chapter {chapter}: no collapsed solution after\n{stub}"
    for c in cells(chapter):
        if c["type"] == "code":
            assert "tests.test_" not in c["source"], f"chapter {chapter}: a cell still calls a bool check:\n{c['source']}"


@pytest.mark.parametrize("chapter", LEARNER_CHAPTERS)
def test_every_exercise_is_labelled_and_hinted(chapter):
    for before, stub, _ in exercises(chapter):
        name = STUB_CHECK.search(stub).group(1)
        assert re.search(r"^###+ Exercise", before, re.M), f"{chapter}.{name}: no exercise header"
        assert LABEL.search(before), f"{chapter}.{name}: no difficulty / importance / minutes label"
        hints = re.findall(r"<details><summary>Hint (\d)</summary>", before)
        assert hints[:2] == ["1", "2"], f"{chapter}.{name}: hints should be graded (Hint 1, Hint 2, ...)"


@pytest.mark.parametrize("chapter", LEARNER_CHAPTERS)
def test_chapter_opens_and_ends_as_the_course_promises(chapter):
    cs = cells(chapter)
    opening = "\n".join(c["source"] for c in cs[:3] if c["type"] == "markdown")
    for label in ("**Prerequisites.**", "**Learning objectives.**", "**Run time.**"):
        assert label in opening, f"chapter {chapter} does not open with {label}"
    assert any("chapter_runtime(" in c["source"] for c in cs[:6] if c["type"] == "code")
    headings = [line for c in cs if c["type"] == "markdown" for line in c["source"].splitlines()
                if line.startswith("## ")]
    assert headings[-3:] == ["## Recap", "## Open questions", "## Further reading"], headings[-3:]
    markdown = "\n".join(c["source"] for c in cs if c["type"] == "markdown")
    section = markdown.split("\n## Open questions", 1)[1].split("\n## ", 1)[0]
    n = len(re.findall(r"^(?:[-*]|\d+\.) ", section, re.M))  # top-level items only
    assert 3 <= n <= 5, f"chapter {chapter}: {n} open questions, the course promises 3–5"


def solution_namespace() -> dict:
    import torch.nn as nn
    import torch.nn.functional as F
    from einops import rearrange
    return {"torch": torch, "nn": nn, "F": F, "math": math, "rearrange": rearrange, "__builtins__": builtins}


@pytest.mark.parametrize("chapter", ALL_CHAPTERS)
def test_every_written_solution_passes_its_check(chapter, capsys):
    """The code a learner reads in a collapsed solution is the code that passes the check: each
    chapter's solutions run in order in one namespace (later ones use earlier ones, as in the chapter)."""
    module = importlib.import_module(f"unclip_lite.exercises.ch{chapter}")
    namespace = solution_namespace()
    namespace["tests"] = module
    for _, stub, after in exercises(chapter):
        match = STUB_CHECK.search(stub)
        name, exercise_name = match.group(1), match.group(2) or match.group(1)
        for node in ast.parse(stub).body:  # constants the stub cell sets (PAD, SOT, EOT = 0, 1, 2)
            if isinstance(node, ast.Assign) and not isinstance(node.value, ast.Call):
                exec(compile(ast.Module([node], []), "<stub>", "exec"), namespace)
        exec(compile(SOLUTION.search(after).group(1), f"<{chapter} solution of {name}>", "exec"), namespace)
        assert REGISTRY[f"ch{chapter}.{exercise_name}"].check(namespace[name]) is True
    assert "❌" not in capsys.readouterr().out


def test_the_course_counts_its_exercises():
    """≥ 40 checked exercises in chapters 00–06, ≥ 10 of them building a module, a step or a loop."""
    for chapter in LEARNER_CHAPTERS:
        importlib.import_module(f"unclip_lite.exercises.ch{chapter}")
    ours = [e for n, e in REGISTRY.items() if n.split(".")[0] in {f"ch{c}" for c in LEARNER_CHAPTERS}]
    building = [e.name for e in ours if e.kind in {"module", "step", "loop"}]
    in_chapters = {f"ch{c}.{m.group(2) or m.group(1)}" for c in LEARNER_CHAPTERS
                   for _, stub, _ in exercises(c) for m in [STUB_CHECK.search(stub)]}
    assert {e.name for e in ours} <= in_chapters, "an exercise is registered but no chapter asks for it"
    assert len(ours) >= 40, f"{len(ours)} exercises in chapters 00–06"
    assert len(building) >= 10, f"{len(building)} build a module, step or loop: {building}"
