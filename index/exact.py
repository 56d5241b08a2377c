"""Exact top-k in numpy: the oracle that FAISS indexes are tested and evaluated against.

Scores are similarities, higher is better: inner product for ``ip``, cosine for ``cosine``,
negative squared Euclidean distance for ``l2``. Ties are broken by the lower row index.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

METRICS = ("ip", "cosine", "l2")


def normalize(x: Any) -> Any:
    """Rows of ``x`` scaled to unit L2 norm (zero rows stay zero), as float32."""
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


def similarity(vectors: Any, queries: Any, metric: str = "ip") -> Any:
    """Score matrix [u, n] of every query against every vector (float32, higher is better)."""
    import numpy as np

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
    v = np.asarray(vectors, dtype=np.float32)
    q = np.asarray(queries, dtype=np.float32)
    if metric == "cosine":
        v, q = normalize(v), normalize(q)
    s = q @ v.T
    if metric == "l2":
        s = 2.0 * s - (q * q).sum(1, keepdims=True) - (v * v).sum(1)[None, :]
    return s.astype(np.float32, copy=False)


def exact_topk(
    vectors: Any,
    queries: Any,
    k: int,
    metric: str = "ip",
    exclude: Sequence[Any] | None = None,
    chunk: int = 1024,
) -> tuple[Any, Any]:
    """Exact top-``k`` rows of ``vectors`` for each query.

    Args:
        vectors: float array [n, d].
        queries: float array [u, d].
        k: results per query; fewer (padded with index -1, score -inf) when fewer rows remain.
        metric: ``ip``, ``cosine`` or ``l2``.
        exclude: per query, an iterable of row indices never to return.
        chunk: queries scored per matrix product.

    Returns:
        (indices int64 [u, k], scores float32 [u, k]), best first.
    """
    import numpy as np

    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    v = np.asarray(vectors, dtype=np.float32)
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    n, u = v.shape[0], q.shape[0]
    out_i = np.full((u, k), -1, dtype=np.int64)
    out_s = np.full((u, k), -np.inf, dtype=np.float32)
    kk = min(k, n)
    if kk == 0:
        return out_i, out_s
    for start in range(0, u, chunk):
        s = similarity(v, q[start : start + chunk], metric)
        if exclude is not None:
            for r in range(s.shape[0]):
                ex = list(exclude[start + r])
                if ex:
                    s[r, np.asarray(ex, dtype=np.int64)] = -np.inf
        part = (
            np.argpartition(-s, kk - 1, axis=1)[:, :kk]
            if kk < n
            else np.tile(np.arange(n), (s.shape[0], 1))
        )
        ps = np.take_along_axis(s, part, axis=1)
        order = np.lexsort((part, -ps), axis=1)  # by score desc, then index asc
        idx = np.take_along_axis(part, order, axis=1)
        sc = np.take_along_axis(ps, order, axis=1)
        idx = np.where(np.isneginf(sc), -1, idx)
        out_i[start : start + chunk, :kk] = idx
        out_s[start : start + chunk, :kk] = sc
    return out_i, out_s


def recall_at_k(found: Any, truth: Any, k: int | None = None) -> float:
    """Mean share of each truth row's top-k (ignoring -1 / None padding) found in ``found``'s top-k."""
    total, hits = 0, 0
    for f, t in zip(found, truth):
        t_set = {x for x in list(t)[:k] if x is not None and not _is_pad(x)}
        if not t_set:
            continue
        f_set = {x for x in list(f)[:k] if x is not None and not _is_pad(x)}
        hits += len(t_set & f_set)
        total += len(t_set)
    return hits / total if total else 1.0


def _is_pad(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and int(x) == -1
