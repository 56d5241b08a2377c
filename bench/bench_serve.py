"""Benchmark the HTTP API: `rec serve` on loopback, a bounded number of sequential requests.

Starts ``rec serve --run-dir RUN --host 127.0.0.1 --port <free>`` in a subprocess, waits for
/health, sends ``--requests`` sequential GET /recommend requests per mode (retrieval only, and
retrieve + rerank when the run has a reranker) for users sampled from the run's dataset, then
stops the server. Latency is measured by the client (httpx, keep-alive), so it includes HTTP
and JSON; ``server p50`` is the handler's own ``latency_ms``.

Prints Markdown rows (command, data, machine, date) for BENCHMARKS.md::

    python bench/bench_serve.py --run-dir runs/ml-100k
    python bench/bench_serve.py --run-dir runs/ml-100k --requests 500 --k 20
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores (shared with other jobs)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample_users(run_dir: str, n: int, seed: int) -> tuple[list[str], str]:
    """(up to ``n`` user ids of the run's dataset, a short name of the dataset)."""
    import polars as pl

    from rec.artifacts import RunDir, read_json

    d = RunDir(run_dir).require().dataset_dir()
    users = pl.read_parquet(d / "interactions.parquet", columns=["user_id"])["user_id"].unique()
    users = sorted(users.cast(pl.Utf8).to_list())
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(users), size=min(n, len(users)), replace=False)
    src = read_json(d / "dataset.json").get("source")
    fmt = src.get("format") if isinstance(src, dict) else src
    label = f"{d.name} ({fmt}, {len(users)} users)" if fmt else f"{d.name} ({len(users)} users)"
    return [users[i] for i in pick], label


def wait_healthy(client: httpx.Client, proc: subprocess.Popen, deadline: float) -> dict:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            r = client.get("/health", timeout=2.0)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server not healthy before the start-up timeout")


def run_mode(client: httpx.Client, users: list[str], n: int, k: int, rerank: bool) -> dict:
    lat, server = [], []
    t0 = time.perf_counter()
    for i in range(n):
        params = {"user": users[i % len(users)], "k": k, "rerank": str(rerank).lower()}
        s = time.perf_counter()
        r = client.get("/recommend", params=params, timeout=60.0)
        lat.append((time.perf_counter() - s) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"GET /recommend {params}: HTTP {r.status_code} {r.text[:200]}")
        server.append(r.json()["latency_ms"])
    total = time.perf_counter() - t0
    return {
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "rps": n / total,
        "server_p50": float(np.percentile(server, 50)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True, help="A run with retrieval/ and index/.")
    ap.add_argument("--requests", type=int, default=200, help="Sequential requests per mode.")
    ap.add_argument("--warmup", type=int, default=10, help="Unmeasured requests first.")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--users", type=int, default=200, help="Distinct users to cycle through.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--startup-timeout", type=float, default=300.0)
    ap.add_argument("--max-seconds", type=float, default=900.0, help="Stop after this, always.")
    args = ap.parse_args()
    if not 0 < args.requests <= 100_000:
        ap.error("--requests must be in 1..100000")

    started = time.monotonic()
    cmd = "python bench/bench_serve.py " + shlex.join(sys.argv[1:])
    users, data = sample_users(args.run_dir, args.users, args.seed)
    port = free_port()
    server_cmd = [
        sys.executable,
        "-c",
        "from rec.cli import main; main()",
        "serve",
        "--run-dir",
        args.run_dir,
        "--host",
        "127.0.0.1",  # loopback only
        "--port",
        str(port),
        "--device",
        args.device,
    ]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(server_cmd, stdout=log, stderr=subprocess.STDOUT)
    rows = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            t0 = time.monotonic()
            health = wait_healthy(client, proc, t0 + args.startup_timeout)
            startup = time.monotonic() - t0
            modes = [False] + ([True] if "ranking" in health["stages"] else [])
            for rerank in modes:
                if time.monotonic() - started > args.max_seconds:
                    break
                run_mode(client, users, args.warmup, args.k, rerank)
                res = run_mode(client, users, args.requests, args.k, rerank)
                rows.append(("retrieve + rerank" if rerank else "retrieval", res))
    except RuntimeError as exc:
        log.seek(0)
        tail = log.read().decode(errors="replace").splitlines()[-15:]
        print(f"bench_serve: {exc}\n" + "\n".join(tail), file=sys.stderr)
        return 1
    finally:
        proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

    date = time.strftime("%Y-%m-%d", time.gmtime())
    print(f"server start-up (load run + bind): {startup:.1f} s; {health['n_items']} items")
    print()
    print(
        "| command | data | machine | date | stage | requests | k "
        "| p50 ms | p99 ms | req/s | server p50 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for stage, r in rows:
        print(
            f"| `{cmd}` | {data}, {health['n_items']} items | {machine()} | {date} | {stage} "
            f"| {args.requests} sequential | {args.k} | {r['p50']:.1f} | {r['p99']:.1f} "
            f"| {r['rps']:.1f} | {r['server_p50']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
