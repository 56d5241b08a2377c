"""Per-user event sequences (items + timestamps) from a split, for training and evaluation."""

from __future__ import annotations

import polars as pl

from rec.data import Split


def user_events(df: pl.DataFrame) -> dict[str, tuple[list[str], list[int | None]]]:
    """user_id -> (item_ids, timestamps) in ``seq`` order."""
    if df.is_empty():
        return {}
    g = (
        df.sort(["user_id", "seq"])
        .group_by("user_id", maintain_order=True)
        .agg("item_id", "timestamp")
    )
    return {
        u: (i, t)
        for u, i, t in zip(g["user_id"].to_list(), g["item_id"].to_list(), g["timestamp"].to_list())
    }


def eval_inputs(
    split: Split, part: str
) -> tuple[list[str], list[list[str]], list[list[int | None]], list[str]]:
    """(users, histories, history timestamps, targets) to evaluate ``part`` ("valid" | "test").

    Same semantics as ``rec.data.histories_for``: valid -> history = train; test -> train + valid.
    """
    if part == "valid":
        hist_df, target_df = split.train, split.valid
    elif part == "test":
        hist_df, target_df = pl.concat([split.train, split.valid]), split.test
    else:
        raise ValueError(f"part must be valid or test, not {part!r}")
    ev = user_events(hist_df)
    users = target_df["user_id"].to_list()
    targets = target_df["item_id"].to_list()
    hists = [ev.get(u, ([], []))[0] for u in users]
    ts = [ev.get(u, ([], []))[1] for u in users]
    return users, hists, ts, targets
