"""How fast backprop reads a CSV, and with how much memory: rows × 20 numeric columns (19 features, 1 target).

    python benchmarks/bench_csv.py                       # 10k, 100k, 1M rows (about 1-2 minutes)
    python benchmarks/bench_csv.py --rows 10000000       # add sizes (10M rows: a 1.8 GB file, about 4 minutes more)
    python benchmarks/bench_csv.py --readers             # also polars and pandas, when installed (pip install -e '.[bench]')

Each size is written once to a temporary file, then read in fresh processes (median of --repeats):

- in-process: the time of ``backprop_cli.data.read_columns`` alone, and the growth of the process's peak
  resident memory over its resident memory just before the call (``/proc/self/clear_refs`` resets the peak,
  ``VmHWM`` reads it), against the float32 arrays it returns;
- whole process: the wall time of a new Python process that imports backprop's reader, reads the file and
  exits, and its peak resident memory (``ru_maxrss`` from ``os.wait4``).

Targets (issue 14): 1,000,000 rows load in ≤ 2 s with peak growth ≤ 4× the float32 result, growing linearly.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [f"f{i}" for i in range(19)] + ["y"]

CHILD = r"""
import json, sys, time
from pathlib import Path
def status(field):
    return [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(field)][0]
reader, path = sys.argv[1], Path(sys.argv[2])
names = [f"f{i}" for i in range(19)]
if reader == "backprop":
    from backprop_cli.data import read_columns
    import pyarrow.csv  # imported before the baseline: its import is not the reading
elif reader == "polars":
    import polars as pl
elif reader == "pandas":
    import numpy as np, pandas as pd
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
t = time.perf_counter()
if reader == "backprop":
    cols = read_columns(path, key="data.path", numeric=names + ["y"], fast=True)
    nbytes, rows = cols.numbers.nbytes, cols.numbers.shape[0]
elif reader == "polars":
    df = pl.read_csv(path, schema_overrides={n: pl.Float32 for n in names + ["y"]})
    a = df.to_numpy(); del df
    nbytes, rows = a.nbytes, a.shape[0]
else:
    df = pd.read_csv(path, dtype=np.float32, engine="c")
    a = df.to_numpy(np.float32); del df
    nbytes, rows = a.nbytes, a.shape[0]
dt = time.perf_counter() - t
print(json.dumps({"time": dt, "growth": status("VmHWM") - base, "result": nbytes, "rows": rows}))
"""


def write_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        f.write(",".join(COLUMNS) + "\n")
        for lo in range(0, rows, 250_000):
            block = rng.standard_normal((min(250_000, rows - lo), len(COLUMNS))).astype(np.float32)
            np.savetxt(f, block, fmt="%.6g", delimiter=",")


def run_child(reader: str, path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, reader, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{reader} failed on {path}:\n{err.decode()[-2000:]}")
    doc = json.loads(out)
    doc.update(wall=wall, maxrss=usage.ru_maxrss * 1024)
    return doc


def estimate(sizes: list[int], repeats: int, readers: list[str]) -> float:
    """Seconds, from this machine's rates: writing ~70k rows/s, reading ~0.6 M rows/s, 0.5 s per process."""
    return sum(n / 70_000 + repeats * len(readers) * (0.5 + n / 600_000) for n in sizes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="*", default=[], help="more sizes, e.g. --rows 10000000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--readers", action="store_true", help="also time polars and pandas (if installed)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    sizes = sorted({10_000, 100_000, 1_000_000, *args.rows})
    readers = ["backprop"]
    if args.readers:
        for name in ("polars", "pandas"):
            try:
                __import__(name)
                readers.append(name)
            except ImportError:
                print(f"({name} is not installed: pip install -e '.[bench]')")
    print(f"bench_csv: {', '.join(f'{n:,}' for n in sizes)} rows × {len(COLUMNS)} columns, readers "
          f"{', '.join(readers)}, {args.repeats} runs each; expected running time about "
          f"{estimate(sizes, args.repeats, readers) / 60:.1f} minutes", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-csv-") as tmp:
        for n in sizes:
            path = Path(tmp) / f"rows{n}.csv"
            t = time.perf_counter()
            write_csv(path, n)
            size = path.stat().st_size
            print(f"  wrote {n:,} rows ({size / 2**20:,.0f} MiB) in {time.perf_counter() - t:.1f} s", flush=True)
            for reader in readers:
                runs = []
                for _ in range(args.repeats):
                    runs.append(run_child(reader, path))
                med = {k: statistics.median(r[k] for r in runs) for k in ("time", "growth", "wall", "maxrss")}
                row = {"reader": reader, "rows": n, "file_mib": size / 2**20, "result_mib": runs[0]["result"] / 2**20,
                       **med}
                results.append(row)
                print(f"  {reader:8} {n:>10,} rows: read {med['time']:.2f} s, peak +{med['growth'] / 2**20:,.0f} MiB "
                      f"({med['growth'] / runs[0]['result']:.2f}× the float32 result); whole process "
                      f"{med['wall']:.2f} s, peak {med['maxrss'] / 2**20:,.0f} MiB", flush=True)
            path.unlink()
    print()
    print("| reader | rows | file | float32 result | read (in-process) | peak growth | growth / result | "
          "µs per row | whole process | process peak |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['reader']} | {r['rows']:,} | {r['file_mib']:,.1f} MiB | {r['result_mib']:,.1f} MiB | "
              f"{r['time']:.3f} s | {r['growth'] / 2**20:,.1f} MiB | {r['growth'] / (r['result_mib'] * 2**20):.2f}× | "
              f"{1e6 * r['time'] / r['rows']:.2f} | {r['wall']:.2f} s | {r['maxrss'] / 2**20:,.0f} MiB |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
