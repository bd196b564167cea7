"""backprop exercise: every exercise's reference backward passes and a planted-wrong one fails, judged
against autograd computed here, independently (torch.autograd.grad on the forward written in this test);
the learner's file runs in its own process; bad files give one line, their traceback and exit 2."""

import subprocess
import sys

import pytest
import torch

from conftest import ROOT

from backprop_cli.exercises import EXERCISES, template
from backprop_cli.exercises.judge import case_text, cases_of, judge, reference, solution_of


def _fn(source, name="backward"):
    ns = {"torch": torch}
    exec(source, ns)
    return ns[name]


# the forwards again, written here (not taken from the package): the oracle's own
ORACLE_FORWARD = {
    "linear": lambda x, w, b: x @ w.T + b,
    "relu": lambda x: torch.relu(x),
    "tanh": lambda x: torch.tanh(x),
    "sigmoid": lambda x: torch.sigmoid(x),
    "mse": lambda y_hat, y: torch.nn.functional.mse_loss(y_hat, y),
    "softmax_cross_entropy": lambda logits, target: torch.nn.functional.cross_entropy(logits, target),
    "layernorm": lambda x, g, b: torch.nn.functional.layer_norm(x, x.shape[1:], g, b, eps=1e-5),
    "batchnorm": lambda x, g, b: torch.nn.functional.batch_norm(x, None, None, g, b, training=True, eps=1e-5),
    "two_layer_net": lambda x, w1, b1, w2, b2, y: torch.nn.functional.mse_loss(
        torch.relu(x @ w1.T + b1) @ w2.T + b2, y),
}


def oracle(e, inputs):
    named = dict(zip(e.args, inputs))
    leaves = {n: t.clone().requires_grad_(n in e.wrt) for n, t in named.items() if n != "dout"}
    out = ORACLE_FORWARD[e.name](*[leaves[a] for a in e.forward_args])
    grads = torch.autograd.grad(out, [leaves[w] for w in e.wrt], named.get("dout"))
    return list(grads)


# planted mistakes: (exercise, wrong backward, the gradient that must be named first, words its hint has)
WRONG = [
    ("linear", "def backward(x, w, b, dout):\n    return dout @ w, x.T @ dout, dout.sum(0)", "dw", "transposed"),
    ("relu", "def backward(x, dout):\n    return (x > 0).double()", "dx", "dout"),
    ("tanh", "def backward(x, dout):\n    return dout * (1 - x ** 2)", "dx", "tanh"),
    ("sigmoid", "def backward(x, dout):\n    s = torch.sigmoid(x)\n    return -dout * s * (1 - s)", "dx", "sign"),
    ("mse", "def backward(y_hat, y):\n    return 2 * (y_hat - y)", "dy_hat", "missing 1/"),
    ("mse", "def backward(y_hat, y):\n    return (y_hat - y) / y_hat.numel()", "dy_hat", "missing factor 2"),
    ("softmax_cross_entropy", "def backward(logits, target):\n    p = torch.softmax(logits, 1)\n"
     "    p[torch.arange(len(target)), target] -= 1\n    return p", "dlogits", "missing 1/N"),
    ("layernorm", "def backward(x, gamma, beta, dout):\n    m = x.mean(1, keepdim=True)\n"
     "    v = ((x - m) ** 2).mean(1, keepdim=True)\n    xh = (x - m) / torch.sqrt(v + 1e-5)\n"
     "    return dout * gamma / torch.sqrt(v + 1e-5), (dout * xh).sum(0), dout.sum(0)", "dx", "mean"),
    ("batchnorm", "def backward(x, gamma, beta, dout):\n    n = x.shape[0]\n    m = x.mean(0)\n"
     "    v = ((x - m) ** 2).sum(0) / (n - 1)\n    inv = 1 / torch.sqrt(v + 1e-5)\n    xh = (x - m) * inv\n"
     "    dxh = dout * gamma\n    dx = inv / n * (n * dxh - dxh.sum(0) - xh * (dxh * xh).sum(0))\n"
     "    return dx, (dout * xh).sum(0), dout.sum(0)", "dx", "biased"),
    ("two_layer_net", "def backward(x, w1, b1, w2, b2, y):\n    z1 = x @ w1.T + b1\n    h = torch.relu(z1)\n"
     "    d2 = 2 * (h @ w2.T + b2 - y)\n    d1 = (d2 @ w2) * (z1 > 0)\n"
     "    return d1.T @ x, d1.sum(0), d2.T @ h, d2.sum(0)", "dw1", "5 times too large: a missing 1/N"),
]


def run_backward(e, source):
    fn = _fn(source)
    cases = cases_of(e)
    got = []
    for inputs in cases:
        out = fn(*[t.clone() for t in inputs])
        got.append(list(out) if isinstance(out, tuple) else [out])
    return cases, got


def test_every_exercise_of_the_issue_is_there_and_has_a_planted_mistake():
    assert set(EXERCISES) == {"linear", "relu", "tanh", "sigmoid", "mse", "softmax_cross_entropy", "layernorm",
                              "batchnorm", "two_layer_net"}
    assert {w[0] for w in WRONG} == set(EXERCISES)


@pytest.mark.parametrize("name", EXERCISES)
def test_the_checkers_reference_is_autograd_on_three_distinct_float64_sizes(name):
    e = EXERCISES[name]
    cases = cases_of(e)
    assert len(cases) == 3 and len({tuple(sorted(c.items())) for c in e.cases}) == 3
    for inputs in cases:
        assert all(t.dtype in (torch.float64, torch.int64) for t in inputs)
        for ours, theirs in zip(reference(e, inputs), oracle(e, inputs)):
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    # no input is all ones or zeros (a missing γ or a dropped dout could hide behind it)
    for t in cases[0]:
        if t.dtype == torch.float64:
            assert not torch.all(t == 1) and not torch.all(t == 0) and (t.numel() == 1 or t.std() > 0.1)


@pytest.mark.parametrize("name", EXERCISES)
def test_the_reference_backward_passes(name):
    e = EXERCISES[name]
    cases, got = run_backward(e, e.solution)
    refs = [oracle(e, inputs) for inputs in cases]
    # the reference is right by the test's own oracle, to float64 round-off
    for g, r in zip(got, refs):
        for a, b in zip(g, r):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    result = judge(e, [reference(e, i) for i in cases], got)
    assert result["pass"] and result["hint"] is None
    assert [g["status"] in ("exact", "approximate") for g in result["grads"]] == [True] * len(e.grads)
    assert all(g["shape_ok"] for g in result["grads"])


@pytest.mark.parametrize("name,source,grad,words", WRONG, ids=[f"{w[0]}-{w[2]}-{w[3]}" for w in WRONG])
def test_a_planted_mistake_fails_naming_its_gradient_with_the_hint(name, source, grad, words):
    e = EXERCISES[name]
    cases, got = run_backward(e, source)
    refs = [oracle(e, inputs) for inputs in cases]
    k = e.grads.index(grad)
    assert any(not torch.allclose(g[k], r[k]) if g[k].shape == r[k].shape else True for g, r in zip(got, refs))
    result = judge(e, [reference(e, i) for i in cases], got)
    assert not result["pass"]
    assert result["grads"][k]["status"] == "wrong"
    assert result["hint"]["grad"] == grad
    assert words in result["hint"]["text"], result["hint"]["text"]


def test_a_square_case_catches_a_transpose_by_its_values():
    e = EXERCISES["linear"]
    _, got = run_backward(e, "def backward(x, w, b, dout):\n    return dout @ w, x.T @ dout, dout.sum(0)")
    cases = cases_of(e)
    from backprop_cli.exercises.judge import hint

    square = [i for i, c in enumerate(e.cases) if c["M"] == c["D"]][0]
    text = hint(e, 1, got[square][1], reference(e, cases[square])[1], e.cases[square])
    assert "transposed" in text and "square" in text


def test_an_unfilled_template_fails_every_gradient_as_not_computed():
    e = EXERCISES["layernorm"]
    cases = cases_of(e)
    result = judge(e, [reference(e, i) for i in cases], [[None] * 3 for _ in cases])
    assert not result["pass"] and [g["status"] for g in result["grads"]] == ["wrong"] * 3
    assert "None" in result["hint"]["text"]


@pytest.mark.parametrize("name", EXERCISES)
def test_the_template_is_python_with_the_forward_and_every_shape(name, tmp_path):
    e = EXERCISES[name]
    text = template(e, "mine.py")
    ns = {}
    exec(compile(text, "mine.py", "exec"), ns)
    assert ns["EXERCISE"] == name and callable(ns["backward"]) and callable(ns["forward"])
    assert e.forward.strip() in text and "backprop exercise check mine.py" in text
    for a in e.args:
        assert f"    {a} " in text
    for g, w in zip(e.grads, e.wrt):
        assert f"[{e.shapes[w]}]" in text if e.shapes[w] else True
    # the given forward is the checker's forward: on case 0 it computes what the oracle's does
    inputs = cases_of(e)[0]
    fwd = [t for a, t in zip(e.args, inputs) if a != "dout"]
    torch.testing.assert_close(ns["forward"](*fwd), ORACLE_FORWARD[name](*fwd), rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- the command, end to end


def _filled_linear(tmp_path, cli, dw="dout.T @ x", extra=""):
    path = tmp_path / "lin.py"
    r = cli("exercise", "start", "linear", "--out", path)
    assert r.exit_code == 0, r.output
    text = path.read_text()
    text = text.replace("dx = None  # [N, D]", "dx = dout @ w").replace("dw = None  # [M, D]", f"dw = {dw}")
    text = text.replace("db = None  # [M]", "db = dout.sum(dim=0)" + extra)
    path.write_text(text)
    return path


def test_a_correct_linear_backward_passes_and_reveal_shows_the_reference(tmp_path, cli):
    path = _filled_linear(tmp_path, cli)
    r = cli("exercise", "check", path, "--reveal")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    for g in ("dx", "dw", "db"):
        row = next(line for line in lines if line.strip().startswith(g + " "))
        assert ("exact" in row or "approximate" in row) and "shape ok" in row
    assert "passed: all 3 gradients agree with autograd" in r.stdout
    assert EXERCISES["linear"].solution.strip().splitlines()[0] in r.stdout


def test_a_transposed_dw_fails_naming_dw(tmp_path, cli):
    path = _filled_linear(tmp_path, cli, dw="x.T @ dout")
    r = cli("exercise", "check", path)
    assert r.exit_code == 1, r.output
    row = next(line for line in r.stdout.splitlines() if line.strip().startswith("dw "))
    assert "wrong" in row and "shape wrong: [3, 5], want [5, 3]" in row
    assert "hint (dw" in r.stdout and "transposed" in r.stdout
    assert "--reveal" not in r.stdout and "not yet: 2 of 3 gradients right" in r.stdout


def test_start_never_overwrites_and_knows_its_exercises(tmp_path, cli):
    path = tmp_path / "a.py"
    path.write_text("mine")
    r = cli("exercise", "start", "linear", "--out", path)
    assert r.exit_code == 2 and "exists already" in r.stderr and path.read_text() == "mine"
    r = cli("exercise", "start", "convolution", "--out", tmp_path / "b.py")
    assert r.exit_code == 2 and r.stderr.count("error: ") == 1 and "two_layer_net" in r.stderr
    r = cli("exercise", "list")
    assert r.exit_code == 0 and all(name in r.stdout for name in EXERCISES)


BAD = {
    "no backward": ("def backwards(x, w, b, dout):\n    return x, w, b\n", "defines no function `backward`", None),
    "raises": ("def backward(x, w, b, dout):\n    dw = doutt.T @ x\n    return dout @ w, dw, dout.sum(0)\n",
               "backward raised NameError", "dw = doutt.T @ x"),
    "wrong count": ("def backward(x, w, b, dout):\n    return dout @ w, dout.T @ x\n",
                    "backward returned 2 values on N=4, D=3, M=5; linear's backward returns 3", None),
    "missing import": ("import torch\nimport no_such_module_here\n\ndef backward(x, w, b, dout):\n    return x\n",
                       "ModuleNotFoundError: No module named 'no_such_module_here'", "import no_such_module_here"),
    "loops forever": ("def backward(x, w, b, dout):\n    while True:\n        pass\n",
                      "did not finish within the time limit (1 s)", "while True:"),
    "not tensors": ("def backward(x, w, b, dout):\n    return (dout @ w).tolist(), dout.T @ x, dout.sum(0)\n",
                    "returned a list for dx, not a torch tensor", None),
}


@pytest.mark.parametrize("case", [c for c in BAD if c != "loops forever"])
def test_a_bad_exercise_file_is_one_line_and_its_own_traceback(case, tmp_path, monkeypatch):
    """The worker's own code, run here (the process around it is tested below): the one line and the
    traceback trimmed to the learner's file."""
    from backprop_cli.runs.exercise import _problem
    from backprop_cli.runs.exercise_worker import run

    source, message, frame = BAD[case]
    path = tmp_path / "linear.py"
    path.write_text(source)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        st = run("linear", str(path), 5.0)
    finally:
        sys.modules.pop("learner_exercise", None)
    assert st["status"] == "error"
    line = _problem(path, EXERCISES["linear"], st, 5.0)
    assert message in line and "\n" not in line, line
    if frame is None:
        assert st["traceback"] == ""
    else:
        assert st["traceback"].startswith("Traceback (your file's frames):") and frame in st["traceback"]
        assert "backprop_cli" not in st["traceback"]  # trimmed to the learner's own file


def test_a_file_that_loops_forever_is_stopped_by_the_time_limit_in_its_own_process(tmp_path, cli):
    source, message, frame = BAD["loops forever"]
    path = tmp_path / "linear.py"  # no EXERCISE line: the file name says which exercise
    path.write_text(source)
    r = cli("exercise", "check", path, "--time-limit", "1")
    assert r.exit_code == 2, r.output
    first = r.stderr.splitlines()[0]
    assert first.startswith("error: ") and message in first, r.stderr
    assert r.stderr.count("error: ") == 1 and r.stdout == ""
    assert "Traceback (your file's frames):" in r.stderr and frame in r.stderr and "backprop_cli" not in r.stderr
    assert f'File "{path}", line 2, in backward' in r.stderr


def test_check_runs_the_file_as_written_in_another_process(tmp_path):
    """The learner's code runs in a process of its own (another pid; what it prints is passed on, to
    stderr), as they wrote it: a helper module beside their file imports."""
    import os

    (tmp_path / "helpers.py").write_text("def db_of(dout):\n    return dout.sum(0)\n")
    (tmp_path / "mine.py").write_text("EXERCISE = 'linear'\nimport os\nfrom helpers import db_of\n\n"
                                      "def backward(x, w, b, dout):\n"
                                      f"    print('pid', os.getpid() != {os.getpid()})\n"
                                      "    return dout @ w, dout.T @ x, db_of(dout)\n")
    r = subprocess.run([sys.executable, "-m", "backprop_cli", "exercise", "check", "mine.py"], cwd=tmp_path,
                       capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "exercise linear" in r.stdout and "passed" in r.stdout
    assert "your backward printed:" in r.stderr and "pid True" in r.stderr and "pid False" not in r.stderr


def test_case_text_names_the_sizes():
    assert case_text(EXERCISES["linear"], 0) == "N=4, D=3, M=5"
    assert solution_of(EXERCISES["relu"])(torch.tensor([-1.0, 2.0]), torch.tensor([3.0, 4.0])).tolist() == [0, 4]
