"""Every command the docs show runs as written (so the docs cannot rot): the README's, the reference
pages' (docs/*.md) and the tutorial's."""

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def commands(markdown: str) -> list[tuple[str, int]]:
    """`$ backprop ...` lines of console blocks (with the `[exit code N]` that follows, if any), and
    `backprop ...` / `torchrun ...` lines of bash blocks."""
    found = []
    for lang, body in FENCE.findall(markdown):
        lines = body.splitlines()
        if lang == "console":
            for i, line in enumerate(lines):
                if line.startswith("$ "):
                    rest = lines[i + 1:]
                    nxt = next((j for j, l in enumerate(rest) if l.startswith("$ ")), len(rest))
                    codes = [int(m.group(1)) for l in rest[:nxt] if (m := re.match(r"\[exit code (\d+)\]", l))]
                    found.append((line[2:], codes[0] if codes else 0))
        elif lang == "bash":
            found += [(line, 0) for line in lines if line.startswith(("backprop ", "torchrun "))]
    return found


@pytest.fixture
def repo_copy(tmp_path):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    (tmp_path / "docs" / "img").mkdir(parents=True)  # the pages' commands draw into docs/ and docs/img/
    shutil.copytree(ROOT / "docs" / "exercises", tmp_path / "docs" / "exercises")
    return tmp_path


def tutorial_maker():
    """docs/make_tutorial.py as a module: its PARTS and the CLAIMS its prose makes about each output."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_tutorial", ROOT / "docs" / "make_tutorial.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OUTPUT_OPTIONS = ("--save", "--save-best", "--metrics", "--plot", "--tensorboard", "--out", "--csv")


def run_all(cmds, cwd, cli, monkeypatch, claims=None, claims_from=0):
    """Each command in order, in ``cwd``. A torchrun line that writes no file starts in the background and
    the commands after it go on while it trains (nothing it does can meet them: it only reads); it is
    waited for, and its exit code checked, at the end. One that writes runs in its place, to the end.
    ``claims``: the tutorial's maker module; each output from command ``claims_from`` on is held to the
    claims its prose makes."""
    monkeypatch.chdir(cwd)
    ctx = None
    if claims is not None:
        def again(command):
            r = cli(*shlex.split(command)[1:])
            return r.output, r.exit_code
        ctx = claims.Context(cwd, again)
    background = []
    try:
        for i, (command, expected) in enumerate(cmds):
            args = shlex.split(command.split("  #")[0])
            if args[0] == "torchrun":
                env = {**os.environ, "OMP_NUM_THREADS": "1"}
                proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *args[1:]], cwd=cwd, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                background.append((command, expected, proc))
                if any(a.split("=")[0] in OUTPUT_OPTIONS for a in args):
                    wait(*background.pop())
                continue
            assert args[0] == "backprop"
            r = cli(*args[1:])
            assert r.exit_code == expected, f"{command}\n{r.output[-3000:]}"
            assert "Traceback" not in r.output or command.startswith("backprop exercise check"), command
            if ctx is not None and i >= claims_from:
                claims.check_claims(command, r.output, ctx)
        while background:
            wait(*background.pop(0))
    finally:
        for _, _, proc in background:
            proc.kill()
            proc.wait()


def wait(command, expected, proc):
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == expected, f"{command}\n{err[-2000:]}"


def pages() -> list:
    """The pages whose commands run, in the order a reader meets them: the README, the reference pages,
    the benchmarks' page, then the tutorial (which the others point to)."""
    reference = sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "tutorial.md")
    return [ROOT / "README.md", *reference, ROOT / "benchmarks" / "README.md", ROOT / "docs" / "tutorial.md"]


def shown_commands() -> dict:
    return {p.relative_to(ROOT).as_posix(): commands(p.read_text()) for p in pages()}


def test_every_page_then_the_tutorial_run_as_written_in_one_folder(repo_copy, cli, monkeypatch):
    """A reader who tries the README's examples, then the reference pages', then the tutorial's, in the
    same folder, meets no collision (a file one wrote that the other refuses to overwrite). A command
    shown on two pages runs once, where it is first shown."""
    shown = shown_commands()
    readme, tutorial = shown["README.md"], shown["docs/tutorial.md"]
    maker = tutorial_maker()
    assert [c for c, _ in tutorial] == [text for kind, text in maker.PARTS if kind == "cmd"]  # the page is current
    assert set(maker.CLAIMS) <= {c for c, _ in tutorial}  # every claim belongs to a command of the page
    assert len([c for c, _ in readme if c.startswith("backprop ")]) >= 3, "the README's quick start"
    assert len(shown["docs/commands.md"]) >= 9 and len(tutorial) >= 12
    assert any(c.startswith("torchrun ") for c, _ in shown["docs/scale.md"])
    once, seen = [], set()
    for page in shown.values():
        for command, code in page:
            if (command, code) not in seen:
                seen.add((command, code))
                once.append((command, code))
    run_all(once, repo_copy, cli, monkeypatch, claims=maker)  # each tutorial claim on its command's output
    assert (repo_copy / "my.yaml").exists() and (repo_copy / "docs" / "compare.png").exists()
    for picture in ("deep_sigmoid.png", "deep_relu.png", "compare.png", "graph_seed.png"):
        assert (repo_copy / "docs" / picture).read_bytes().startswith(b"\x89PNG")


def test_the_readme_shows_a_picture_a_quick_start_command_makes():
    """The quick start's picture is one its own commands write (so a reader who runs them gets it)."""
    text = (ROOT / "README.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert pictures == ["docs/compare.png", "docs/img/tune.png"]
    assert any("--plot docs/compare.png" in c for c, _ in commands(text))
    # the search's picture: the README names the command, and docs/tune.md's run of it (tested there) draws it
    assert "`backprop tune --config configs/tune.yaml --trials 12 --plot docs/img/tune.png`" in text
    assert any(c.startswith("backprop tune --config configs/tune.yaml --trials 12 --plot docs/img/tune.png")
               for c, _ in commands((ROOT / "docs" / "tune.md").read_text()))


def test_the_tutorial_covers_the_walkthrough():
    text = (ROOT / "docs" / "tutorial.md").read_text()
    for needed in ("∂L/∂w2 = ∂L/∂ŷ · ∂ŷ/∂w2 = −(y − ŷ)·z1", "−(y − ŷ)·w2·x", "$ backprop explain",
                   "$ backprop train --config configs/seed.yaml", "$ backprop inspect-grads --config configs/seed.yaml",
                   "$ backprop check-grads --config configs/seed.yaml", "--no-zero-grad", "clip_grad_norm",
                   "[exit code 3]", "$ backprop compare-optimizers", "(compare.png)", "--csv",
                   "## 6. Vanishing and exploding gradients", "$ backprop train --config configs/deep_sigmoid.yaml",
                   "$ backprop train --config configs/deep_relu.yaml", "$ backprop plot ", "$ backprop find-lr ",
                   "vanishing gradients", "of the units dead", "(deep_sigmoid.png)", "(deep_relu.png)",
                   "-o sgd:lr=5", "diverged at step", "--wide", "## 7. Backprop by hand",
                   "$ backprop explain --config configs/seed.yaml", "$ backprop graph --example", "(graph_seed.png)",
                   "$ backprop exercise start linear", "$ backprop exercise check docs/exercises/linear.py",
                   "$ backprop exercise check docs/exercises/two_layer_net.py --reveal", "ATEN_CPU_CAPABILITY=default"):
        assert needed in text, needed


def test_the_pictures_the_pages_show_exist():
    """Every picture of the README and the docs pages is there (an .svg is an SVG): paths relative to
    the page, as GitHub and the site resolve them."""
    found = 0
    for page in pages():
        for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text()):
            path = page.parent / image
            assert path.exists(), f"{page.name}: {image}"
            if path.suffix == ".svg":
                assert path.read_text().lstrip().startswith("<svg"), image
            found += 1
    assert found >= 9
