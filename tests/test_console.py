"""Names are data when printed (issue 23, item 8): errors.shown escapes every non-printable character of a
class, column or file name; error lines, table cells and headers, panels and train's class list use it, and
the console writes no terminal control that came from text."""

import csv
import io
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backprop_cli.errors import error_line, shown

HOSTILE = ["\x1b[2JAdelie", "[red]Gen[/]", "C\nhin\x1b]0;title\x07"]
COLUMN = "b\x1b]0;t\x07\u202e"


def _no_terminal_control(text: str) -> bool:
    """No C0 control but line break and tab, no DEL, no C1 control (CSI, OSC), no lone surrogate."""
    return not any((ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000
                   for c in text)


def test_shown_escapes_what_is_not_printable_and_nothing_else():
    assert shown("Adelie é 😀 [red]") == "Adelie é 😀 [red]"
    assert shown("a\x1b[2Jb\nc\td\r\x07\x9b\u202e\u2028\ud800") == "a\\x1b[2Jb\\nc\\td\\r\\x07\\x9b\\u202e\\u2028\\ud800"
    assert shown("a\nb", keep="\n") == "a\nb"
    assert error_line("column 'a\nb': missing") == "error: column 'a\\nb': missing"


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(codec=None, exclude_categories=())))
def test_any_text_is_shown_as_one_printable_line(text):
    out = shown(text)
    assert out.isprintable() and (out == text) == text.isprintable()
    assert "\n" not in error_line(text) and error_line(text).isprintable()


@settings(max_examples=60, deadline=None)
@given(cells=st.lists(st.text(st.characters(codec=None, exclude_categories=()), max_size=8), min_size=1, max_size=3))
def test_a_table_cell_and_header_hold_no_control_character(cells):
    """Whatever text reaches a FitTable (cells and headers) or a line of prose, the console (plain and as a
    terminal) writes no control character, and each row stays one line."""
    from rich.text import Text

    from backprop_cli.render import console as render_console
    from backprop_cli.render.fit import Col, FitTable, print_blocks

    for terminal in (False, True):
        buf = io.StringIO()
        con = render_console._Console(file=buf, force_terminal=terminal, no_color=True, width=200,
                                      highlight=False, emoji=False)
        t = FitTable("t", [Col(c or "x", align="left") for c in cells], plain=not terminal, wide=True)
        t.add_row(*cells)
        t.add_row(*(Text(c) for c in cells))
        print_blocks(con, [Text(" ".join(cells)), t])
        out = re.sub(r"\x1b\[[0-9;]*m", "", buf.getvalue()) if terminal else buf.getvalue()  # rich's own styles
        assert _no_terminal_control(out), repr(out)
        assert all(shown(c).strip() in out for c in cells)


@pytest.fixture
def hostile(tmp_path):
    """A CSV whose class names and one column name hold ESC, OSC, BEL, a newline, U+202E and rich markup."""
    with open(tmp_path / "h.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", COLUMN, "y"])
        for i in range(30):
            w.writerow([i % 3 + 0.1 * (i % 7), 0.1 * (i % 5), HOSTILE[i % 3]])
    (tmp_path / "h.yaml").write_text(
        "model: {input_size: 2, hidden_size: 4, output_size: 3}\nloss: cross_entropy\n"
        "data: {kind: csv, path: h.csv, target: y, batch_size: 8, validation: 0.3}\ntrain: {steps: 4}\n")
    return tmp_path / "h.yaml"


@pytest.mark.parametrize("terminal", [False, True], ids=["plain", "terminal"])
def test_train_shows_class_and_column_names_escaped(cli, hostile, monkeypatch, terminal):
    """The start panel's class list, the per-class table and the confusion matrix show the names escaped,
    on plain output and on a terminal (where a name is Text, never rich markup: '[red]Gen[/]' as written)."""
    from backprop_cli.render import console as render_console

    if terminal:
        monkeypatch.setattr(render_console, "plain_output", lambda stream=None: False)
    r = cli("train", "-c", hostile, "--set", f'data.features=["a", "{COLUMN.encode("unicode_escape").decode()}"]')
    assert r.exit_code == 0, r.output
    out = r.stdout
    for raw in ("\x1b[2J", "\x1b]0;", "\x07", "\u202e"):
        assert raw not in out
    if not terminal:
        assert _no_terminal_control(out)
    assert "\\x1b[2JAdelie" in out and "[red]Gen[/]" in out and "C\\nhin\\x1b]0;title\\x07" in out
    classes = [line for line in out.splitlines() if "classes" in line and "Adelie" in line]
    assert len(classes) == 1 and "3: " in classes[0]
    rows = [line for line in out.splitlines() if line.lstrip().startswith("C\\nhin")]
    assert len(rows) == 2  # its per-class row and its confusion-matrix row, each one line


def test_an_error_naming_a_hostile_column_is_one_line(cli, hostile):
    r = cli("train", "-c", hostile, "--set", 'data.target="z\\x1b[2J\\nq"')
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and _no_terminal_control(r.stderr), repr(r.stderr)
    assert r.stderr.startswith("error: ") and "z\\x1b[2J\\nq" in r.stderr
