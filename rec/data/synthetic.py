"""Synthetic click logs with planted structure, for tests and benchmarks.

Items fall into clusters; each cluster has a word in its item text. A user belongs to one cluster
and walks through it in order (item i is usually followed by item i+1 of the same cluster), with
some noise clicks on popular items. A model that learns sequences and text beats popularity.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from rec.data.dataset import Split, leave_one_out

WORDS = [
    "red",
    "green",
    "blue",
    "gold",
    "jazz",
    "rock",
    "space",
    "ocean",
    "forest",
    "desert",
    "snow",
    "fire",
    "metal",
    "paper",
    "glass",
    "stone",
]


def synthetic_log(
    n_users: int = 200,
    n_items: int = 120,
    n_clusters: int = 6,
    events_per_user: int = 20,
    noise: float = 0.1,
    seed: int = 0,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (interactions, items) frames in the canonical schema with planted clusters."""
    rng = np.random.default_rng(seed)
    cluster_of_item = np.arange(n_items) % n_clusters
    members = [np.flatnonzero(cluster_of_item == c) for c in range(n_clusters)]
    pop = 1.0 / (1.0 + np.arange(n_items))
    pop /= pop.sum()
    users, items, times = [], [], []
    for u in range(n_users):
        c = u % n_clusters
        m = members[c]
        pos = int(rng.integers(len(m)))
        t = 1_000_000 + int(rng.integers(10_000))
        for _ in range(events_per_user):
            if rng.random() < noise:
                it = int(rng.choice(n_items, p=pop))
            else:
                pos = (pos + 1) % len(m)
                it = int(m[pos])
            users.append(f"u{u}")
            items.append(f"i{it}")
            times.append(t)
            t += int(rng.integers(1, 100))
    n = len(users)
    inter = pl.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "timestamp": times,
            "event": ["click"] * n,
            "value": [1.0] * n,
            "order": list(range(n)),
        },
        schema_overrides={"timestamp": pl.Int64, "order": pl.Int64},
    )
    titles = [f"{WORDS[cluster_of_item[i] % len(WORDS)]} thing {i}" for i in range(n_items)]
    cats = [[f"cat-{WORDS[cluster_of_item[i] % len(WORDS)]}"] for i in range(n_items)]
    items_df = pl.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": titles,
            "text": [f"{t}. Category: {c[0]}." for t, c in zip(titles, cats)],
            "categories": cats,
            "price": [float(5 + (i % 7) * 3) for i in range(n_items)],
        }
    )
    return inter, items_df


def synthetic_dataset(
    n_users: int = 200, n_items: int = 120, seed: int = 0, **kw: object
) -> tuple[pl.DataFrame, pl.DataFrame, Split]:
    """Synthetic (interactions, items, leave-one-out split)."""
    inter, items = synthetic_log(n_users=n_users, n_items=n_items, seed=seed, **kw)  # type: ignore[arg-type]
    return inter, items, leave_one_out(inter)
