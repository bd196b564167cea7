"""The documentation: the README and docs/ build as a site with no warning, every relative link and anchor
resolves (by GitHub's rules, where people read them), every table is well-formed in both renderers, the
config reference is the one the schema generates (and its bounds are the loader's), and every command
and option of the app has its place on the commands page. tests/test_docs.py runs the commands shown."""

import importlib.util
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import typer.main

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
SITE_PAGES = {p.resolve() for p in PAGES}
PICTURES = (".png", ".svg")

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]*)\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)


def prose(markdown: str) -> str:
    """The text outside fenced code blocks (a block's lines kept as blank lines, so line numbers hold)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), markdown)


def without_code_spans(text: str) -> str:
    return CODE_SPAN.sub("", text)


def github_slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text (no code marks, emphasis or link targets), lower
    case, every character that is not a letter, digit, underscore, hyphen or space dropped, spaces to
    hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "")
    text = re.sub(r"(\*\*|__|\*)(.+?)\1", r"\2", text)
    text = unicodedata.normalize("NFC", text).strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in "_- ")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, text in HEADING.findall(prose(page.read_text())):
        slug = github_slug(text)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(page: Path) -> list[tuple[int, str]]:
    text = prose(page.read_text())
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        found += [(number, target) for _, target in LINK.findall(without_code_spans(line))]
    # a link may break across lines: join each paragraph and look again for what a single line missed
    joined = [(1, t) for _, t in LINK.findall(without_code_spans(re.sub(r"\n(?!\n)", " ", text)))]
    missed = [t for _, t in joined if t not in {t2 for _, t2 in found}]
    return found + [(0, t) for t in missed]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page):
    """Each link names a page of the site or a picture, and each #anchor a heading of its page, as GitHub
    makes anchors (a link to any other file would work on GitHub but not in the site)."""
    problems = []
    for line, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # a URL
        path, _, anchor = target.partition("#")
        where = f"{page.relative_to(ROOT)}:{line}: {target}"
        dest = (page.parent / path).resolve() if path else page.resolve()
        if not dest.exists():
            problems.append(f"{where}: no such file")
            continue
        if dest not in SITE_PAGES and dest.suffix not in PICTURES:
            problems.append(f"{where}: not a page of the site (link a page, or name the file as code)")
        if dest.suffix in PICTURES and not str(dest).startswith(str(ROOT / "docs")):
            problems.append(f"{where}: a picture outside docs/ is not in the site")
        if anchor and anchor not in anchors(dest):
            problems.append(f"{where}: no heading with that anchor in {dest.relative_to(ROOT)}")
    assert not problems, "\n".join(problems)


def test_the_link_checker_finds_what_github_would_miss(tmp_path):
    """The checker itself: GitHub's slugs (punctuation dropped, each space a hyphen, repeats numbered),
    and a broken anchor is found."""
    assert github_slug("`backprop config show / validate`") == "backprop-config-show--validate"
    assert github_slug("Resume, non-finite values, interrupts") == "resume-non-finite-values-interrupts"
    assert github_slug("6. Vanishing and exploding gradients") == "6-vanishing-and-exploding-gradients"
    assert github_slug("Diagnostics: what **each** layer is doing") == "diagnostics-what-each-layer-is-doing"
    page = tmp_path / "p.md"
    page.write_text("# A\n\n## A\n\n```\n# not a heading\n```\n[x](#a-1) [y](#not-a-heading)\n")
    assert anchors(page) == {"a", "a-1"}
    assert [t for _, t in links(page)] == ["#a-1", "#not-a-heading"]


def tables(page: Path):
    """Each table of a page: (line number, its lines)."""
    lines = prose(page.read_text()).splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|"):
            start = i
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            yield start + 1, lines[start:i], lines[start - 1] if start else ""
        i += 1


def cells(row: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_table_is_well_formed(page):
    """A blank line before each table, a separator row under the header, every row with the header's
    number of cells, and no | inside a code span of a cell (GitHub splits the cell there, and the site
    shows an escaped one with its backslash)."""
    problems = []
    for line, rows, before in tables(page):
        where = f"{page.relative_to(ROOT)}:{line}"
        if before.strip():
            problems.append(f"{where}: no blank line before the table")
        if len(rows) < 2 or not re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", rows[1].strip()):
            problems.append(f"{where}: the second row is not a separator row (|---|---|)")
            continue
        width = len(cells(rows[0]))
        for n, row in enumerate(rows, line):
            if not row.rstrip().endswith("|"):
                problems.append(f"{page.relative_to(ROOT)}:{n}: the row does not end with |")
            if len(cells(row)) != width:
                problems.append(f"{page.relative_to(ROOT)}:{n}: {len(cells(row))} cells, the header has {width}")
            for _, code in CODE_SPAN.findall(row):
                if "|" in code:
                    problems.append(f"{page.relative_to(ROOT)}:{n}: a | inside the code span `{code}`")
    assert not problems, "\n".join(problems)


def _reference_module():
    spec = importlib.util.spec_from_file_location("make_config_reference", ROOT / "docs" / "make_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_config_reference_is_the_one_the_schema_generates():
    """docs/config.md holds exactly what docs/make_config_reference.py writes from the schema (which also
    fails on a key without a meaning, or a meaning of a key the schema lacks)."""
    reference = _reference_module()
    current = (ROOT / "docs" / "config.md").read_text()
    assert reference.page(current) == current, "docs/config.md is out of date: run python docs/make_config_reference.py"


def test_the_reference_generator_fails_on_a_key_without_meaning(monkeypatch):
    reference = _reference_module()
    monkeypatch.delitem(reference.MEANING, "train.max_skips")
    with pytest.raises(KeyError, match="train.max_skips"):
        reference.generate()
    monkeypatch.setitem(reference.MEANING, "train.max_skips", "x")
    monkeypatch.setitem(reference.MEANING, "train.no_such_key", "x")
    with pytest.raises(KeyError, match="no_such_key"):
        reference.generate()


BASE = {"synthetic": "model: {input_size: 2, hidden_size: 3, output_size: 1}\ndata: {kind: synthetic}\n",
        "csv": "model: {input_size: 2, hidden_size: 3, output_size: 1}\ndata: {kind: csv, path: t.csv, target: y}\n"}


def _value(text: str) -> float:
    text = text.strip()
    m = re.fullmatch(r"2\^(\d+)( − 1)?", text)
    return 2 ** int(m.group(1)) - (1 if m.group(2) else 0) if m else float(text)


def _outside(type_text: str) -> list:
    """Values the type column says are refused: below and above an integer range, past a number's bound,
    a name not in a list of names."""
    type_text = type_text.removeprefix("`null` or ")
    if m := re.fullmatch(r"integer (\S+) … (.+)", type_text):
        return [int(_value(m.group(1))) - 1, int(_value(m.group(2))) + 1]
    if type_text.startswith("number "):
        out = []
        for sign, bound in re.findall(r"([<>≤≥]) ([-\d.e]+)", type_text):
            b = float(bound)
            out.append({">": b, "≥": b - 1, "<": b, "≤": b + 1}[sign])
        return out
    if re.fullmatch(r"`[^`]+`( \\\| `[^`]+`)+", type_text):
        return ["no_such_value"]
    return []


def test_the_bounds_and_values_the_reference_states_are_the_loaders(tmp_path):
    """Every key row of docs/config.md with a range, a bound or a list of values: a value just outside
    it is refused by the loader (through --set), and the error names that key."""
    from backprop_cli.config import load_text
    from backprop_cli.errors import ConfigError

    kind, checked = "synthetic", 0
    for line in (ROOT / "docs" / "config.md").read_text().splitlines():
        if m := re.match(r"`kind: (\w+)` also takes", line):
            kind = m.group(1)
        elif line.startswith("## "):
            kind = "synthetic"
        row = cells(line) if line.startswith("| `") else []
        if len(row) != 4 or not re.fullmatch(r"`[\w.]+`", row[0]) or row[0] == "`data.kind`":
            continue
        key = row[0].strip("`")
        for bad in _outside(row[1]):
            with pytest.raises(ConfigError) as e:
                load_text(BASE[kind], tmp_path / "c.yaml", [f"{key}={bad}"])
            assert any(key in p for p in e.value.problems), (key, bad, e.value.problems)
            checked += 1
    assert checked >= 30


MEMBER_SECTIONS = {"loss": "loss", "optimizer": "optimizer", "scheduler": "scheduler", "activations": "model.activation"}
OPTION = re.compile(r"`(\w+)` \(((?:integer|number)[^;)]*?|`\w+`(?: \\\| `\w+`)+)(?:, required)?[;)]")


def test_the_options_of_each_component_the_reference_states_are_the_loaders(tmp_path):
    """The options of each activation, loss, optimizer and schedule in docs/config.md: a value just
    outside the range or list the page gives is refused, naming the option."""
    from backprop_cli.config import load_text
    from backprop_cli.errors import ConfigError

    section, checked, sections_seen = None, 0, set()
    for line in (ROOT / "docs" / "config.md").read_text().splitlines():
        if line.startswith("## "):
            section = MEMBER_SECTIONS.get(line[3:].strip())
        row = cells(line) if section and line.startswith("| `") else []
        if len(row) not in (3, 4):  # name, [task,] options, meaning
            continue
        name = row[0].strip("`")
        for option, type_text in OPTION.findall(row[-2]):
            for bad in _outside(type_text):
                with pytest.raises(ConfigError) as e:
                    load_text(BASE["synthetic"], tmp_path / "c.yaml",
                              [f"{section}.name={name}", f"{section}.{option}={bad}"])
                assert any(f"{section}.{option}:" in p for p in e.value.problems), (name, option, bad, e.value.problems)
                checked += 1
                sections_seen.add(section)
    assert checked >= 30 and sections_seen == set(MEMBER_SECTIONS.values())


def _commands():
    from backprop_cli.cli.app import app

    root = typer.main.get_command(app)
    for name, command in sorted(root.commands.items()):
        if hasattr(command, "commands"):
            for sub_name, sub in sorted(command.commands.items()):
                yield f"{name} {sub_name}", sub
        else:
            yield name, command


def _sections() -> dict[str, str]:
    text = (ROOT / "docs" / "commands.md").read_text()
    parts = re.split(r"^## backprop (.+)$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_command_and_option_has_its_place_on_the_commands_page():
    """Each command has a section (`## backprop NAME`) that names every option and argument it takes,
    and the README's command table links it."""
    sections, readme = _sections(), (ROOT / "README.md").read_text()
    problems = []
    for name, command in _commands():
        title = next((t for t in sections if t == name or (name.startswith("config ") and t.startswith("config "))), None)
        if title is None:
            problems.append(f"backprop {name}: no section '## backprop {name}' in docs/commands.md")
            continue
        for param in command.params:
            names = [o for o in param.opts if o.startswith("--")] if param.param_type_name == "option" \
                else [param.name.upper()]
            if names == ["--help"]:
                continue
            if not any(re.search(rf"`{re.escape(n)}(?![\w-])", sections[title]) for n in names):
                problems.append(f"backprop {name}: {'/'.join(names)} is not in its section of docs/commands.md")
        if f"(docs/commands.md#{github_slug('backprop ' + title)})" not in readme:
            problems.append(f"backprop {name}: the README's command table does not link its section")
    assert not problems, "\n".join(problems)


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
                    reason="mkdocs-material is not installed (the dev extra installs it: "
                           "python3 -m pip install \"torch==2.13.0\" -e \".[dev]\")")
def test_the_docs_build_as_a_site_with_no_warning(tmp_path):
    """mkdocs build --strict: every page in the nav, every link and anchor found by mkdocs too, the README
    as the front page with its links pointing at the site's pages."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                        "--site-dir", str(site)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "WARNING" not in r.stderr, r.stderr[-3000:]
    for page in ("commands", "config", "outputs", "scale", "architecture", "tutorial", "benchmarks"):
        assert (site / page / "index.html").exists(), page
    front = (site / "index.html").read_text()
    assert "See backpropagation at work" in front and 'href="commands/#backprop-train"' in front
    assert 'src="compare.png"' in front and (site / "compare.png").exists()
    assert not list(site.rglob("*.py")), "the scripts in docs/ are not pages"
