"""--detect-anomaly: one error line naming the operation, other warnings untouched."""



from conftest import CONFIGS

REG = CONFIGS / "regression.yaml"


def test_detect_anomaly_names_the_operation(cli):
    r = cli("train", "-c", REG, "--set", "optimizer.lr=100", "--detect-anomaly")
    assert r.exit_code == 3 and "autograd anomaly at step 8: Function 'TanhBackward0' returned nan" in r.stderr
    # one line: torch's two warnings (mode on; the forward call's whole traceback) are reduced to the
    # model line that ran the operation, and the start panel says the mode is on
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "the forward ran it at model.py:" in r.stderr and "self.activation(" in r.stderr
    assert "guards:     autograd anomaly detection (slower)" in r.stdout


def test_anomaly_mode_lets_other_warnings_through(monkeypatch):
    import warnings

    from backprop_cli.runs.training import AnomalyMode

    shown = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *a, **kw: shown.append(str(message)))
    with AnomalyMode() as mode:
        warnings.warn("Anomaly Detection has been enabled. (a copy of torch's)")
        warnings.warn("Error detected in MulBackward0. Traceback of forward call that caused the error:\n"
                      '  File "/x/backprop_cli/core/model.py", line 7, in forward\n    return self.f(x)\n')
        warnings.warn("something else")
    assert shown == ["something else"]
    assert mode.describe(RuntimeError("Function 'MulBackward0' returned nan values.")) == \
        "Function 'MulBackward0' returned nan values; the forward ran it at model.py:7: return self.f(x)"
