"""Data generation at scale: `cli.py synth --shard K/N` in N processes vs one process, one run.

For each process count N (default 1 and 2) the script starts N `cli.py synth ... --shard K/N`
processes at once (each one thread, its own --out) and times the wall clock until all have
finished (process start-up included): samples/s = scenes / wall time. It then checks that the
parts put together equal the single-process run file for file, byte for byte. Prints a table,
the load average, then one JSON line of the figures.

Each part runs in its own session, as an independent job would (on Linux with autogroup
scheduling, processes of one session share one CPU share however many they are, so parts
started from one shell cannot go faster than one process on a loaded machine).

    .venv/bin/python benchmarks/bench_synth_shards.py [--scenes 16] [--size 256x256] [--processes 1,2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_parts(n: int, args, out: Path) -> float:
    """Wall seconds for n processes writing parts 1..n of the data set."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "cli.py"), "synth", "--scenes", str(args.scenes), "--size", args.size,
           "--format", args.format, "--seed", "0", "--device", "cpu", "--no-preview"]
    t = time.perf_counter()
    procs = [subprocess.Popen(cmd + ["--out", str(out / f"part{k}"), "--shard", f"{k}/{n}"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True) for k in range(1, n + 1)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"synth part failed ({p.returncode}): {err.decode()[-2000:]}")
    return time.perf_counter() - t


def data_files(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every data file of the parts under ``folder`` (records and
    previews left out)."""
    files: dict[str, bytes] = {}
    for part in sorted(folder.glob("part*")):
        for p in sorted(part.rglob("*")):
            if p.is_file() and not p.name.startswith(("synth_record", "contact_sheet")):
                files[str(p.relative_to(part))] = p.read_bytes()
    return files


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=16)
    ap.add_argument("--size", default="256x256")
    ap.add_argument("--format", default="dpdd", help="dpdd (parts split by sample) or npz (by 16-sample shard)")
    ap.add_argument("--processes", default="1,2")
    args = ap.parse_args()
    counts = [int(v) for v in args.processes.split(",")]
    load_before = os.getloadavg()[0]
    rows, trees = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_shards_") as tmp:
        for n in counts:
            out = Path(tmp) / f"n{n}"
            wall = run_parts(n, args, out)
            rows.append((n, wall, args.scenes / wall))
            trees[n] = data_files(out)
    base = trees[counts[0]]
    equal = {n: trees[n] == base for n in counts}
    load_after = os.getloadavg()[0]
    print(f"synth {args.scenes} scenes {args.size} --format {args.format}, one thread per process, "
          f"wall clock incl. start-up")
    print(f"{'processes':>9s} {'wall s':>8s} {'samples/s':>10s} {'vs 1 process':>13s} {'union == 1-process run':>23s}")
    for n, wall, sps in rows:
        print(f"{n:9d} {wall:8.1f} {sps:10.2f} {sps / rows[0][2]:12.2f}x {str(equal[n]):>23s}")
    print(f"load average (1 min): {load_before:.1f} before, {load_after:.1f} after; {os.cpu_count()} CPUs")
    print(json.dumps({
        "samples_per_second": {str(n): round(sps, 3) for n, _, sps in rows},
        "speedup": round(rows[-1][2] / rows[0][2], 2), "union_equal": all(equal.values()),
        "files": len(base), "scenes": args.scenes, "size": args.size, "format": args.format,
        "load_avg_1min": [round(load_before, 1), round(load_after, 1)],
    }))
    if not all(equal.values()):
        raise SystemExit("the parts differ from the single-process run")


if __name__ == "__main__":
    main()
