"""How fast backprop loads a table with category columns, and with how much memory (issue 22).

    python benchmarks/bench_table_load.py              # 1,000,000 rows, CSV and Parquet (about 2 minutes)
    python benchmarks/bench_table_load.py --rows 200000
    python benchmarks/bench_table_load.py --against /tmp/main   # another checkout, in turn (git worktree add)

A table of 15 number columns (1% of their cells empty), 5 category columns (8 to 40 levels, 1% empty) and a
number target is written once as CSV and as Parquet. A fresh process then runs ``read_table`` on a config
with ``input_size: auto`` and default policies, the types declared in ``data.columns`` (as ``init`` writes
them) or inferred: the file read (pyarrow), the empty cells filled with the
training rows' medians, each category one-hot encoded (a ``<missing>`` level where cells are empty), the
number inputs standardized, ready to become tensors without a copy. Printed: the wall time of the call
(median of --repeats), and the growth of the process's peak resident memory during it (``/proc/self/
clear_refs`` resets the peak, ``VmHWM`` reads it) against the float32 arrays it returns (x and y), and its
CPU time (user + system, all threads), which a busy machine changes less than the wall time.

Targets (issue 22): ≤ 3 s for 1M rows, peak growth ≤ 4× the float32 arrays, Parquet not slower than CSV.
``benchmarks/bench_csv.py`` measures the numeric-only case (20 number columns), which must not get slower.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (8, 12, 20, 30, 40)

CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
import pyarrow, pyarrow.csv, pyarrow.parquet, pyarrow.compute  # imported before the baseline
from backprop_cli.config import validate
from backprop_cli.data.load import read_table

def status(key):
    return [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key)][0]

path, declared = Path(sys.argv[1]), sys.argv[2] == "declared"
columns = {**{f"n{i}": {"type": "number"} for i in range(15)}, **{f"k{i}": {"type": "category"} for i in range(5)}}
cfg = validate({"model": {"input_size": "auto", "hidden_size": 4, "output_size": 1},
                "data": {"kind": "csv", "path": str(path), "target": "y", "standardize": True,
                         **({"columns": columns} if declared else {})}})
import resource
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
t, c = time.perf_counter(), cpu()
table = read_table(cfg)
dt, dc = time.perf_counter() - t, cpu() - c
result = table.x.nbytes + table.y.nbytes
print(json.dumps({"time": dt, "cpu": dc, "growth": status("VmHWM") - base, "result": result, "width": table.x.shape[1],
                  "rows": table.x.shape[0]}))
"""


def write_tables(folder: Path, rows: int) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    cols = {}
    for i in range(15):
        v = rng.standard_normal(rows).astype(np.float32) * (i + 1) + i
        cols[f"n{i}"] = pa.array(v, mask=rng.random(rows) < 0.01)
    for i, k in enumerate(LEVELS):
        names = np.array([f"c{i}_{j}" for j in range(k)], dtype=object)
        cols[f"k{i}"] = pa.array(names[rng.integers(0, k, rows)], mask=rng.random(rows) < 0.01)
    cols["y"] = pa.array(rng.standard_normal(rows).astype(np.float32))
    table = pa.table(cols)
    csv, parquet = folder / "t.csv", folder / "t.parquet"
    pacsv.write_csv(table, csv, pacsv.WriteOptions(quoting_style="none"))
    pq.write_table(table, parquet)
    return csv, parquet


def run_child(path: Path, declared: str, root: Path = ROOT) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", CHILD, str(path), declared], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    return json.loads(r.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--against", type=Path, help="another checkout of backprop, timed in turn (the ratio is per pair)")
    args = ap.parse_args()
    trees = {"this": ROOT, **({args.against.name: args.against.resolve()} if args.against else {})}
    with tempfile.TemporaryDirectory() as tmp:
        csv, parquet = write_tables(Path(tmp), args.rows)
        print(f"{args.rows:,} rows x 15 numbers + 5 categories; CSV {csv.stat().st_size / 2**20:.0f} MiB, "
              f"Parquet {parquet.stat().st_size / 2**20:.0f} MiB; load average {os.getloadavg()[0]:.2f}")
        for path, declared in ((csv, "declared"), (csv, "inferred"), (parquet, "declared"), (parquet, "inferred")):
            runs: dict[str, list] = {name: [] for name in trees}
            for _ in range(args.repeats):  # the checkouts take turns: a change of load hits them alike
                for name, root in trees.items():
                    runs[name].append(run_child(path, declared, root))
            for name in trees:
                t = statistics.median(r["time"] for r in runs[name])
                c = statistics.median(r["cpu"] for r in runs[name])
                growth = statistics.median(r["growth"] for r in runs[name])
                r = runs[name][0]
                ratio = "" if name == "this" else "; CPU per pair this/it: " + ", ".join(
                    f"{a['cpu'] / b['cpu']:.2f}" for a, b in zip(runs["this"], runs[name]))
                print(f"{path.suffix[1:]:8} {declared:9} {name:8} {t:.2f} s (CPU {c:.2f} s, all threads), peak growth "
                      f"{growth / 2**20:.0f} MiB = {growth / r['result']:.2f}x the float32 arrays ({r['result'] / 2**20:.0f} "
                      f"MiB: {r['rows']:,} rows x {r['width']} inputs + target){ratio}", flush=True)


if __name__ == "__main__":
    main()
