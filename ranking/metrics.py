"""Metrics the reranker reports about itself: NDCG@k of a reranked list, AUC, log-loss, ECE.

Kept local to the stage (numpy only) so that training can early-stop without the eval stage.
"""

from __future__ import annotations

import numpy as np


def ndcg_at_k(order_labels: list[np.ndarray], k: int = 10) -> float:
    """Mean NDCG@k with one relevant item per user; each array is a list's labels in served order.

    A list without its target (retrieval missed it) scores 0.
    """
    if not order_labels:
        return 0.0
    total = 0.0
    for labels in order_labels:
        hit = np.flatnonzero(np.asarray(labels)[:k] > 0)
        if len(hit):
            total += 1.0 / np.log2(hit[0] + 2.0)
    return total / len(order_labels)


def hit_at_k(order_labels: list[np.ndarray], k: int = 10) -> float:
    """Share of lists whose target is in the first ``k`` places."""
    if not order_labels:
        return 0.0
    return float(np.mean([bool((np.asarray(lab)[:k] > 0).any()) for lab in order_labels]))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties get average ranks); NaN with one class only."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels) > 0
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary log-loss."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error over equal-width probability bins."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(p) == 0:
        return 0.0
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(p[m].mean() - y[m].mean())
    return float(total / len(p))


def ece_adaptive(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE over equal-count bins (informative when every probability is small)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(p) == 0:
        return 0.0
    order = np.argsort(p, kind="mergesort")
    total = 0.0
    for chunk in np.array_split(order, min(bins, len(p))):
        if len(chunk):
            total += len(chunk) * abs(p[chunk].mean() - y[chunk].mean())
    return float(total / len(p))


def reliability(
    probs: np.ndarray, labels: np.ndarray, bins: int = 15, adaptive: bool = False
) -> list[tuple[float, float, int]]:
    """(mean predicted, observed rate, count) per non-empty bin (equal-width, or equal-count
    with ``adaptive``)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if adaptive:
        order = np.argsort(p, kind="mergesort")
        groups = [c for c in np.array_split(order, min(bins, max(1, len(p)))) if len(c)]
    else:
        idx = np.minimum((p * bins).astype(int), bins - 1)
        groups = [np.flatnonzero(idx == b) for b in range(bins) if (idx == b).any()]
    return [(float(p[g].mean()), float(y[g].mean()), int(len(g))) for g in groups]
