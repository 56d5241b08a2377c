"""Write an evaluation: RUN/eval/metrics.json, details.json, report.md and PNG plots (atomic).

``metrics.json`` maps each stage (``popularity``, ``ease`` | ``itemknn``, ``markov``, ``retrieval``,
``retrieval_ann``, ``reranked``; variants ``<stage>:unfiltered`` / ``<stage>:filtered`` and
``<stage>:sampledN``) to its metrics dict (``recall@K``, ``ndcg@K``, ``mrr``, ``n_users``, and
``ceiling`` for a two-stage stage). Everything else (CIs, tests, slices, protocol) goes to
``details.json`` and the Markdown report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from eval.evaluate import StageResult, compare_to_floor, metrics_dict
from rec.artifacts import atomic_path, write_json, write_text

# Published full-ranking leave-one-out numbers (../shared/PROTOCOL.md): dataset -> rows of
# (system, filtered, {metric: value}).
PUBLISHED: dict[str, list[tuple[str, bool, dict[str, float]]]] = {
    "ml-latest-small-5core": [
        (
            "LlamaRec",
            True,
            {"recall@10": 0.1524, "ndcg@10": 0.0759, "recall@5": 0.0852, "ndcg@5": 0.0543},
        ),
        ("LRURec", True, {"recall@10": 0.1426, "ndcg@10": 0.0705}),
        ("SASRec (LlamaRec paper)", True, {"recall@10": 0.0993, "ndcg@10": 0.0522}),
        ("BERT4Rec", True, {"recall@10": 0.0785, "ndcg@10": 0.0366}),
        ("RecBole SASRec, 10 min CPU", True, {"recall@10": 0.0803, "ndcg@10": 0.0420}),
        ("RecBole SASRec batch 256, 10 min CPU", True, {"recall@10": 0.1197, "ndcg@10": 0.0572}),
    ],
    "scientific": [
        (
            "MISSRec",
            False,
            {"recall@10": 0.1360, "ndcg@10": 0.0753, "recall@50": 0.2431, "ndcg@50": 0.0983},
        ),
        (
            "UniSRec (fine-tuned)",
            False,
            {"recall@10": 0.1235, "ndcg@10": 0.0634, "recall@50": 0.2473, "ndcg@50": 0.0904},
        ),
        (
            "VQ-Rec",
            False,
            {"recall@10": 0.1211, "ndcg@10": 0.0643, "recall@50": 0.2369, "ndcg@50": 0.0897},
        ),
        (
            "UniSRec (inductive)",
            False,
            {"recall@10": 0.1188, "ndcg@10": 0.0641, "recall@50": 0.2394, "ndcg@50": 0.0903},
        ),
        (
            "SASRec (IDs)",
            False,
            {"recall@10": 0.1080, "ndcg@10": 0.0553, "recall@50": 0.2042, "ndcg@50": 0.0760},
        ),
        (
            "BERT4Rec",
            False,
            {"recall@10": 0.0488, "ndcg@10": 0.0243, "recall@50": 0.1185, "ndcg@50": 0.0393},
        ),
        ("RecBole SASRec, 10 min CPU", True, {"recall@10": 0.1009, "ndcg@10": 0.0682}),
    ],
    "ml-100k": [
        ("RecBole SASRec, 10 min CPU", True, {"recall@10": 0.1400, "ndcg@10": 0.0721}),
        ("RecBole GRU4Rec, 10 min CPU", True, {"recall@10": 0.1304, "ndcg@10": 0.0632}),
        ("RecBole most-popular", True, {"recall@10": 0.0382, "ndcg@10": 0.0173}),
    ],
    "ml-1m": [
        ("SASRec+ full CE", True, {"recall@10": 0.3152, "ndcg@10": 0.1821}),
        ("gSASRec", True, {"recall@10": 0.3003, "ndcg@10": 0.1726}),
        ("BERT4Rec", True, {"recall@10": 0.2843, "ndcg@10": 0.1537}),
        ("SASRec (BCE)", True, {"recall@10": 0.2500, "ndcg@10": 0.1341}),
        ("EASE (floor)", True, {"recall@10": 0.097, "ndcg@10": 0.048}),
        ("most-popular (floor)", True, {"recall@10": 0.037, "ndcg@10": 0.018}),
    ],
}

PLOTS = ("recall_at_k.png", "funnel.png", "reliability.png")
STAGE_ORDER = ("popularity", "ease", "itemknn", "markov", "retrieval", "retrieval_ann", "reranked")


def identify_dataset(meta: dict[str, Any]) -> str | None:
    """Which PROTOCOL.md dataset a canonical dataset's ``dataset.json`` describes, if any."""
    src = meta.get("source") or {}
    name = Path(str(src.get("input", "") if isinstance(src, dict) else src)).name.lower()
    kcore = (meta.get("cleaning") or {}).get("kcore") or {}
    k = kcore.get("k") if isinstance(kcore, dict) else kcore
    if name == "ml-100k":
        return "ml-100k"
    if name == "ml-1m":
        return "ml-1m"
    if name == "ml-latest-small" and k == 5:
        return "ml-latest-small-5core"
    if "scientific" in name:
        return "scientific"
    return None


def _order(names: Sequence[str]) -> list[str]:
    def key(n: str) -> tuple[int, str]:
        base = n.split(":")[0]
        return (STAGE_ORDER.index(base) if base in STAGE_ORDER else len(STAGE_ORDER), n)

    return sorted(names, key=key)


def _f(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def metrics_table(results: dict[str, StageResult], ks: Sequence[int]) -> list[str]:
    """Markdown rows: stages x metrics, NDCG@10 with its bootstrap 95% CI."""
    has_ceiling = any("ceiling" in r.metrics for r in results.values())
    cols = [f"R@{k}" for k in ks] + [f"N@{k}" for k in ks] + ["MRR"]
    cols += ["ceiling"] if has_ceiling else []
    lines = ["| stage | " + " | ".join(cols) + " | n users |", "|---|" + "---|" * (len(cols) + 1)]
    for name in _order(list(results)):
        r = results[name]
        m = r.metrics
        cells = [_f(m[f"recall@{k}"]) for k in ks]
        for k in ks:
            cell = _f(m[f"ndcg@{k}"])
            ci = r.info.get("ndcg@10_ci95")
            if k == 10 and ci and not math.isnan(ci[0]):
                cell += f" [{ci[0]:.4f}, {ci[1]:.4f}]"
            cells.append(cell)
        cells.append(_f(m["mrr"]))
        if has_ceiling:
            cells.append(_f(m.get("ceiling")))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m['n_users']} |")
    return lines


def render_markdown(
    results: dict[str, StageResult],
    protocol: dict[str, Any],
    details: dict[str, Any],
    plots: Sequence[str] = (),
) -> str:
    """The report as Markdown."""
    ks = protocol.get("ks", (5, 10, 20, 50, 100))
    filt = protocol.get("filter_seen", True)
    primary = {k: v for k, v in results.items() if ":" not in k}
    variants = {k: v for k, v in results.items() if ":" in k}
    out = [
        f"# Evaluation: {protocol.get('dataset') or protocol.get('dataset_dir', '')}",
        "",
        "## Protocol",
        "",
        f"- Leave-one-out (split `{protocol.get('split', 'loo')}`, evaluated part "
        f"`{protocol.get('part')}`): last event per user = test target, second-to-last = "
        "validation target; stable time order.",
        f"- Full ranking over all {protocol.get('n_items')} catalogue items with events "
        "(never sampled negatives, unless a row says `sampled`).",
        f"- Seen items filtered: **{'on' if filt else 'off'}** in the main table; the other "
        "setting is in the variants table. When filtering, a target that is already in the "
        "history (a repeat) is "
        + ("kept in the ranking" if protocol.get("keep_seen_target") else "filtered too (a miss)")
        + f": {protocol.get('targets_in_history', 0)} such users.",
        f"- Users evaluated: {protocol.get('n_users')}; ties: "
        f"{protocol.get('ties', 'pessimistic')} (pessimistic: an item scoring equal to the "
        "target ranks above it).",
        "- MRR is over the stage's whole list (full catalogue, or the candidate list for "
        "`reranked`); a target outside it counts 0. NDCG@10 carries a 95% bootstrap CI over "
        f"users ({protocol.get('bootstrap')} resamples, seed {protocol.get('seed')}).",
        f"- Floors fit on {protocol.get('floors_fit_on')}; EASE lambda chosen on validation "
        f"NDCG@10: {protocol.get('ease_lambda')}.",
        f"- Data: `{protocol.get('dataset_dir')}`, fingerprint (sha256 of the split files) "
        f"`{str(protocol.get('data_fingerprint', ''))[:16]}`.",
        "",
        f"## Results ({'seen filtered' if filt else 'seen NOT filtered'})",
        "",
    ]
    out += metrics_table(primary, ks)
    if variants:
        out += [
            "",
            "## Variants (other seen-filter setting; sampled metrics are NOT comparable "
            "with full ranking)",
            "",
        ]
        out += metrics_table(variants, ks)
    sig = details.get("significance") or {}
    if sig:
        out += [
            "",
            "## Paired test against the best floor (per-user NDCG@10)",
            "",
            "| stage | floor | mean diff | 95% CI | p (paired bootstrap) | p (Wilcoxon) |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in sig.items():
            out.append(
                f"| {name} | {s['baseline']} | {s['mean_diff']:+.4f} | "
                f"[{s['ci_low']:+.4f}, {s['ci_high']:+.4f}] | {_f(s['p_bootstrap'])} | "
                f"{_f(s['p_wilcoxon'])} |"
            )
    out += [
        "",
        "## Slices (NDCG@10 / Recall@10, n users)",
        "",
        "cold target = target item without training events; short history = length <= median.",
        "",
        "| stage | cold target | warm target | short history | long history |",
        "|---|---|---|---|---|",
    ]
    for name in _order(list(primary)):
        sl = primary[name].info.get("slices", {})
        cells = []
        for s in ("cold_target", "warm_target", "short_history", "long_history"):
            v = sl.get(s, {})
            cells.append(
                f"{_f(v.get('ndcg@10'))} / {_f(v.get('recall@10'))} ({v.get('n_users', 0)})"
                if v.get("n_users")
                else "- (0)"
            )
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += [
        "",
        "## Beyond accuracy (top 10)",
        "",
        "| stage | catalogue coverage | mean popularity (train events) |",
        "|---|---|---|",
    ]
    for name in _order(list(primary)):
        i = primary[name].info
        if "coverage@10" in i:
            out.append(f"| {name} | {i['coverage@10']:.4f} | {i['avg_popularity@10']:.1f} |")
    funnel = details.get("funnel")
    if funnel:
        out += [
            "",
            "## Funnel",
            "",
            "| step | items | share of targets retained |",
            "|---|---|---|",
        ]
        out += [
            f"| {s['step'].replace(chr(10), ' ')} | {s['items']} | {s['share']:.4f} |"
            for s in funnel
        ]
    cal = details.get("calibration")
    if cal:
        out += [
            "",
            "## Click probabilities of the reranker",
            "",
            f"AUC {_f(cal.get('auc'))}, log-loss {_f(cal.get('log_loss'))}, ECE "
            f"{_f(cal.get('ece'))} ({cal.get('bins')} {cal.get('strategy')} bins, "
            f"{cal.get('n')} candidate pairs).",
        ]
    pub = PUBLISHED.get(protocol.get("dataset") or "")
    if pub:
        out += [
            "",
            f"## Published numbers for {protocol['dataset']} (PROTOCOL.md)",
            "",
            "Compare like with like: the `seen filtered` column must match.",
            "",
            "| system | seen filtered | R@10 | N@10 | R@50 | N@50 |",
            "|---|---|---|---|---|---|",
        ]
        for system, f, m in pub:
            out.append(
                f"| {system} | {'yes' if f else 'no'} | {_f(m.get('recall@10'))} | "
                f"{_f(m.get('ndcg@10'))} | {_f(m.get('recall@50'))} | "
                f"{_f(m.get('ndcg@50'))} |"
            )
        for name in _order(list(results)):
            if ":sampled" in name:
                continue
            m = results[name].metrics
            f = results[name].info.get("filter_seen", filt)
            out.append(
                f"| **{name} (this run)** | {'yes' if f else 'no'} | "
                f"{_f(m.get('recall@10'))} | {_f(m.get('ndcg@10'))} | "
                f"{_f(m.get('recall@50'))} | {_f(m.get('ndcg@50'))} |"
            )
    if plots:
        out += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# plots


def _savefig(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_recall_curves(path: Path, results: dict[str, StageResult], max_k: int = 100) -> None:
    """Recall@K for K = 1..max_k, one line per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ks = np.arange(1, max_k + 1)
    bases = list(dict.fromkeys(n.split(":")[0] for n in _order(list(results))))
    for name in _order(list(results)):
        r = results[name].ranks
        curve = [(r < k).mean() if len(r) else 0.0 for k in ks]
        color = f"C{bases.index(name.split(':')[0]) % 10}"
        ax.plot(ks, curve, label=name, color=color, linestyle="--" if ":" in name else "-")
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K (HR@K)")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _savefig(fig, path)


def plot_reliability(path: Path, bins: dict[str, np.ndarray]) -> None:
    """Reliability diagram: observed click rate vs mean predicted probability per bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ok = bins["count"] > 0
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    ax.plot(bins["mean_prob"][ok], bins["click_rate"][ok], marker="o", label="reranker")
    ax.set_xlabel("mean predicted click probability")
    ax.set_ylabel("observed click rate")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _savefig(fig, path)


def plot_funnel(path: Path, funnel: list[dict[str, Any]]) -> None:
    """Catalogue -> candidates -> top-10: item counts (log) and share of targets retained."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [s["step"] for s in funnel]
    ax.bar(steps, [s["items"] for s in funnel], color="#9bb7d4")
    ax.set_yscale("log")
    ax.set_ylabel("items per user")
    ax2 = ax.twinx()
    ax2.plot(steps, [s["share"] for s in funnel], color="#c0392b", marker="o")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("share of targets retained")
    for i, s in enumerate(funnel):
        ax2.annotate(
            f"{s['share']:.3f}",
            (i, s["share"]),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    _savefig(fig, path)


# ---------------------------------------------------------------------------------------------
# writing


def write_report(
    out_dir: str | Path,
    results: dict[str, StageResult],
    protocol: dict[str, Any],
    *,
    funnel: list[dict[str, Any]] | None = None,
    calibration: dict[str, Any] | None = None,
    plots: bool = True,
    significance: dict[str, Any] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Write metrics.json, details.json, report.md and the plots into ``out_dir``.

    ``calibration`` may hold ``auc``, ``log_loss``, ``ece``, ``n``, ``bins`` (count), ``strategy``
    and ``table`` (``eval.metrics.calibration_bins`` output) for the reliability diagram.
    Returns ``{"metrics": ..., "details": ...}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from eval.config import EvalConfig

    if significance is None:
        significance = compare_to_floor(results, EvalConfig(bootstrap=bootstrap, seed=seed))
    metrics = metrics_dict({k: results[k] for k in _order(list(results))})
    details: dict[str, Any] = {
        "protocol": protocol,
        "stages": {k: results[k].info for k in _order(list(results))},
        "significance": significance,
    }
    if funnel:
        details["funnel"] = funnel
    if calibration:
        details["calibration"] = {k: v for k, v in calibration.items() if k != "table"}
    pub = PUBLISHED.get(protocol.get("dataset") or "")
    if pub:
        details["published"] = [{"system": s, "filter_seen": f, **m} for s, f, m in pub]
    names = []
    if plots and results:
        plot_recall_curves(
            out / "recall_at_k.png", {k: v for k, v in results.items() if ":sampled" not in k}
        )
        names.append("recall_at_k.png")
        if funnel:
            plot_funnel(out / "funnel.png", funnel)
            names.append("funnel.png")
        if calibration and calibration.get("table") is not None:
            plot_reliability(out / "reliability.png", calibration["table"])
            names.append("reliability.png")
    for stale in PLOTS:  # a plot this evaluation did not draw must not survive from an older one
        if stale not in names and (out / stale).exists():
            (out / stale).unlink()
    write_json(out / "metrics.json", metrics)
    write_json(out / "details.json", details)
    write_text(out / "report.md", render_markdown(results, protocol, details, names))
    return {"metrics": metrics, "details": details}


def write_rankings(path: str | Path, table: pl.DataFrame) -> Path:
    """Write a run table (user_id, item_id, rank, score, stage) as Parquet, atomically."""
    p = Path(path)
    with atomic_path(p) as tmp:
        table.write_parquet(tmp)
    return p
