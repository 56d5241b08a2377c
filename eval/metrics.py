"""Ranking and calibration metrics, vectorised over users (numpy only).

Leave-one-out has one target per user, so every ranking metric is a function of the target's
0-based rank ``r`` in the user's list (``MISSING`` = ``np.inf`` when the target is not in the list):

- ``recall@k`` (= HR@k) = 1[r < k]
- ``ndcg@k`` = 1[r < k] / log2(r + 2)   (the ideal DCG of one relevant item is 1)
- ``mrr`` = 1 / (r + 1) over the WHOLE list the stage produces: the full catalogue for a
  full-ranking stage, the candidate list for a two-stage (reranked) stage; a target outside the
  list counts 0. It is not cut at a k.
- ``map@k`` = 1[r < k] / (r + 1) (average precision with one relevant item).

Ties in a score matrix are broken pessimistically by default: the target's rank counts every
other (unfiltered) item whose score is strictly greater OR equal. A constant scorer therefore
ranks every target last, never first. ``ties="optimistic"`` counts only strictly greater scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp

MISSING = np.inf
KS = (5, 10, 20, 50, 100)

Ties = Literal["pessimistic", "optimistic"]
Seen = sp.csr_matrix | Sequence[np.ndarray] | None


# ---------------------------------------------------------------------------------------------
# per-user metric values from ranks


def _ranks(ranks: np.ndarray | Sequence[float]) -> np.ndarray:
    r = np.asarray(ranks, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError("ranks must be a 1-d array (one rank per user)")
    if np.any(r < 0) or np.any(np.isnan(r)):
        raise ValueError("ranks are 0-based; use MISSING (np.inf) for a target not in the list")
    return r


def hit_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user HR@k = Recall@k under leave-one-out: 1.0 when the target is in the top k."""
    return (_ranks(ranks) < k).astype(np.float64)


def ndcg_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k with one relevant item: 1 / log2(rank + 2) inside the top k, else 0."""
    r = _ranks(ranks)
    out = np.zeros_like(r)
    hit = r < k
    out[hit] = 1.0 / np.log2(r[hit] + 2.0)
    return out


def reciprocal_rank(ranks: np.ndarray, k: int | None = None) -> np.ndarray:
    """Per-user reciprocal rank 1 / (rank + 1); 0 when missing (or beyond ``k`` when given)."""
    r = _ranks(ranks)
    out = np.zeros_like(r)
    hit = np.isfinite(r) if k is None else r < k
    out[hit] = 1.0 / (r[hit] + 1.0)
    return out


def ap_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user average precision @k with one relevant item (= reciprocal rank cut at k)."""
    return reciprocal_rank(ranks, k)


def metric_keys(ks: Sequence[int] = KS) -> list[str]:
    """The metric keys of :func:`ranking_metrics`, in order."""
    return [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks] + ["mrr"]


def ranking_metrics(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Mean ``recall@K``, ``ndcg@K`` (K in ``ks``), ``mrr`` and ``n_users`` over users."""
    r = _ranks(ranks)
    n = len(r)
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(hit_at_k(r, k).mean()) if n else 0.0
    for k in ks:
        out[f"ndcg@{k}"] = float(ndcg_at_k(r, k).mean()) if n else 0.0
    out["mrr"] = float(reciprocal_rank(r).mean()) if n else 0.0
    out["n_users"] = n
    return out


# ---------------------------------------------------------------------------------------------
# ranks from a score matrix (full ranking)


def seen_to_csr(seen: Seen, n_users: int, n_items: int) -> sp.csr_matrix | None:
    """A seen mask as a boolean CSR [n_users, n_items] (from CSR or a list of item-index arrays)."""
    if seen is None:
        return None
    if sp.issparse(seen):
        m = sp.csr_matrix(seen, dtype=bool)
    else:
        if len(seen) != n_users:
            raise ValueError(f"seen has {len(seen)} rows for {n_users} users")
        lens = np.fromiter((len(s) for s in seen), dtype=np.int64, count=len(seen))
        indptr = np.concatenate([[0], np.cumsum(lens)])
        indices = (
            np.concatenate([np.asarray(s, dtype=np.int64) for s in seen])
            if lens.sum()
            else np.zeros(0, dtype=np.int64)
        )
        m = sp.csr_matrix(
            (np.ones(len(indices), dtype=bool), indices, indptr), shape=(n_users, n_items)
        )
        m.sum_duplicates()
    if m.shape != (n_users, n_items):
        raise ValueError(f"seen mask has shape {m.shape}, expected {(n_users, n_items)}")
    return m


def _dense_mask(seen: sp.csr_matrix | None, rows: slice, n_items: int) -> np.ndarray | None:
    if seen is None:
        return None
    block = seen[rows]
    mask = np.zeros((block.shape[0], n_items), dtype=bool)
    r = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
    mask[r, block.indices] = True
    return mask


def ranks_from_scores(
    scores: np.ndarray | Callable[[slice], np.ndarray],
    targets: np.ndarray,
    seen: Seen = None,
    *,
    n_items: int | None = None,
    filter_seen: bool = True,
    keep_target: bool = False,
    ties: Ties = "pessimistic",
    chunk_size: int = 1024,
    topk: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """0-based rank of each user's target among all items, with seen items optionally removed.

    Args:
        scores: float matrix [u, n_items], or a function ``rows -> scores[rows]`` that computes a
            block of users at a time (memory stays at ``chunk_size x n_items``).
        targets: target item index per user; a negative index (item unknown to the catalogue)
            gives ``MISSING``.
        seen: items in each user's history (boolean CSR, or a list of index arrays).
        n_items: catalogue size (needed when ``scores`` is a function).
        filter_seen: remove seen items from the ranking. A target that is itself in the history
            (a repeat) is removed too and counts as ``MISSING``: a system that filters seen
            items can never show it (PROTOCOL.md; as HSTU / gSASRec / LlamaRec masking does).
        keep_target: with ``filter_seen``, never remove the target (rank a repeat like any
            other item) instead.
        ties: ``pessimistic`` (items scoring equal to the target rank above it) or
            ``optimistic`` (only strictly greater items rank above it).
        chunk_size: users per block.
        topk: also return the top-``topk`` item indices and scores per user (seen removed when
            filtering), ordered by score, ties by item index; 0 = do not.
        progress: called with the number of users done after each block.

    Returns:
        (ranks float64 [u], top_items int64 [u, topk] or None, top_scores float32 [u, topk] or None).
        A target whose score is NaN gets ``MISSING``.
    """
    targets = np.asarray(targets, dtype=np.int64)
    n_users = len(targets)
    if callable(scores):
        if n_items is None:
            raise ValueError("n_items is required when scores is a function")
        get = scores
    else:
        mat = np.asarray(scores)
        if mat.ndim != 2 or mat.shape[0] != n_users:
            raise ValueError(f"scores must be [n_users={n_users}, n_items], got {mat.shape}")
        n_items = mat.shape[1]

        def get(rows: slice) -> np.ndarray:
            return mat[rows]

    assert n_items is not None
    if np.any(targets >= n_items):
        raise ValueError("a target index is outside the catalogue")
    seen_csr = seen_to_csr(seen, n_users, n_items) if filter_seen else None
    ranks = np.full(n_users, MISSING)
    k = min(topk, n_items)
    top_items = np.zeros((n_users, k), dtype=np.int64) if topk else None
    top_scores = np.zeros((n_users, k), dtype=np.float32) if topk else None
    for start in range(0, n_users, chunk_size):
        rows = slice(start, min(start + chunk_size, n_users))
        s = np.asarray(get(rows), dtype=np.float32)
        b = s.shape[0]
        if s.shape != (rows.stop - rows.start, n_items):
            raise ValueError(f"scorer returned shape {s.shape}, expected {(b, n_items)}")
        t = targets[rows]
        valid = t >= 0
        ar = np.arange(b)
        ts = s[ar, np.where(valid, t, 0)]
        keep = ~_dense_mask(seen_csr, rows, n_items) if seen_csr is not None else None
        removed = np.zeros(b, dtype=bool)
        if keep is not None:
            if keep_target:
                keep[ar[valid], t[valid]] = True
            else:
                removed[valid] = ~keep[ar[valid], t[valid]]
        above = s > ts[:, None]
        if ties == "pessimistic":
            above |= s == ts[:, None]
            above[ar[valid], t[valid]] = False
        elif ties != "optimistic":
            raise ValueError(f"ties must be pessimistic or optimistic, not {ties!r}")
        if keep is not None:
            above &= keep
        r = above.sum(axis=1).astype(np.float64)
        r[~valid | np.isnan(ts) | removed] = MISSING
        ranks[rows] = r
        if topk:
            if keep is not None:
                s = np.where(keep, s, -np.inf)
            ti, tsc = _topk(s, k)
            top_items[rows] = ti
            top_scores[rows] = tsc
        if progress is not None:
            progress(b)
    return ranks, top_items, top_scores


def _topk(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` column indices and scores per row, by score then item index (deterministic)."""
    b, n = s.shape
    if k < n:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        thr = np.take_along_axis(s, part, axis=1).min(axis=1)
        tied = np.flatnonzero((s >= thr[:, None]).sum(axis=1) > k)  # a tie straddles the cut
        if len(tied):
            part[tied] = np.argsort(-s[tied], axis=1, kind="stable")[:, :k]
    else:
        part = np.tile(np.arange(n), (b, 1))
    ps = np.take_along_axis(s, part, axis=1)
    order = np.lexsort((part, -ps), axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(ps, order, axis=1)


def sampled_ranks(
    scores: np.ndarray | Callable[[slice], np.ndarray],
    targets: np.ndarray,
    seen: Seen,
    n_negatives: int,
    *,
    n_items: int | None = None,
    seed: int = 0,
    chunk_size: int = 1024,
    keep_target: bool = False,
) -> np.ndarray:
    """SAMPLED-metric ranks: the target against ``n_negatives`` items drawn uniformly without
    replacement from the items the user has not seen (target excluded). Pessimistic ties; a
    target in the history is ``MISSING`` unless ``keep_target`` (as in ``ranks_from_scores``).

    Not comparable with full-ranking figures; only on explicit request (PROTOCOL.md).
    """
    targets = np.asarray(targets, dtype=np.int64)
    n_users = len(targets)
    mat = None if callable(scores) else np.asarray(scores)
    if mat is not None:
        n_items = mat.shape[1]
    assert n_items is not None
    seen_csr = seen_to_csr(seen, n_users, n_items)
    rng = np.random.default_rng(seed)
    ranks = np.full(n_users, MISSING)
    for start in range(0, n_users, chunk_size):
        rows = slice(start, min(start + chunk_size, n_users))
        s = np.asarray(mat[rows] if mat is not None else scores(rows), dtype=np.float32)
        b = s.shape[0]
        t = targets[rows]
        valid = t >= 0
        ar = np.arange(b)
        keys = rng.random((b, n_items))
        removed = np.zeros(b, dtype=bool)
        if seen_csr is not None:
            mask = _dense_mask(seen_csr, rows, n_items)
            if not keep_target:
                removed[valid] = mask[ar[valid], t[valid]]
            keys[mask] = np.inf
        keys[ar[valid], t[valid]] = np.inf
        n_avail = np.isfinite(keys).sum(axis=1)
        m = min(n_negatives, n_items - 1)
        neg = np.argpartition(keys, m - 1, axis=1)[:, :m]
        usable = np.arange(m)[None, :] < n_avail[:, None]
        ts = s[ar, np.where(valid, t, 0)]
        r = ((np.take_along_axis(s, neg, axis=1) >= ts[:, None]) & usable).sum(axis=1)
        r = r.astype(np.float64)
        r[~valid | np.isnan(ts) | removed] = MISSING
        ranks[rows] = r
    return ranks


# ---------------------------------------------------------------------------------------------
# click probabilities


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney U with average ranks for ties); NaN if one class is absent."""
    from scipy.stats import rankdata

    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy, probabilities clipped to [eps, 1 - eps]."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def calibration_bins(
    labels: np.ndarray,
    probs: np.ndarray,
    n_bins: int = 10,
    strategy: Literal["width", "mass"] = "width",
) -> dict[str, np.ndarray]:
    """Reliability table: per bin its count, mean predicted probability and observed click rate.

    ``width``: equal-width bins on [0, 1] (the last bin includes 1.0); ``mass``: equal-mass bins
    (quantiles of the predictions; ties can make some bins empty). Empty bins have count 0 and NaN
    means.
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if strategy == "width":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "mass":
        edges = (
            np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))
            if len(p)
            else np.linspace(0.0, 1.0, n_bins + 1)
        )
    else:
        raise ValueError(f"strategy must be width or mass, not {strategy!r}")
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=p, minlength=n_bins) / count
        rate = np.bincount(idx, weights=y, minlength=n_bins) / count
    return {"edges": edges, "count": count, "mean_prob": mean_p, "click_rate": rate}


def ece(
    labels: np.ndarray,
    probs: np.ndarray,
    n_bins: int = 10,
    strategy: Literal["width", "mass"] = "width",
) -> float:
    """Expected calibration error: sum over bins of (bin share) x |mean prob - click rate|."""
    b = calibration_bins(labels, probs, n_bins, strategy)
    n = b["count"].sum()
    if n == 0:
        return float("nan")
    nz = b["count"] > 0
    return float(np.sum(b["count"][nz] / n * np.abs(b["mean_prob"][nz] - b["click_rate"][nz])))


def click_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    n_bins: int = 10,
    strategy: Literal["width", "mass"] = "width",
) -> dict[str, float]:
    """``auc``, ``log_loss``, ``ece`` and ``n`` of click probabilities."""
    return {
        "auc": auc(labels, probs),
        "log_loss": log_loss(labels, probs),
        "ece": ece(labels, probs, n_bins, strategy),
        "n": int(len(labels)),
    }


# ---------------------------------------------------------------------------------------------
# beyond accuracy and slices


def catalogue_coverage(top_items: np.ndarray, n_items: int, k: int = 10) -> float:
    """Share of the catalogue appearing in at least one user's top ``k``."""
    top = np.asarray(top_items)[:, :k]
    if n_items == 0 or top.size == 0:
        return 0.0
    return float(len(np.unique(top[top >= 0])) / n_items)


def average_popularity(top_items: np.ndarray, item_counts: np.ndarray, k: int = 10) -> float:
    """Mean training-event count of the items recommended in the top ``k`` (over all slots)."""
    top = np.asarray(top_items)[:, :k]
    top = top[top >= 0]
    return float(np.asarray(item_counts, dtype=np.float64)[top].mean()) if top.size else 0.0


def slice_masks(
    targets: np.ndarray, history_lengths: np.ndarray, item_counts: np.ndarray
) -> dict[str, np.ndarray]:
    """Boolean user masks: ``cold_target`` (target item has no training events) / ``warm_target``,
    ``short_history`` (length <= median) / ``long_history`` (length > median)."""
    t = np.asarray(targets, dtype=np.int64)
    counts = np.asarray(item_counts)
    cold = np.ones(len(t), dtype=bool)
    known = t >= 0
    cold[known] = counts[t[known]] == 0
    lengths = np.asarray(history_lengths)
    med = float(np.median(lengths)) if len(lengths) else 0.0
    return {
        "cold_target": cold,
        "warm_target": ~cold,
        "short_history": lengths <= med,
        "long_history": lengths > med,
    }


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05, chunk: int = 200
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of per-user ``values`` (users resampled, seeded)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0 or n_boot <= 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for s in range(0, n_boot, chunk):
        b = min(chunk, n_boot - s)
        means[s : s + b] = v[rng.integers(0, len(v), size=(b, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_test(
    a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Paired comparison of per-user values ``a`` vs ``b`` (same users, same order).

    Returns the mean difference a - b, its bootstrap 95% CI, a two-sided paired-bootstrap p-value
    (share of resampled mean differences on the other side of 0, doubled) and the Wilcoxon
    signed-rank p-value (zero differences dropped; NaN when all differences are zero).
    """
    from scipy.stats import wilcoxon

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) == 0:
        nan = float("nan")
        return {
            "mean_diff": nan,
            "ci_low": nan,
            "ci_high": nan,
            "p_bootstrap": nan,
            "p_wilcoxon": nan,
            "n_users": 0,
        }
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for s in range(0, n_boot, 200):
        m = min(200, n_boot - s)
        means[s : s + m] = d[rng.integers(0, len(d), size=(m, len(d)))].mean(axis=1)
    mean = float(d.mean())
    if mean > 0:
        p_boot = 2 * float(np.mean(means <= 0))
    elif mean < 0:
        p_boot = 2 * float(np.mean(means >= 0))
    else:
        p_boot = 1.0
    p_w = float(wilcoxon(d[d != 0]).pvalue) if np.any(d != 0) else float("nan")
    lo, hi = np.quantile(means, [0.025, 0.975])
    return {
        "mean_diff": mean,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "p_bootstrap": min(1.0, p_boot),
        "p_wilcoxon": p_w,
        "n_users": int(len(d)),
    }
