"""The package's layers hold: nothing imports upward, and no two modules import each other.

Read from the source with ``ast`` (nothing is imported), every ``import`` counts — at the top
of a module or inside a function, since a function-level import is still a dependency, only
a hidden one. The layers, low to high (a module may import its own layer and those below):

0. foundations: profiles, utils, hardware, tokenizer, nn, viz, the data worlds
1. machinery: diffusion, train, checkpoints, the bundle base
2. CLIP, and the judge that grades Shapes images
3. the U-Net and GLIDE (text-to-image, inpainting, upsampling, the classifier, guides)
4. unCLIP (the priors and the decoder)
5. the front ends: the registry of model kinds, the command line, the chapter exercises
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "unclip_lite"
LAYERS = [
    ["unclip_lite", "unclip_lite.profiles", "unclip_lite.utils", "unclip_lite.hardware", "unclip_lite.tokenizer",
     "unclip_lite.nn", "unclip_lite.viz", "unclip_lite.data"],
    ["unclip_lite.diffusion", "unclip_lite.train", "unclip_lite.checkpoints", "unclip_lite.bundle"],
    ["unclip_lite.clip", "unclip_lite.judge", "unclip_lite.clipdraw", "unclip_lite.vqgan"],  # chapter 03: CLIP-guided
    ["unclip_lite.unet", "unclip_lite.unet_attention", "unclip_lite.glide"],  # the ADM U-Net, and GLIDE built on it
    ["unclip_lite.unclip"],
    ["unclip_lite.kinds", "unclip_lite.cli", "unclip_lite.__main__", "unclip_lite.exercises",
     "unclip_lite.planner", "unclip_lite.planner_measure", "unclip_lite.planner_models"],  # chapter 10's planner
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The layer of the longest prefix of ``module`` named in LAYERS."""
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")
    return best[0]


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(imported unclip_lite module, line, inside a function)`` for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names
                             if a.name.startswith("unclip_lite"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolve against this package
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    target = f"{base}.{child.module}" if child.module else base
                else:
                    target = child.module or ""
                if target.startswith("unclip_lite"):
                    # "from unclip_lite.data import shapes" imports the submodule unclip_lite.data.shapes
                    for alias in child.names:
                        sub = f"{target}.{alias.name}"
                        is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists() or \
                            (PACKAGE.parent / Path(*sub.split(".")) / "__init__.py").exists()
                        found.append((sub if is_module else target, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def graph() -> dict[str, list[tuple[str, int, bool]]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_nothing_imports_from_a_higher_layer():
    upward = [f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)}) at line {line}"
              for module, edges in graph().items() for target, line, _ in edges
              if layer_of(target) > layer_of(module)]
    assert not upward, "upward imports:\n  " + "\n  ".join(upward)


def test_there_are_no_import_cycles():
    edges = {m: {t for t, _, _ in e if t != m and not m.startswith(t + ".")} for m, e in graph().items()}
    state, stack, cycles = {}, [], []

    def walk(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                walk(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            walk(node)
    assert not cycles, "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in cycles)


def test_every_module_sits_in_a_layer_and_stays_small():
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path))
        lines = len(path.read_text().splitlines())
        assert lines <= 400, f"{path.relative_to(PACKAGE.parent)} has {lines} lines (at most 400)"


@pytest.mark.parametrize("bad, message", [
    ("from unclip_lite.cli import main\n", "upward"),
])
def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch, bad, message):
    """The rule is not vacuous: a data module that imports the CLI is reported."""
    fake = tmp_path / "unclip_lite"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text("")
    (fake / "data" / "world.py").write_text(bad)
    (fake / "cli.py").write_text("from unclip_lite.data import world\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    with pytest.raises(AssertionError, match=message):
        test_nothing_imports_from_a_higher_layer()
    with pytest.raises(AssertionError, match="cycles"):
        test_there_are_no_import_cycles()


def test_function_level_imports_are_counted():
    """Printed, not asserted to zero: deferred imports hide dependencies; the count should fall."""
    inner = [(m, t) for m, e in graph().items() for t, _, in_function in e if in_function]
    print(f"\n{len(inner)} function-level imports of unclip_lite modules")
