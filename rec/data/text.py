"""Item text: one string per item from its catalogue fields, in a configurable order.

Example (``text_fields = ["title", "genres", "tags"]``)::

    Toy Story (1995). Genres: Animation, Children's, Comedy. Tags: pixar, fun.

Known fields: ``title``, ``genres``, ``categories``, ``tags`` (the first ``max_tags``), ``brand``,
``price`` (``Price: $12.99.``), ``description`` (first 300 characters). Any other column of the
items frame is rendered as ``Name: value.``. Fields that are null or empty are skipped. A source
that ships its own item text (RecBole ``.text``) keeps it. The result is NFKC-normalised with
whitespace collapsed; an item with nothing to say gets the empty string.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

LABELS = {
    "genres": "Genres",
    "categories": "Categories",
    "tags": "Tags",
    "brand": "Brand",
    "description": "Description",
}
DESCRIPTION_CHARS = 300


def _sentence(expr: pl.Expr) -> pl.Expr:
    """``x`` -> ``x.`` (no double full stop); null or blank -> null."""
    s = expr.str.strip_chars()
    return (
        pl.when(s.is_null() | (s == ""))
        .then(None)
        .when(s.str.ends_with(".") | s.str.ends_with("!") | s.str.ends_with("?"))
        .then(s)
        .otherwise(s + ".")
    )


def _field(name: str, dtype: pl.DataType, max_tags: int) -> pl.Expr:
    col = pl.col(name)
    label = LABELS.get(name, name.replace("_", " ").capitalize())
    if isinstance(dtype, pl.List):
        lst = col.list.eval(
            pl.element()
            .cast(pl.Utf8)
            .str.strip_chars()
            .filter(pl.element().cast(pl.Utf8).str.strip_chars() != "")
        )
        if name == "tags":
            lst = lst.list.head(max_tags)
        joined = lst.list.join(", ")
        return pl.when(lst.list.len() > 0).then(_sentence(pl.lit(f"{label}: ") + joined))
    if name == "price":
        cents = (col.cast(pl.Float64) * 100).round(0).cast(pl.Int64, strict=False)
        txt = pl.format("Price: ${}.{}.", cents // 100, (cents % 100).cast(pl.Utf8).str.zfill(2))
        return pl.when(cents.is_not_null() & (cents >= 0)).then(txt)
    s = col.cast(pl.Utf8)
    if name == "description":
        s = s.str.slice(0, DESCRIPTION_CHARS)
    if name == "title":
        return _sentence(s)
    return pl.when(s.str.strip_chars() != "").then(_sentence(pl.lit(f"{label}: ") + s))


def normalise(expr: pl.Expr) -> pl.Expr:
    """NFKC, whitespace runs -> one space, stripped; null -> empty string."""
    return expr.str.normalize("NFKC").str.replace_all(r"\s+", " ").str.strip_chars().fill_null("")


def build_item_text(items: pl.DataFrame, fields: Sequence[str], max_tags: int = 10) -> pl.DataFrame:
    """Return ``items`` with its ``text`` column built from ``fields`` (see module docstring)."""
    schema = items.schema
    parts = [_field(f, schema[f], max_tags) for f in fields if f in schema and f != "text"]
    built = (
        pl.concat_str(parts, separator=" ", ignore_nulls=True)
        if parts
        else pl.lit(None, dtype=pl.Utf8)
    )
    given = pl.col("text") if "text" in schema else pl.lit(None, dtype=pl.Utf8)
    given = pl.when(given.str.strip_chars() != "").then(given)
    return items.with_columns(normalise(pl.coalesce(given, built)).alias("text"))


def text_coverage(items: pl.DataFrame) -> float:
    """Share of items with a non-empty text."""
    if items.height == 0:
        return 0.0
    return float(items.select((pl.col("text").fill_null("") != "").mean()).item())
