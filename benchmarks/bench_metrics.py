"""Encoding metrics records: json.dumps against the writer's template encoder (outputs.JsonLines).

    python benchmarks/bench_metrics.py [--records 20000] [--repeats 5]

Times, per record, what the metrics writer does at the end of each batch of records: the earlier
writer's way (copy the record, non-finite numbers to None, json.dumps), json.dumps alone, the
generic encoder (outputs.json_value) and the template encoder (outputs.JsonLines), and the CSV row.
Every encoder's output is checked equal to json.dumps's first. Seed-net records (4 parameters) and
records of a 6-layer net (12 parameters). About 20 seconds on the README's machine.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backprop_cli.io.metrics import JsonLines, json_value  # noqa: E402
from mdtable import markdown  # noqa: E402


def _finite(v):
    return v if math.isfinite(v) else None


def earlier(record: dict) -> str:
    """The writer before the template encoder: one json.dumps per record."""
    rec = dict(record)
    for k in ("loss", "grad_norm", "lr", "time"):
        rec[k] = _finite(rec[k])
    rec["grad_norms"] = {k: _finite(v) for k, v in rec["grad_norms"].items()}
    return json.dumps(rec) + "\n"


def records(n: int, layers: int) -> list[dict]:
    names = [f"layer{k}.{w}" for k in range(1, layers + 1) for w in ("weight", "bias")]
    return [{"step": i, "loss": 1.0 / (i + 1) + 1e-9 * i, "grad_norm": 0.1 + i * 1e-7,
             "grad_norms": {n: 0.01 * (j + 1) + i * 1e-9 for j, n in enumerate(names)}, "lr": 0.01,
             "time": i * 2.9e-4} for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, Python {platform.python_version()}; µs per record, fastest of "
          f"{args.repeats}")
    print("expected running time: about 20 s here", flush=True)

    rows = []
    for label, layers in (("seed net (4 parameters)", 2), ("6 layers (12 parameters)", 6)):
        recs = records(args.records, layers)
        names = list(recs[0]["grad_norms"])
        template = JsonLines()
        for r in recs[:50]:
            assert earlier(r) == json.dumps(r) + "\n" == json_value(r) + "\n" == template.line(r)

        def csv_rows(batch):
            w = csv.writer(io.StringIO(), lineterminator="\n")
            w.writerows([[r["step"], repr(r["loss"]), repr(r["grad_norm"]), *(repr(r["grad_norms"][n]) for n in names),
                          repr(r["lr"]), repr(r["time"])] for r in batch])

        encoders = {"earlier writer (copy, None for non-finite, json.dumps)": lambda b: "".join(map(earlier, b)),
                    "json.dumps alone": lambda b: "".join(json.dumps(r) + "\n" for r in b),
                    "outputs.json_value (generic)": lambda b: "".join(json_value(r) + "\n" for r in b),
                    "outputs.JsonLines (template, the writer's)": lambda b: "".join(map(template.line, b)),
                    "CSV row (csv.writer)": csv_rows}
        best = {k: float("inf") for k in encoders}
        for _ in range(args.repeats):
            for name, encode in encoders.items():
                t = time.perf_counter()
                for k in range(0, len(recs), 1024):
                    encode(recs[k:k + 1024])
                best[name] = min(best[name], (time.perf_counter() - t) / len(recs))
        for name, v in best.items():
            rows.append((label, name, f"{v * 1e6:.2f}"))
        print(f"  {label}: done", file=sys.stderr, flush=True)
    head = ("records", "encoder", "µs per record")
    print(markdown(head, rows))


if __name__ == "__main__":
    main()
