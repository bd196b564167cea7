"""The package's layout is its architecture: which subpackage may import which (docs/architecture.md,
"Import rules"), what prints, and how large a module grows. Read from the source, every import counted,
those inside functions too."""

import ast
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "backprop_cli"

# Each part of the package and the parts it may import (besides itself). The flow is one way:
# config → data → core → runs, with io below them all and render beside, and the CLI on top.
LEAVES = {"errors", "limits", "torchrun", "__init__"}
ALLOWED = {
    "errors": set(), "limits": set(), "torchrun": set(), "__init__": {"api"},  # bp.load, imported on first use
    "io": LEAVES,
    "config": LEAVES | {"io"},
    "data": LEAVES | {"io", "config"},
    "core": LEAVES | {"config", "data"},
    "exercises": LEAVES,  # the exercises' forwards, reference backwards and hints: content, no I/O
    "runs": LEAVES | {"io", "config", "data", "core", "exercises"},
    "render": LEAVES | {"io", "core"},  # core: its plain records and the warning thresholds, no torch
    "cli": LEAVES | {"io", "config", "data", "core", "runs", "render", "exercises"},
    "api": LEAVES | {"io", "config", "data", "core", "runs"},  # backprop_cli.load: a model in Python
    "__main__": LEAVES | {"cli", "io"},
}
QUIET = ("config", "data", "core", "io", "runs", "exercises")  # never print: they return what the CLI renders
# the two writes to the process's own streams outside render/ and cli/, each for a reason of its own
STREAM_USE = {"io/signals.py": "a second Ctrl-C ends the process at once, with its one line",
              "runs/distributed.py": "each rank flushes its streams before os._exit",
              "runs/tune.py": "a spawned tune worker has no console: its one error line, then its exit code"}
MAX_LINES = 500


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, backprop_cli.X.Y) of every import of ours in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "backprop_cli":
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "backprop_cli" else [node.module]
            found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "backprop_cli"]
    return found


def target_part(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    mine = part(path)
    bad = [f"line {line}: {name}" for line, name in imported(path)
           if target_part(name) != mine and target_part(name) not in ALLOWED[mine]
           and not (target_part(name) == "__version__")]
    assert not bad, f"{mine} may import only {sorted(ALLOWED[mine])}: {bad}"


def test_every_part_of_the_package_has_its_rules():
    assert {part(p) for p in modules()} <= set(ALLOWED)


@pytest.mark.parametrize("path", [p for p in modules() if part(p) in QUIET],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_library_never_prints(path):
    tree = ast.parse(path.read_text())
    calls = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"]
    rich = [n.lineno for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
            and any((getattr(n, "module", None) or a.name).split(".")[0] in ("rich", "typer") for a in n.names)]
    streams = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in ("stdout", "stderr")
               and getattr(n.value, "id", None) == "sys"]
    rel = str(path.relative_to(PACKAGE))
    assert not calls and not rich, f"{rel}: print() at {calls}, rich/typer imported at {rich}"
    assert not streams or rel in STREAM_USE, f"{rel}: writes to sys.stdout/stderr at lines {streams}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_holds_many_jobs(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines: split it by job"


def test_the_checker_sees_a_forbidden_import(tmp_path):
    """The rule is read from real source: a core module importing render is caught."""
    bad = tmp_path / "backprop_cli" / "core" / "x.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("def f():\n    from backprop_cli.render.console import fmt\n")
    (name,) = [n for _, n in imported(bad)]
    assert target_part(name) == "render" and "render" not in ALLOWED["core"]
