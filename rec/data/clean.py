"""Cleaning of a canonical event log, with a report of what each step removed.

Steps, in order: rows with a missing user or item id (null or empty) or a missing timestamp
(only when the source has timestamps at all), exact duplicate rows, events below ``min_value``,
then the iterated k-core on users AND items until nothing changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from rec.errors import DataError


def clean_interactions(
    interactions: pl.DataFrame,
    *,
    dedupe: bool = True,
    min_value: float | None = None,
    kcore: int = 0,
    source: object | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Clean an event log; return the kept rows (in their input order) and a report of counts.

    Exact duplicates are rows equal in user, item, timestamp, event and value (the first one is
    kept); in a source without timestamps the ``order`` also counts, so repeated events of an
    order-only sequence are never merged. ``source`` names the input in error messages.
    Raises DataError when nothing is left.
    """
    report: dict[str, Any] = {"input_events": interactions.height}
    has_time = (
        interactions.height > 0 and interactions["timestamp"].null_count() < interactions.height
    )

    missing_id = (
        pl.col("user_id").is_null()
        | pl.col("item_id").is_null()
        | (pl.col("user_id").str.strip_chars() == "")
        | (pl.col("item_id").str.strip_chars() == "")
    )
    missing = missing_id | pl.col("timestamp").is_null() if has_time else missing_id
    counts = interactions.select(missing_id.sum().alias("id"), missing.sum().alias("any"))
    report["missing_ids"] = int(counts["id"][0])
    report["missing_timestamps"] = int(counts["any"][0]) - report["missing_ids"]
    df = interactions.filter(~missing) if int(counts["any"][0]) else interactions
    _nonempty(df, "after dropping rows with missing ids/timestamps", source)
    # integer codes of the ids: hashing strings once makes dedupe and k-core cheap
    df = df.with_columns(_codes("user_id").alias("_u"), _codes("item_id").alias("_i"))
    report["input_users"] = df["_u"].n_unique()
    report["input_items"] = df["_i"].n_unique()

    if dedupe:
        key = ["_u", "_i", "timestamp", "event", "value"]
        if not has_time:
            key.append("order")
        first = df.select(pl.struct(key).is_first_distinct())[:, 0]
        report["duplicates"] = first.len() - int(first.sum())
        if report["duplicates"]:
            df = df.filter(first)
    else:
        report["duplicates"] = None

    if min_value is not None:
        if df["value"].null_count() == df.height:
            raise DataError(
                f"data.min_value={min_value} is set but the source has no values (ratings)", source
            )
        before = df.height
        df = df.filter(pl.col("value") >= min_value)
        report["below_min_value"] = before - df.height
        _nonempty(df, f"after keeping value >= {min_value}", source)
    else:
        report["below_min_value"] = None

    if kcore and kcore > 1:
        before = df.height
        keep, iters = _kcore_mask(df["_u"].to_numpy(), df["_i"].to_numpy(), kcore)
        if not keep.all():
            df = df.filter(pl.Series(keep))
        report["kcore"] = {"k": kcore, "iterations": iters, "removed_events": before - df.height}
        _nonempty(df, f"after the {kcore}-core filter", source)
    else:
        report["kcore"] = None

    report["output_events"] = df.height
    report["users"] = df["_u"].n_unique()
    report["items_with_events"] = df["_i"].n_unique()
    return df.drop("_u", "_i"), report


def _codes(col: str) -> pl.Expr:
    """Integer code per distinct value (not ordered; only equality matters)."""
    return pl.col(col).cast(pl.Categorical).to_physical().cast(pl.Int64)


def kcore_filter(df: pl.DataFrame, k: int) -> tuple[pl.DataFrame, int]:
    """Keep events whose user and item both have >= k events, repeated until stable.

    Returns the filtered frame (input order kept) and the number of passes made.
    """
    if df.height == 0:
        return df, 0
    codes = df.select(_codes("user_id").alias("u"), _codes("item_id").alias("i"))
    keep, iters = _kcore_mask(codes["u"].to_numpy(), codes["i"].to_numpy(), k)
    return df.filter(pl.Series(keep)), iters


def _kcore_mask(u: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    keep = np.ones(len(u), dtype=bool)
    if len(u) == 0:
        return keep, 0
    nu, ni = int(u.max()) + 1, int(i.max()) + 1
    iters = 0
    while True:
        iters += 1
        cu = np.bincount(u[keep], minlength=nu)
        ci = np.bincount(i[keep], minlength=ni)
        new = keep & (cu[u] >= k) & (ci[i] >= k)
        if new.sum() == keep.sum():
            return keep, iters
        keep = new


def _nonempty(df: pl.DataFrame, when: str, source: object | None) -> None:
    if df.height == 0:
        raise DataError(f"no events left {when}", source)
