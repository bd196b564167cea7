"""How fast backprop reads a CSV, and with how much memory: rows × 20 numeric columns (19 features, 1 target).

    python benchmarks/bench_csv.py                         # 10k, 100k, 1M rows (about 2 minutes)
    python benchmarks/bench_csv.py --rows 3000000 10000000 # add sizes (10M rows: a 1.8 GB file, ~6 min more)
    python benchmarks/bench_csv.py --readers               # also polars and pandas (pip install -e '.[bench]')
    python benchmarks/bench_csv.py --readers polars        # only some of them
    python benchmarks/bench_csv.py --dir /big/disk         # where the files are written (default: a temp dir)
    python benchmarks/bench_csv.py --only 1000000 --repeats 7 --against /tmp/old  # another checkout, in turn

Each size is written once, then read in fresh processes, the readers taking turns (median of --repeats):

- in-process: the wall and CPU time (user + system, all threads; the system part, mostly page faults of
  fresh memory, also apart) of ``backprop_cli.data.load.read_table``, the CSV
  turned into the C-contiguous float32 feature and target arrays that training wraps as tensors without
  a copy; and the growth of the process's peak resident memory over its resident memory just before the
  call (``/proc/self/clear_refs`` resets the peak, ``VmHWM`` reads it), against those arrays;
- whole process: the wall time of a new Python process that imports the reader, reads the file and
  exits, and its peak resident memory (``ru_maxrss`` from ``os.wait4``).

The other readers make the same two arrays: ``polars`` (``read_csv`` with float32 columns, then
``to_numpy``), ``polars+check`` (the same after a vectorised byte scan that checks every line has 20
cells: polars fills a short row with nulls rather than refusing it), ``pandas`` (the C engine),
``pandas-pyarrow`` (pandas with ``engine="pyarrow"``). CPU time does not depend on what else the machine
runs; wall time does, so the load average is printed beside each size.

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
OTHERS = ("polars", "polars+check", "pandas", "pandas-pyarrow")

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
def status(field):
    return [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(field)][0]
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime
def short_rows(path, width):
    # every line has width - 1 commas (no quotes in the file, or it gives up); 16 MiB at a time
    import numpy as np
    carry = 0
    with open(path, "rb") as f:
        f.readline()
        while buf := f.read(16 << 20):
            b = np.frombuffer(buf, dtype=np.uint8)
            if (b == 34).any():
                return True
            ends = np.flatnonzero(b == 10)
            commas = np.cumsum(b == 44, dtype=np.int32)
            at = commas[ends]
            per = np.diff(at, prepend=0)
            if len(per):
                per[0] += carry
                carry = int(commas[-1] - at[-1])
            else:
                carry += int(commas[-1])
            if (per != width - 1).any():
                return True
    return False
reader, path = sys.argv[1], Path(sys.argv[2])
names = [f"f{i}" for i in range(19)]
import numpy as np
if reader.startswith("backprop"):
    from backprop_cli.config import validate
    try:
        from backprop_cli.data.load import read_table
    except ImportError:  # a checkout from before the data package (--against)
        from backprop_cli.data.readers import read_table
    import pyarrow.csv  # imported before the baseline: its import is not the reading
    try:
        cfg = validate({"model": {"input_size": "auto", "hidden_size": 4, "output_size": 1},
                        "data": {"kind": "csv", "path": str(path), "target": "y"}})
    except Exception:  # a checkout from before input_size: auto
        cfg = validate({"model": {"input_size": 19, "hidden_size": 4, "output_size": 1},
                        "data": {"kind": "csv", "path": str(path), "target": "y"}})
elif reader.startswith("polars"):
    import polars as pl
else:
    import pandas as pd
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
t, c = time.perf_counter(), cpu()
if reader.startswith("backprop"):
    table = read_table(cfg)
    arrays = [table.x, table.y]
elif reader.startswith("polars"):
    if reader == "polars+check" and short_rows(path, 20):
        raise SystemExit("a short row")
    df = pl.read_csv(path, schema_overrides={n: pl.Float32 for n in names + ["y"]})
    arrays = [df.select(names).to_numpy(order="c"), df.select("y").to_numpy(order="c")]
    del df
else:
    df = pd.read_csv(path, dtype=np.float32, engine="pyarrow" if reader == "pandas-pyarrow" else "c")
    arrays = [np.ascontiguousarray(df[names].to_numpy(np.float32)), np.ascontiguousarray(df[["y"]].to_numpy(np.float32))]
    del df
dt, (u, s) = time.perf_counter() - t, cpu()
assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in arrays)
print(json.dumps({"time": dt, "cpu": u + s - sum(c), "sys": s - c[1], "growth": status("VmHWM") - base, "result": sum(a.nbytes for a in arrays),
                  "rows": arrays[0].shape[0]}))
"""


def write_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        f.write(",".join(COLUMNS) + "\n")
        for lo in range(0, rows, 250_000):
            block = rng.standard_normal((min(250_000, rows - lo), len(COLUMNS))).astype(np.float32)
            np.savetxt(f, block, fmt="%.6g", delimiter=",")


AGAINST: dict[str, Path] = {}  # reader name → another checkout of backprop (--against)


def run_child(reader: str, path: Path) -> dict:
    root = AGAINST.get(reader, ROOT)
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
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
    """Seconds, from this machine's rates: writing ~80k rows/s, reading ~0.5 M rows/s, 0.6 s per process."""
    return sum(n / 80_000 + repeats * len(readers) * (0.6 + n / 500_000) for n in sizes)


def linearity(results: list[dict]) -> list[str]:
    """Per reader: time, CPU and peak growth per row from 1M rows up, largest size against 1M."""
    lines = []
    for reader in dict.fromkeys(r["reader"] for r in results):
        rs = [r for r in results if r["reader"] == reader and r["rows"] >= 1_000_000]
        if len(rs) < 2:
            continue
        a, b = rs[0], rs[-1]
        per = {k: (b[k] / b["rows"]) / (a[k] / a["rows"]) for k in ("time", "cpu", "growth")}
        user = ((b["cpu"] - b["sys"]) / b["rows"]) / ((a["cpu"] - a["sys"]) / a["rows"])
        lines.append(f"  {reader}: {a['rows']:,} → {b['rows']:,} rows ({b['rows'] / a['rows']:g}×): per row, time "
                     f"{per['time']:.2f}×, CPU {per['cpu']:.2f}× (user {user:.2f}×), peak growth "
                     f"{per['growth']:.2f}× (1.00× is linear)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="*", default=[], help="more sizes, e.g. --rows 10000000")
    ap.add_argument("--only", type=int, nargs="*", help="these sizes instead of 10k, 100k, 1M and --rows")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--readers", nargs="*", choices=OTHERS, metavar="READER",
                    help=f"also time these readers, if installed ({', '.join(OTHERS)}; all of them when none is named)")
    ap.add_argument("--dir", type=Path, help="write the CSV files here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--against", type=Path, nargs="*", default=[], metavar="DIR",
                    help="also time these checkouts of backprop (e.g. git worktree add /tmp/old COMMIT), in turn")
    args = ap.parse_args()
    sizes = sorted(set(args.only) if args.only else {10_000, 100_000, 1_000_000, *args.rows})
    readers = ["backprop"]
    for folder in args.against:
        AGAINST[f"backprop@{folder.name}"] = folder.resolve()
        readers.append(f"backprop@{folder.name}")
    if args.readers is not None:
        for name in args.readers or OTHERS:
            try:
                __import__(name.split("+")[0].split("-")[0])
                readers.append(name)
            except ImportError:
                print(f"({name} is not installed: pip install -e '.[bench]')")
    print(f"bench_csv: {', '.join(f'{n:,}' for n in sizes)} rows × {len(COLUMNS)} columns, readers "
          f"{', '.join(readers)}, {args.repeats} runs each on {os.cpu_count()} CPUs; expected running time about "
          f"{estimate(sizes, args.repeats, readers) / 60:.1f} minutes", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-csv-", dir=args.dir) as tmp:
        for n in sizes:
            path = Path(tmp) / f"rows{n}.csv"
            t = time.perf_counter()
            write_csv(path, n)
            size = path.stat().st_size
            print(f"  wrote {n:,} rows ({size / 2**20:,.0f} MiB) in {time.perf_counter() - t:.1f} s", flush=True)
            runs: dict[str, list[dict]] = {r: [] for r in readers}
            loads = [os.getloadavg()[0]]
            for _ in range(args.repeats):  # the readers take turns: a change of load hits them alike
                for reader in readers:
                    runs[reader].append(run_child(reader, path))
                loads.append(os.getloadavg()[0])
            for reader in readers:
                med = {k: statistics.median(r[k] for r in runs[reader])
                       for k in ("time", "cpu", "sys", "growth", "wall", "maxrss")}
                row = {"reader": reader, "rows": n, "file_mib": size / 2**20,
                       "result_mib": runs[reader][0]["result"] / 2**20, "load": statistics.median(loads),
                       "times": [r["time"] for r in runs[reader]], **med}
                results.append(row)
                print(f"  {reader:14} {n:>10,} rows: read {med['time']:.2f} s (CPU {med['cpu']:.2f} s, system "
                      f"{med['sys']:.2f} s), peak "
                      f"+{med['growth'] / 2**20:,.0f} MiB ({med['growth'] / runs[reader][0]['result']:.2f}× the "
                      f"float32 result); whole process {med['wall']:.2f} s, peak {med['maxrss'] / 2**20:,.0f} MiB; "
                      f"load {row['load']:.1f}", flush=True)
            path.unlink()
    print()
    print("| reader | rows | file | float32 result | read | read CPU (system) | peak growth | growth / result | "
          "µs per row | whole process | process peak | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['reader']} | {r['rows']:,} | {r['file_mib']:,.1f} MiB | {r['result_mib']:,.1f} MiB | "
              f"{r['time']:.2f} s | {r['cpu']:.2f} s ({r['sys']:.2f}) | {r['growth'] / 2**20:,.1f} MiB | "
              f"{r['growth'] / (r['result_mib'] * 2**20):.2f}× | {1e6 * r['time'] / r['rows']:.2f} | "
              f"{r['wall']:.2f} s | {r['maxrss'] / 2**20:,.0f} MiB | {r['load']:.1f} |")
    lines = linearity(results)
    if lines:
        print("\nGrowth:")
        print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
