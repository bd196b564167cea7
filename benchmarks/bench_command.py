"""Time `backprop train` as a whole process (start-up + steady state) against a plain PyTorch script.

    python benchmarks/bench_command.py [--repeats 5] [--quick] [--large-steps 40] [--skip-large] [--startup-only]

What a user waits for: each case runs `backprop train` and benchmarks/plain_train.py (the same net,
data, steps, optimizer and metrics file, written by hand) as new processes, taking turns (the first
to run alternates), and reports the median wall time of each, the ratio of the medians (plain time /
backprop time: above 1 is faster than the plain script) and the range of the per-pair ratios (the
machine's noise). Peak memory is each process's maximum resident set size from /usr/bin/time -v.
The plain script runs with the thread count `backprop train` picks (printed), so that the ratio
measures backprop's own work, not the thread choice (benchmarks/bench_threads.py measures that).

Cases: the seed net (10→20→1, batch 5) for 20,000 steps with --metrics and a row every 500 steps
(target ≥ 0.95×), the large net (1024→4096→1024, batch 512) for 40 steps with --metrics and a row every
20 (train's per-layer diagnostics run on those logging steps; target ≥ 0.98×), a 1-step run of configs/seed.yaml
(start-up: target ≤ 0.15 s over the plain script; a second row runs the plain script with the garbage-collector
settings of the backprop process, see backprop_cli/__main__.py, to show backprop's own start-up work apart
from what those save), and commands that never import torch
(`config validate`, a config error, a data error, `--help`: target < 0.4 s). The in-process engine
figure is benchmarks/bench_train.py's. backprop's modules are compiled to
bytecode first, as an installed package has them. About 3 minutes on the README's machine (prints every run).
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mdtable import markdown

ROOT = Path(__file__).resolve().parents[1]
PLAIN = ROOT / "benchmarks" / "plain_train.py"
SEED = ROOT / "configs" / "seed.yaml"
TIME = Path("/usr/bin/time").exists()


def backprop_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("backprop")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "backprop_cli"]


def run(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float | None, str, float | None]:
    """Wall seconds, peak RSS in MB, stdout, CPU seconds (user + system; None without /usr/bin/time)."""
    wrapped = ["/usr/bin/time", "-v", *cmd] if TIME else cmd
    t = time.perf_counter()
    r = subprocess.run(wrapped, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    cpu = [float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", r.stderr)]
    if r.returncode not in (0, 2):
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return wall, int(m.group(1)) / 1024 if m else None, r.stdout, sum(cpu) if len(cpu) == 2 else None


def pair(name: str, ours: list[str], theirs: list[str], repeats: int, cwd: Path, env: dict) -> dict:
    """Run both commands `repeats` times, alternating which goes first."""
    res = {"ours": [], "theirs": [], "ours_mb": [], "theirs_mb": [], "ours_cpu": [], "theirs_cpu": []}
    for k in range(repeats):
        order = [("ours", ours), ("theirs", theirs)]
        for who, cmd in (order if k % 2 == 0 else order[::-1]):
            wall, mb, _, cpu = run(cmd, cwd, env)
            res[who].append(wall)
            res[f"{who}_mb"].append(mb)
            res[f"{who}_cpu"].append(cpu)
        print(f"  {name} #{k + 1}: backprop {res['ours'][-1]:.2f} s, plain {res['theirs'][-1]:.2f} s "
              f"(ratio {res['theirs'][-1] / res['ours'][-1]:.3f})", file=sys.stderr, flush=True)
    return res


def threads_of(stdout: str) -> int:
    m = re.search(r"threads:\s+(\d+)", stdout)
    return int(m.group(1)) if m else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="runs of each program per case (large net: 3 at most)")
    ap.add_argument("--seed-steps", type=int, default=20000)
    ap.add_argument("--large-steps", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="3 repeats, 5,000 seed steps, 10 large steps")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--startup-only", action="store_true",
                    help="only the start-up case and the commands that never import torch (try --repeats 15)")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.seed_steps, args.large_steps = 3, 5000, 10

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "COLUMNS": "200"}
    env.pop("OMP_NUM_THREADS", None)
    # As an installed package runs: from compiled bytecode. A checkout run with PYTHONDONTWRITEBYTECODE set
    # (as on the README's machine) would otherwise compile backprop's modules from source in every process
    # (about 80 ms of each start there), which the plain script, one file, barely pays.
    compileall.compile_dir(ROOT / "backprop_cli", quiet=1)
    bp = backprop_cmd()
    import torch  # only for the machine line

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.2f} at the start")
    estimate = ((args.repeats * 2 * (3 + args.seed_steps / 3300) + min(3, args.repeats) * 2 * (3 + args.large_steps / 7)
                 * (not args.skip_large)) * (not args.startup_only) + args.repeats * 4 * 2.5 + args.repeats * 5 * 0.35)
    print(f"expected running time: about {estimate:.0f} s (a line per run as it goes)", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        # the seed net, many steps, a metrics record per step
        probe = run([*bp, "train", "-c", str(SEED), "--steps", "2"], cwd, env)[2]
        threads = threads_of(probe)
        seed = None if args.startup_only else pair("seed net", [*bp, "train", "-c", str(SEED), "--steps", str(args.seed_steps), "--metrics", "b.jsonl",
                                 "--log-every", "500"],
                    [sys.executable, str(PLAIN), "--steps", str(args.seed_steps), "--metrics", "p.jsonl",
                     "--log-every", "500", "--threads", str(threads)], args.repeats, cwd, env)
        if seed is not None:
            rows.append((f"seed net 10→20→1, batch 5, {args.seed_steps:,} steps, --metrics", seed, threads, "≥ 0.95×"))
        if not (args.skip_large or args.startup_only):
            sets = ["--set", "model.input_size=1024", "--set", "model.hidden_size=4096", "--set",
                    "model.output_size=1024", "--set", "data.samples=512", "--set", "data.batch_size=512"]
            probe = run([*bp, "train", "-c", str(SEED), *sets, "--steps", "1"], cwd, env)[2]
            big_threads = threads_of(probe)
            large = pair("large net", [*bp, "train", "-c", str(SEED), *sets, "--steps", str(args.large_steps),
                                       "--metrics", "b.jsonl", "--log-every", "20"],
                         [sys.executable, str(PLAIN), "--sizes", "1024,4096,1024", "--samples", "512", "--batch", "512",
                          "--steps", str(args.large_steps), "--metrics", "p.jsonl", "--log-every", "20",
                          "--threads", str(big_threads)], min(3, args.repeats), cwd, env)
            rows.append((f"large 1024→4096→1024, batch 512, {args.large_steps} steps, --metrics", large, big_threads,
                         "≥ 0.98×"))
        start = pair("start-up", [*bp, "train", "-c", str(SEED)],
                     [sys.executable, str(PLAIN), "--steps", "1", "--log-every", "1", "--threads", str(threads)],
                     args.repeats, cwd, env)
        rows.append(("start-up: 1 step of configs/seed.yaml", start, threads, "≤ +0.15 s"))
        # backprop's own start-up work, apart from what its garbage-collector settings save (which the
        # plain script above, as people write it, does not have): the plain script with the same settings
        alike = pair("start-up, alike", [*bp, "train", "-c", str(SEED)],
                     [sys.executable, str(PLAIN), "--steps", "1", "--log-every", "1", "--threads", str(threads),
                      "--collector-like-backprop"], args.repeats, cwd, env)
        rows.append(("start-up, the plain script with backprop's collector settings", alike, threads, "—"))
        torch_only = statistics.median(run([sys.executable, "-c", "import torch"], cwd, env)[0]
                                       for _ in range(args.repeats))
        dynamo = statistics.median(run([sys.executable, "-c", "import torch, torch._dynamo"], cwd, env)[0]
                                   for _ in range(args.repeats))

        # commands that never import torch
        (cwd / "bad.csv").write_text("a,b,y\n1,2,3\n4,x,6\n")
        (cwd / "bad.yaml").write_text("model: {input_size: 2, hidden_size: 4, output_size: 1}\n"
                                      "data: {kind: csv, path: bad.csv, target: y, batch_size: 2}\n")
        light = {"backprop --help": ["--help"], "config validate": ["config", "validate", "-c", str(SEED)],
                 "a config error": ["train", "-c", str(SEED), "--set", "optimzer.lr=1"],
                 "a data error": ["train", "-c", "bad.yaml"], "a missing config": ["train", "-c", "nope.yaml"]}
        light_times = {}
        for name, cmd in light.items():
            light_times[name] = statistics.median(run([*bp, *cmd], cwd, env)[0] for _ in range(args.repeats))
            print(f"  {name}: {light_times[name]:.3f} s", file=sys.stderr, flush=True)

    def mb(values):
        return f"{max(v for v in values if v is not None):,.0f}" if any(v is not None for v in values) else "—"

    head = ("case", "threads", "plain script", "backprop train", "plain / backprop", "pair ratios",
            "CPU s plain / ours", "CPU ratio", "peak MB plain / ours", "target")
    table = []
    for name, r, th, target in rows:
        o, t = statistics.median(r["ours"]), statistics.median(r["theirs"])
        ratios = [b / a for a, b in zip(r["ours"], r["theirs"])]
        startup = "start-up" in name
        ratio = f"{t / o:.3f}×" if not startup else f"{o - t:+.3f} s"
        spread = (f"{min(ratios):.2f}-{max(ratios):.2f}" if not startup else
                  f"{min(a - b for a, b in zip(r['ours'], r['theirs'])):+.2f} to "
                  f"{max(a - b for a, b in zip(r['ours'], r['theirs'])):+.2f} s")
        cpu = "—", "—"
        if None not in r["ours_cpu"] + r["theirs_cpu"]:
            oc, tc = statistics.median(r["ours_cpu"]), statistics.median(r["theirs_cpu"])
            cpu = f"{tc:.2f} / {oc:.2f}", (f"{tc / oc:.3f}×" if not startup else f"{oc - tc:+.3f} s")
        table.append((name, str(th), f"{t:.2f} s", f"{o:.2f} s", ratio, spread, *cpu,
                      f"{mb(r['theirs_mb'])} / {mb(r['ours_mb'])}", target))
    print(f"\nwhole process, median of {args.repeats} alternating runs each (large net: {min(3, args.repeats)}); "
          f"load average {os.getloadavg()[0]:.2f} at the end. Wall time is what a user waits for; CPU time (user +"
          " system, from /usr/bin/time) is the work done, which other programs on a shared machine disturb less")
    print(markdown(head, table))
    print(f"\n`python -c 'import torch'` alone: {torch_only:.2f} s; with `torch._dynamo` (which the first optimizer "
          f"imports, in both programs): {dynamo:.2f} s")
    print("commands that never import torch (median, target < 0.4 s): "
          + ", ".join(f"{k} {v:.3f} s" for k, v in light_times.items()))


if __name__ == "__main__":
    main()
