"""The canonical dataset: the one shape every source becomes.

DATA_DIR/interactions.parquet  user_id str, item_id str, timestamp i64 (null where the source has
                               only an order), event str, value f64 (null if none), order i64
                               (0-based row order in the source: the tie-breaker)
DATA_DIR/items.parquet         item_id str, title str, text str (the built item text), genres
                               list[str], categories list[str], tags list[str], brand str, price f64,
                               description str (null where unknown); n_events i64 (events
                               after cleaning; 0 = catalogue item without events, kept)
DATA_DIR/users.parquet         optional: user_id str + attribute columns
DATA_DIR/dataset.json          schema version, source (format, input, sha256 of every input file),
                               counts (users, items catalogue / with events, events, raw counts),
                               cleaning report, text fields + coverage, temporal cut points, config
DATA_DIR/splits/loo/{train,valid,test}.parquet     leave-one-out (interaction columns + seq)
DATA_DIR/splits/temporal/{train,valid,test}.parquet global temporal split (optional)
"""

from __future__ import annotations

import polars as pl

SCHEMA_VERSION = 1

INTERACTIONS_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.Utf8(),
    "item_id": pl.Utf8(),
    "timestamp": pl.Int64(),
    "event": pl.Utf8(),
    "value": pl.Float64(),
    "order": pl.Int64(),
}

ITEMS_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.Utf8(),
    "title": pl.Utf8(),
    "text": pl.Utf8(),
    "genres": pl.List(pl.Utf8()),
    "categories": pl.List(pl.Utf8()),
    "tags": pl.List(pl.Utf8()),
    "brand": pl.Utf8(),
    "price": pl.Float64(),
    "description": pl.Utf8(),
}

SPLIT_COLUMNS = [*INTERACTIONS_SCHEMA, "seq"]
SPLIT_PARTS = ("train", "valid", "test")


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Add missing schema columns as nulls, cast to the schema types, schema columns first."""
    exprs = []
    for name, dtype in schema.items():
        if name in df.columns:
            exprs.append(pl.col(name).cast(dtype))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    extra = [c for c in df.columns if c not in schema]
    return df.select([*exprs, *extra])
