"""Reranker speed on CPU: cross-encoder pairs/s (fp32 vs dynamic int8, by pair length) and
`rec recommend` latency (retrieve ``--retrieve-top``, rerank ``--rerank-top``).

Prints Markdown rows for BENCHMARKS.md: command, data, machine, date, figures.

    python bench/bench_ranking.py --data /work/prepared/ml-latest-small-5core \\
        [--run-dir RUN] [--layers 2 6] [--tokens 64 128] [--threads 2] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores {cpu} (shared with other engineers' jobs)"


def sample_pairs(data: str | None, n: int) -> tuple[list[list[str]], list[str]]:
    """Real (history titles, candidate text) pairs from a prepared dataset, else synthetic."""
    if data:
        import polars as pl

        items = pl.read_parquet(Path(data) / "items.parquet")
        titles = items["title"].to_list()
        texts = items["text"].to_list()
    else:
        from rec.data.synthetic import synthetic_log

        _, items = synthetic_log(n_items=500)
        titles, texts = items["title"].to_list(), items["text"].to_list()
    rng = np.random.default_rng(0)
    hist = [[titles[j] for j in rng.integers(0, len(titles), 40)] for _ in range(n)]
    cand = [texts[j] for j in rng.integers(0, len(texts), n)]
    return hist, cand


def bench_pairs(args: argparse.Namespace, cmd: str, date: str, mach: str) -> None:
    import torch

    from ranking.config import RankingConfig
    from ranking.model import CrossEncoder, quantize_int8
    from rec.models import resolve_model_path

    torch.set_num_threads(args.threads)
    hist, cand = sample_pairs(args.data, 256)
    data = Path(args.data).name if args.data else "synthetic"
    for layers in args.layers:
        for tokens in args.tokens:
            cfg = RankingConfig(
                num_layers=layers,
                max_tokens=tokens,
                history_items=40,
                candidate_tokens=min(32, tokens // 3),
            )
            enc = CrossEncoder.from_pretrained(
                resolve_model_path(cfg.model), cfg, for_training=True
            )
            enc.model.eval()
            base = enc.logits(hist[:64], cand[:64])
            width = enc.pairs.encode(hist[:4], cand[:4])["input_ids"].shape[1]
            for precision in ("fp32", "int8"):
                if precision == "int8":
                    enc.model = quantize_int8(enc.model)
                enc.logits(hist[:64], cand[:64], args.batch)  # warm-up
                t0, n = time.perf_counter(), 0
                while time.perf_counter() - t0 < args.seconds:
                    enc.logits(hist[:128], cand[:128], args.batch)
                    n += 128
                rate = n / (time.perf_counter() - t0)
                diff = float(np.abs(enc.logits(hist[:64], cand[:64]) - base).max())
                print(
                    f"| `{cmd}` | {data} | {mach} | {date} | MiniLM {layers}/6 layers, "
                    f"{width} tokens, {precision}, batch {args.batch}, {args.threads} threads "
                    f"| {rate:.0f} pairs/s | max abs logit diff vs fp32 {diff:.3f} |",
                    flush=True,
                )


def bench_latency(args: argparse.Namespace, cmd: str, date: str, mach: str) -> None:
    import torch

    from rec.artifacts import RunDir
    from rec.pipeline.rank import _Serving, recommend

    torch.set_num_threads(args.threads)
    run = RunDir(args.run_dir).require()
    for quant in args.quantize:
        s = _Serving.get(run.path, "cpu", quant)
        torch.set_num_threads(args.threads)
        users = sorted(s.histories)[: args.users]
        recommend(
            run.path,
            users[0],
            10,
            quantize=quant,
            retrieve_top=args.retrieve_top,
            rerank_top=args.rerank_top,
        )  # warm-up
        lat = []
        for u in users:
            t0 = time.perf_counter()
            recommend(
                run.path,
                u,
                10,
                quantize=quant,
                retrieve_top=args.retrieve_top,
                rerank_top=args.rerank_top,
            )
            lat.append((time.perf_counter() - t0) * 1000)
        lat.sort()
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
        layers = s.reranker.encoder.model.config.num_hidden_layers
        print(
            f"| `{cmd}` | {run.path.name} ({s.source} first stage) | {mach} | {date} | "
            f"recommend k=10, retrieve {args.retrieve_top}, rerank {args.rerank_top}, "
            f"MiniLM {layers}/6 layers, {s.reranker.cfg.max_tokens} tokens, {quant}, "
            f"{args.threads} threads, {len(lat)} users | p50 {p50:.0f} ms, p99 {p99:.0f} ms |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="prepared dataset dir for realistic texts")
    ap.add_argument("--run-dir", default=None, help="trained run for the recommend latency")
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 6])
    ap.add_argument("--tokens", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--retrieve-top", type=int, default=200)
    ap.add_argument("--rerank-top", type=int, default=50)
    ap.add_argument("--quantize", nargs="+", default=["none", "int8"])
    ap.add_argument("--skip-pairs", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cmd = "python bench/bench_ranking.py " + " ".join(sys.argv[1:])
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    mach = machine()
    print("| command | data | machine | date | setting | result | note |")
    print("|---|---|---|---|---|---|---|")
    if not args.skip_pairs:
        bench_pairs(args, cmd, date, mach)
    if args.run_dir:
        bench_latency(args, cmd, date, mach)
    print(
        "\nNo GPU on this machine: the bf16 CUDA path (torch.autocast) is in the code, not "
        "measured.",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
