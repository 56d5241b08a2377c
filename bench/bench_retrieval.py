"""Benchmark of the retrieval stage: time to best validation, item-text encoding and user-vector
throughput. Prints the Markdown rows it adds to BENCHMARKS.md (command, data, machine, date).

    python bench/bench_retrieval.py --data DATA_DIR [--set retrieval.k=v ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def machine() -> str:
    """CPU model, cores, torch threads and the 1-minute load average (shared machines)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, load {load:.1f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="prepared canonical dataset directory")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override retrieval.key=value (repeatable)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="", help="model directory (default: in a temp dir)")
    ap.add_argument("--skip-train", action="store_true", help="only time an existing --out model")
    args = ap.parse_args()

    import polars as pl
    import torch

    from rec.config import load_config
    from rec.data import load_split
    from retrieval.data import eval_inputs
    from retrieval.metrics import evaluate
    from retrieval.model import RetrievalModel
    from retrieval.text import encode_texts, load_sentence_transformer
    from retrieval.train import train_retrieval

    torch.set_num_threads(args.threads)
    cfg = load_config(overrides=args.overrides).retrieval
    out = Path(args.out or Path(tempfile.mkdtemp(prefix="bench-retrieval-")) / "retrieval")
    cmd = "python bench/bench_retrieval.py " + " ".join(sys.argv[1:])
    date = time.strftime("%Y-%m-%d", time.gmtime())
    data = Path(args.data).name
    rows = []
    if not args.skip_train:
        t0, c0 = time.time(), time.process_time()
        m = train_retrieval(args.data, out, cfg, seed=args.seed, device="cpu")
        wall, cpu = time.time() - t0, time.process_time() - c0
        v = m["valid"]
        rows.append(
            f"| retrieval train | {data} | time to best valid {m['time_to_best_seconds']:.0f}"
            f" s (best epoch {m['best_epoch']}, total {wall:.0f} s wall, {cpu:.0f} s CPU) | "
            f"valid R@10 "
            f"{v['recall@10']:.4f} N@10 {v['ndcg@10']:.4f} | `{cmd}` | {machine()} | "
            f"{date} |"
        )
    model = RetrievalModel.load(out)
    if args.skip_train:
        m = model.info.get("metrics", {})
        v = m.get("valid", {})
        rows.append(
            f"| retrieval train (recorded in model.json) | {data} | time to best valid "
            f"{m.get('time_to_best_seconds', 0):.0f} s (best epoch {m.get('best_epoch')},"
            f" total {m.get('train_seconds', 0):.0f} s) | valid R@10 "
            f"{v.get('recall@10', 0):.4f} N@10 {v.get('ndcg@10', 0):.4f} | `{cmd}` | "
            f"{machine()} | {date} |"
        )
    items = pl.read_parquet(Path(args.data) / "items.parquet").filter(
        pl.col("item_id").is_in(model.item_ids)
    )
    texts = items["text"].fill_null("").to_list()
    st = load_sentence_transformer(cfg.encoder, "cpu", cfg.text_max_tokens)
    n = min(512, len(texts))
    t0 = time.time()
    encode_texts(st, texts[:n], cfg.text_batch_size)
    ips = n / (time.time() - t0)
    rows.append(
        f"| item text encoding (uncached, {cfg.encoder}) | {data} | {ips:.0f} items/s |"
        f" {n} items | `{cmd}` | {machine()} | {date} |"
    )
    split = load_split(args.data)
    _, hists, ts, _ = eval_inputs(split, "test")
    t0 = time.time()
    model.encode_users(hists, ts)
    ups = len(hists) / (time.time() - t0)
    rows.append(
        f"| user vectors (max_len {cfg.max_len}) | {data} | {ups:.0f} users/s |"
        f" {len(hists)} users | `{cmd}` | {machine()} | {date} |"
    )
    t0 = time.time()
    met, _ = evaluate(model, split, "valid")
    rows.append(
        f"| full-ranking validation | {data} | {time.time() - t0:.1f} s | valid R@10 "
        f"{met['recall@10']:.4f} | `{cmd}` | {machine()} | {date} |"
    )
    print("| what | data | result | detail | command | machine | date |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
