"""Summary statistics of a prepared dataset directory (``rec data stats``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rec.data.dataset import load_dataset
from rec.data.text import text_coverage

PERCENTILES = (5, 25, 50, 75, 95)


def dataset_stats(data_dir: str | Path) -> dict[str, Any]:
    """Users, items (catalogue and with events), events, density, history-length percentiles,
    item-text coverage and timestamp range of a prepared dataset."""
    ds = load_dataset(data_dir)
    inter, items = ds.interactions, ds.items
    users = inter["user_id"].n_unique()
    with_events_ids = inter["item_id"].unique()
    n_with = with_events_ids.len()
    lengths = inter.group_by("user_id").len()["len"].to_numpy()
    out: dict[str, Any] = {
        "dataset": str(Path(data_dir)),
        "users": users,
        "items_catalogue": items.height,
        "items_with_events": n_with,
        "events": inter.height,
        "density": inter.height / (users * n_with) if users and n_with else 0.0,
    }
    if lengths.size:
        pct = np.percentile(lengths, PERCENTILES)
        out.update({f"history_p{p}": round(float(v), 2) for p, v in zip(PERCENTILES, pct)})
        out["history_max"] = int(lengths.max())
    with_events = items.filter(pl.col("item_id").is_in(with_events_ids.implode()))
    out["text_coverage_catalogue"] = text_coverage(items)
    out["text_coverage_with_events"] = text_coverage(with_events)
    ts = inter["timestamp"].drop_nulls()
    if ts.len():
        lo, hi = int(ts.min()), int(ts.max())
        out.update(
            {"timestamp_min": lo, "timestamp_max": hi, "time_range": f"{_iso(lo)} .. {_iso(hi)}"}
        )
    else:
        out.update(
            {
                "timestamp_min": None,
                "timestamp_max": None,
                "time_range": "no timestamps (order only)",
            }
        )
    out["splits"] = ds.meta.get("splits", [])
    return out


def _iso(t: int) -> str:
    try:
        return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(t)
