"""Floors (most-popular, EASE with lambda chosen on validation, Markov) on prepared datasets.

Usage: python bench/bench_eval.py [--filter-seen both|on|off] DATA_DIR [DATA_DIR ...]

Prints one BENCHMARKS.md row per dataset, floor and seen-filter setting (test split, leave-one-out,
full ranking), with the wall time of the whole dataset (fit + lambda search + ranking).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from eval.config import EvalConfig
from rec.pipeline.evaluate import evaluate_baselines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data_dirs", nargs="+")
    ap.add_argument("--split", default="test", choices=["test", "valid"])
    ap.add_argument("--filter-seen", default="on", choices=["on", "off", "both"])
    ap.add_argument("--knn", default="ease", choices=["ease", "itemknn"])
    args = ap.parse_args()
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.filter_seen]
    print(f"# {time.strftime('%Y-%m-%d')} {platform.node()} {platform.processor() or ''}")
    print(
        "| dataset | floor | seen filtered | R@10 | N@10 (95% CI) | R@50 | N@50 | MRR | "
        "n users | EASE lambda | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for d in args.data_dirs:
        for filt in modes:
            cfg = EvalConfig(filter_seen=filt, both_seen_modes=False, baseline_knn=args.knn)
            t0 = time.perf_counter()
            results, proto, _, _ = evaluate_baselines(d, args.split, cfg=cfg)
            wall = time.perf_counter() - t0
            for name, r in results.items():
                m, ci = r.metrics, r.info["ndcg@10_ci95"]
                print(
                    f"| {proto['dataset'] or Path(d).name} | {name} | {'yes' if filt else 'no'} "
                    f"| {m['recall@10']:.4f} | {m['ndcg@10']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}] "
                    f"| {m['recall@50']:.4f} | {m['ndcg@50']:.4f} | {m['mrr']:.4f} "
                    f"| {m['n_users']} | {r.info.get('ease_lambda', '')} | {wall:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
