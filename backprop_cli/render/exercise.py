"""exercise list / check: plain lines. No torch here."""

from __future__ import annotations

from backprop_cli.render.console import fmt


def list_lines(exercises) -> list[str]:
    width = max(len(e.name) for e in exercises)
    lines = [f"{e.name:<{width}}  {e.title}" for e in exercises]
    return lines + ["", "backprop exercise start NAME writes NAME.py to fill in; backprop exercise check NAME.py "
                        "checks it against autograd"]


def _verdict(g: dict) -> str:
    if g["status"] == "exact":
        return "exact"
    if g["status"] == "approximate":
        return f"approximate (max difference {fmt(g['max_abs_diff'])})"
    if g["max_abs_diff"] is None or not g["shape_ok"]:
        return "wrong"
    return f"wrong (max difference {fmt(g['max_abs_diff'])})"


def _shape(g: dict) -> str:
    if g["shape_ok"]:
        return f"shape ok [{g['shape']}]" if g["shape"] else "shape ok (scalar)"
    if g["got_shape"] is None:
        return f"not computed (None), at {g['case']}"
    return f"shape wrong: {g['got_shape']}, want {g['want_shape']} at {g['case']}"


def check_lines(r: dict, reveal: bool = False) -> list[str]:
    out = [f"exercise {r['exercise']}, {r['file']}: backward on {r['sizes']}, float64, against autograd"]
    width = max(len(g["name"]) for g in r["grads"])
    verdicts = [_verdict(g) for g in r["grads"]]
    vwidth = max(len(v) for v in verdicts)
    for g, v in zip(r["grads"], verdicts):
        out.append(f"  {g['name']:<{width}}  {v:<{vwidth}}  {_shape(g)}")
    right = sum(g["status"] != "wrong" for g in r["grads"])
    total = len(r["grads"])
    if r["hint"] is not None:
        out.append(f"hint ({r['hint']['grad']}, at {r['hint']['case']}): {r['hint']['text']}")
    if r["pass"]:
        tail = "" if reveal else "; --reveal shows a reference answer"
        out.append(f"passed: all {total} gradient{'s' if total != 1 else ''} agree with autograd{tail}")
    else:
        out.append(f"not yet: {right} of {total} gradient{'s' if total != 1 else ''} right")
    if reveal:
        out += ["", f"a reference backward for {r['exercise']}:", "", *r["solution"].rstrip().splitlines()]
    return out
