"""Floors every report shows beside the model: most-popular, EASE, item-kNN, first-order Markov.

All share one interface over dense int item ids ``0 .. n_items-1``::

    model = Baseline(...).fit(train_sequences, n_items)   # list of int arrays, time order
    scores = model.score(histories)                        # float32 [len(histories), n_items]

so the same evaluator (``eval.metrics.ranks_from_scores``) ranks them. Seen-item filtering is the
evaluator's job, never the baseline's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import scipy.linalg
import scipy.sparse as sp

log = logging.getLogger(__name__)

EASE_LAMBDAS = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)


class Scorer(Protocol):
    """What the evaluator needs from a model over dense item ids."""

    name: str
    n_items: int

    def fit(self, sequences: Sequence[np.ndarray], n_items: int) -> Scorer: ...

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray: ...


def item_counts(sequences: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Number of training events per item (repeats counted)."""
    if not len(sequences):
        return np.zeros(n_items, dtype=np.int64)
    return np.bincount(
        np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]), minlength=n_items
    )


def interaction_matrix(sequences: Sequence[np.ndarray], n_items: int) -> sp.csr_matrix:
    """Binary user x item CSR (float64) of the sequences (repeats collapse to 1)."""
    lens = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    rows = np.repeat(np.arange(len(sequences)), lens)
    cols = (
        np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
        if lens.sum()
        else np.zeros(0, dtype=np.int64)
    )
    x = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(sequences), n_items))
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def _popularity_tiebreak(counts: np.ndarray) -> np.ndarray:
    """Popularity scaled into [0, 0.5): added to integer-valued scores it only breaks ties."""
    c = counts.astype(np.float64)
    return (0.5 * c / (c.max() + 1.0)) if len(c) else c


class MostPopular:
    """Score = number of training events of the item; the same list for every user."""

    name = "popularity"

    def __init__(self) -> None:
        self.n_items = 0
        self.counts = np.zeros(0)

    def fit(self, sequences: Sequence[np.ndarray], n_items: int) -> MostPopular:
        self.n_items = n_items
        self.counts = item_counts(sequences, n_items).astype(np.float32)
        return self

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(histories), self.n_items)).copy()


class EASE:
    """EASE (Steck, WWW'19): B = I - P / diag(P) with P = (X^T X + lambda I)^-1, diag(B) = 0.

    Score = x_history @ B on the binary history vector. One dense n_items^2 inverse (Cholesky).
    """

    name = "ease"

    def __init__(self, lam: float = 500.0) -> None:
        self.lam = float(lam)
        self.n_items = 0
        self.B = np.zeros((0, 0), dtype=np.float32)
        self._gram: np.ndarray | None = None

    def fit(self, sequences: Sequence[np.ndarray], n_items: int) -> EASE:
        self.n_items = n_items
        x = interaction_matrix(sequences, n_items)
        self._gram = (x.T @ x).toarray()
        self._solve()
        return self

    def _solve(self) -> None:
        assert self._gram is not None
        g = self._gram.copy()
        g[np.diag_indices_from(g)] += self.lam
        c, info = scipy.linalg.lapack.dpotrf(g, lower=False, overwrite_a=True)
        if info != 0:  # pragma: no cover - G + lambda I is positive definite for lambda > 0
            raise ValueError(f"EASE: Cholesky failed (info={info}); raise lambda")
        p, info = scipy.linalg.lapack.dpotri(c, lower=False, overwrite_c=True)
        n = p.shape[0]
        for i in range(0, n, 1024):  # mirror the upper triangle, in place, block by block
            j = min(i + 1024, n)
            blk = p[i:j, i:j]
            blk[:] = np.triu(blk) + np.triu(blk, 1).T
            p[j:, i:j] = p[i:j, j:].T
        p /= -np.diag(p).copy()[None, :]  # B = I - P / diag(P), with diag(B) = 0
        p[np.diag_indices_from(p)] = 0.0
        self.B = p.astype(np.float32)

    def with_lambda(self, lam: float) -> EASE:
        """Refit the same Gram matrix with another lambda (no pass over the data)."""
        self.lam = float(lam)
        self._solve()
        return self

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        x = interaction_matrix(histories, self.n_items).astype(np.float32)
        return np.asarray(x @ self.B, dtype=np.float32)


class ItemKNN:
    """Item-kNN with cosine similarity on binary interactions, top ``k`` neighbours per item.

    Score of item j = sum over history items i of sim(i, j) (neighbour lists pruned per row i).
    """

    name = "itemknn"

    def __init__(self, k: int = 100, shrink: float = 0.0) -> None:
        self.k = k
        self.shrink = shrink
        self.n_items = 0
        self.S = sp.csr_matrix((0, 0))

    def fit(self, sequences: Sequence[np.ndarray], n_items: int) -> ItemKNN:
        self.n_items = n_items
        x = interaction_matrix(sequences, n_items)
        co = (x.T @ x).toarray()
        norms = np.sqrt(np.diag(co))
        sim = co / (np.outer(norms, norms) + self.shrink + 1e-12)
        np.fill_diagonal(sim, 0.0)
        k = min(self.k, n_items - 1) if n_items > 1 else 0
        if 0 < k < n_items:
            drop = np.argpartition(-sim, k, axis=1)[:, k:]
            np.put_along_axis(sim, drop, 0.0, axis=1)
        self.S = sp.csr_matrix(sim.astype(np.float32))
        return self

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        x = interaction_matrix(histories, self.n_items).astype(np.float32)
        return np.asarray((x @ self.S).toarray(), dtype=np.float32)


class Markov:
    """First-order Markov: score(j) = count(last item -> j) in training sequences, ties and unseen
    last items broken by popularity (added below 1, so it never overrides a transition count)."""

    name = "markov"

    def __init__(self) -> None:
        self.n_items = 0
        self.T = sp.csr_matrix((0, 0))
        self.tiebreak = np.zeros(0, dtype=np.float32)

    def fit(self, sequences: Sequence[np.ndarray], n_items: int) -> Markov:
        self.n_items = n_items
        prev = [np.asarray(s[:-1], dtype=np.int64) for s in sequences if len(s) > 1]
        nxt = [np.asarray(s[1:], dtype=np.int64) for s in sequences if len(s) > 1]
        a = np.concatenate(prev) if prev else np.zeros(0, dtype=np.int64)
        b = np.concatenate(nxt) if nxt else np.zeros(0, dtype=np.int64)
        self.T = sp.csr_matrix(
            (np.ones(len(a), dtype=np.float64), (a, b)), shape=(n_items, n_items)
        )
        self.T.sum_duplicates()
        self.tiebreak = _popularity_tiebreak(item_counts(sequences, n_items))
        return self

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        out = np.broadcast_to(self.tiebreak, (len(histories), self.n_items)).astype(np.float64)
        last = np.array([h[-1] if len(h) else -1 for h in histories], dtype=np.int64)
        has = np.flatnonzero(last >= 0)
        if len(has):
            out[has] += self.T[last[has]].toarray()
        return out.astype(np.float32)


def make_baselines(knn: str = "ease", ease_lambda: float = 500.0) -> list[Scorer]:
    """The three floors, unfitted: popularity, EASE or item-kNN, Markov."""
    if knn == "ease":
        mid: Scorer = EASE(ease_lambda)
    elif knn == "itemknn":
        mid = ItemKNN()
    else:
        raise ValueError(f"baseline_knn must be ease or itemknn, not {knn!r}")
    return [MostPopular(), mid, Markov()]
