"""Benchmark `prepare_dataset` on a synthetic 10-million-event log (CSV or Parquet).

    python bench/bench_prepare.py [--events 10000000] [--kind csv|parquet] [--kcore 5]

Generates the log once with numpy (cached under $TMPDIR/rec-bench), then runs prepare (load ->
clean + k-core -> item text -> leave-one-out and temporal splits -> atomic write) in a child
process and reports its wall time and peak RSS. Prints one Markdown row for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl


def generate(path: Path, n_events: int, n_users: int, n_items: int, seed: int = 0) -> None:
    """Zipf-like item popularity, uniform users, random timestamps over a year, ratings 1..5."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_events)
    ranks = rng.zipf(1.3, n_events * 2)
    items = ranks[ranks <= n_items][:n_events] - 1
    if len(items) < n_events:  # pragma: no cover - extremely unlikely
        items = np.concatenate([items, rng.integers(0, n_items, n_events - len(items))])
    perm = rng.permutation(n_items)  # popular ids spread over the id range
    df = pl.DataFrame(
        {
            "user_id": users.astype(np.int64),
            "item_id": perm[items].astype(np.int64),
            "timestamp": rng.integers(1_500_000_000, 1_531_536_000, n_events),
            "value": rng.integers(1, 6, n_events).astype(np.float64),
        }
    )
    tmp = path.with_suffix(path.suffix + ".tmp")
    if path.suffix == ".csv":
        df.write_csv(tmp)
    else:
        df.write_parquet(tmp)
    os.replace(tmp, path)


def child(path: str, out: str, kcore: int) -> None:
    """Run prepare once and print its JSON result (seconds, counts)."""
    from rec.config import DataConfig
    from rec.data.prepare import prepare_dataset

    kind = "csv" if path.endswith(".csv") else "parquet"
    cfg = DataConfig(format=kind, input=path, kcore=kcore, value_col="value")
    t0 = time.perf_counter()
    d = prepare_dataset(cfg, out)
    secs = time.perf_counter() - t0
    meta = json.loads((Path(d) / "dataset.json").read_text())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "seconds": secs,
                "cpu_seconds": ru.ru_utime + ru.ru_stime,
                "peak_gib": ru.ru_maxrss / 2**20,
                "counts": meta["counts"],
                "kcore": meta["cleaning"]["kcore"],
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--kind", choices=["csv", "parquet"], default="csv")
    ap.add_argument("--kcore", type=int, default=5)
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "rec-bench"))
    ap.add_argument("--child", nargs=2, metavar=("INPUT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.kcore)
        return

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    src = work / f"events-{args.events}-{args.users}-{args.items}.{args.kind}"
    if not src.exists():
        t0 = time.perf_counter()
        generate(src, args.events, args.users, args.items)
        print(
            f"generated {src} ({src.stat().st_size / 2**20:.0f} MiB) in "
            f"{time.perf_counter() - t0:.1f}s",
            file=sys.stderr,
        )
    out = work / "prepared"
    load_before = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(src), str(out), "--kcore", str(args.kcore)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"bench failed:\n{proc.stderr}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    c = res["counts"]
    print(
        f"# {c['raw_events']:,} raw events -> {c['events']:,} events, {c['users']:,} users, "
        f"{c['items_with_events']:,} items after {args.kcore}-core "
        f"({res['kcore']['iterations'] if res['kcore'] else 0} passes)",
        file=sys.stderr,
    )
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
        f"shared: load avg {load_before:.1f} at start"
    )
    cmd = f"python bench/bench_prepare.py --events {args.events} --kind {args.kind}"
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    print("| command | data | machine | date | seconds | peak GiB |")
    print("|---|---|---|---|---|---|")
    print(
        f"| `{cmd}` | synthetic {args.events / 1e6:g}M events ({args.kind}), "
        f"{args.users:,} users x {args.items:,} items, prepare + {args.kcore}-core + LOO + "
        f"temporal + write | {machine} | {date} | {res['seconds']:.1f} "
        f"(CPU {res['cpu_seconds']:.1f}) | "
        f"{res['peak_gib']:.2f} |"
    )


if __name__ == "__main__":
    main()
