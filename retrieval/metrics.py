"""Full-ranking leave-one-out metrics used for model selection (validation) and reporting.

The rank of a target is the number of catalogue items scored strictly higher; with
``filter_seen`` the user's history items are removed from the ranking first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rec.data import Split
from retrieval.data import eval_inputs

KS = (5, 10, 20, 50, 100)


def target_ranks(
    scores: torch.Tensor, targets: torch.Tensor, seen: list[list[int]] | None
) -> np.ndarray:
    """0-based ranks of ``targets`` [u] in ``scores`` [u, n]; history items removed if given."""
    scores = scores.clone()
    if seen is not None:
        rows = [r for r, s in enumerate(seen) for _ in s]
        cols = [c for s in seen for c in s]
        if rows:
            scores[rows, cols] = -torch.inf
    t = scores.gather(1, targets.view(-1, 1))
    return (scores > t).sum(dim=1).cpu().numpy()


def summarize(
    ranks: np.ndarray, ks: tuple[int, ...] = KS, bootstrap: int = 0, seed: int = 0
) -> dict[str, Any]:
    """HR@k (= Recall@k under leave-one-out), NDCG@k, MRR; optional bootstrap CI of NDCG@10."""
    ranks = np.asarray(ranks)
    out: dict[str, Any] = {"users": int(len(ranks))}
    if len(ranks) == 0:
        return out
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float((hit / np.log2(ranks + 2.0)).mean())
    out["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    if bootstrap:
        rng = np.random.default_rng(seed)
        gain = (ranks < 10) / np.log2(ranks + 2.0)
        means = [gain[rng.integers(0, len(gain), len(gain))].mean() for _ in range(bootstrap)]
        out["ndcg@10_ci95"] = [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]
    return out


def evaluate(
    model: Any,
    split: Split,
    part: str,
    filter_seen: bool = True,
    ks: tuple[int, ...] = KS,
    bootstrap: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rank every ``part`` target against all catalogue items.

    Returns (metrics, details) where details holds per-user ``users``, ``targets``, ``ranks``.
    Users whose target or whole history is outside the catalogue count as misses.
    """
    users, hists, ts, targets = eval_inputs(split, part)
    idx = model.index
    keep = [
        r for r, (h, t) in enumerate(zip(hists, targets)) if t in idx and any(i in idx for i in h)
    ]
    ranks = np.full(len(users), len(model.item_ids), dtype=np.int64)
    if keep:
        seqs, gaps = model._histories_to_idx([hists[r] for r in keep], [ts[r] for r in keep])
        u = model.users_from_idx(seqs, gaps)
        scores = u @ model._catalogue_vectors().T
        tgt = torch.tensor([idx[targets[r]] for r in keep], device=scores.device)
        seen = [sorted(set(s)) for s in seqs] if filter_seen else None
        if seen is not None:  # items beyond max_len are still seen: filter the full history
            seen = [sorted({idx[i] for i in hists[r] if i in idx}) for r in keep]
        ranks[keep] = target_ranks(scores, tgt, seen)
    metrics = summarize(ranks, ks, bootstrap=bootstrap)
    metrics["filter_seen"] = filter_seen
    return metrics, {"users": users, "targets": targets, "ranks": ranks}
