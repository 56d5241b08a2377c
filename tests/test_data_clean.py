"""Cleaning (report counts, k-core), item text and the temporal split."""

from __future__ import annotations

import polars as pl
import pytest

from rec.data.clean import clean_interactions, kcore_filter
from rec.data.dataset import leave_one_out, temporal_cuts, temporal_split
from rec.data.schema import INTERACTIONS_SCHEMA, conform
from rec.data.text import build_item_text
from rec.errors import DataError


def _inter(rows: list[tuple]) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp", "value"], orient="row")
    return conform(
        df.with_row_index("order").with_columns(pl.col("order").cast(pl.Int64)), INTERACTIONS_SCHEMA
    )


def test_clean_report() -> None:
    df = _inter(
        [
            ("u1", "a", 1, 5.0),
            ("u1", "a", 1, 5.0),
            ("u1", None, 2, 4.0),
            ("", "b", 3, 4.0),
            ("u2", "b", None, 4.0),
            ("u2", "c", 4, 2.0),
            ("u2", "a", 5, 4.0),
        ]
    )
    out, rep = clean_interactions(df, min_value=4.0)
    assert rep["input_events"] == 7
    assert rep["missing_ids"] == 2
    assert rep["missing_timestamps"] == 1
    assert rep["duplicates"] == 1
    assert rep["below_min_value"] == 1
    assert rep["output_events"] == 2 and out["order"].to_list() == [0, 6]
    assert rep["users"] == 2 and rep["items_with_events"] == 1


def test_order_only_rows_are_not_duplicates() -> None:
    df = _inter([("u", "a", None, None), ("u", "a", None, None), ("u", "b", None, None)])
    out, rep = clean_interactions(df)
    assert rep["duplicates"] == 0 and rep["missing_timestamps"] == 0 and out.height == 3


def test_kcore_iterates_until_stable() -> None:
    # a 2-core: u1,u2 x a,b; u3 only has a and c; dropping c removes u3 which ... etc.
    rows = [
        ("u1", "a"),
        ("u1", "b"),
        ("u2", "a"),
        ("u2", "b"),
        ("u3", "a"),
        ("u3", "c"),
        ("u4", "c"),
    ]
    df = _inter([(u, i, t, 1.0) for t, (u, i) in enumerate(rows)])
    out, iters = kcore_filter(df, 2)
    # pass 1 drops u4 (1 event); then c has 1 event -> dropped; then u3 has 1 -> dropped
    assert sorted(set(out["user_id"])) == ["u1", "u2"]
    assert sorted(set(out["item_id"])) == ["a", "b"]
    assert iters >= 3
    c = out.group_by("user_id").len()["len"].min()
    assert c >= 2


def test_empty_after_filter_is_error() -> None:
    df = _inter([("u1", "a", 1, 1.0), ("u2", "b", 2, 2.0)])
    with pytest.raises(DataError, match="no events left after the 5-core"):
        clean_interactions(df, kcore=5, source="x.csv")
    with pytest.raises(DataError, match="no events left after keeping value >= 4"):
        clean_interactions(df, min_value=4)


def test_min_value_without_values() -> None:
    df = _inter([("u1", "a", 1, None)])
    with pytest.raises(DataError, match="no values"):
        clean_interactions(df, min_value=4)


def test_item_text() -> None:
    items = pl.DataFrame(
        {
            "item_id": ["1", "2", "3"],
            "title": ["Toy Story (1995)", "Ｃａｆé\t  Society.", None],
            "genres": [["Animation", "Children's", "Comedy"], [], None],
            "tags": [["pixar", "fun", "a", "b"], None, None],
            "brand": [None, "Acme", None],
            "price": [None, 12.989, None],
        },
        schema_overrides={"genres": pl.List(pl.Utf8), "tags": pl.List(pl.Utf8)},
    )
    out = build_item_text(items, ["title", "genres", "tags", "brand", "price"], max_tags=2)
    assert out["text"].to_list() == [
        "Toy Story (1995). Genres: Animation, Children's, Comedy. Tags: pixar, fun.",
        "Café Society. Brand: Acme. Price: $12.99.",
        "",
    ]
    out = build_item_text(items, ["brand", "title"])
    assert out["text"][1] == "Brand: Acme. Café Society."


def test_item_text_keeps_source_text() -> None:
    items = pl.DataFrame({"item_id": ["1"], "title": ["T"], "text": ["Given  text. "]})
    assert build_item_text(items, ["title"])["text"].to_list() == ["Given text."]


def test_temporal_split() -> None:
    df = _inter([(f"u{k % 3}", f"i{k}", k, 1.0) for k in range(20)])
    t_valid, t_test = temporal_cuts(df, 0.1, 0.2)
    sp = temporal_split(df, 0.1, 0.2)
    assert sp.name == "temporal"
    assert sp.train.height + sp.valid.height + sp.test.height == 20
    assert sp.train["timestamp"].max() < t_valid <= sp.valid["timestamp"].min()
    assert sp.valid["timestamp"].max() < t_test <= sp.test["timestamp"].min()
    assert sp.test.height == 4 and sp.valid.height == 2
    assert "seq" in sp.train.columns


def test_temporal_split_needs_timestamps() -> None:
    df = _inter([("u", "a", None, 1.0)])
    with pytest.raises(DataError, match="needs a timestamp"):
        temporal_split(df)
    with pytest.raises(DataError, match="fractions"):
        temporal_cuts(_inter([("u", "a", 1, 1.0)]), 0.6, 0.5)


def test_loo_ties_keep_file_order() -> None:
    df = _inter([("u", "a", 5, 1.0), ("u", "b", 5, 1.0), ("u", "c", 5, 1.0)])
    sp = leave_one_out(df)
    assert sp.test["item_id"].to_list() == ["c"] and sp.valid["item_id"].to_list() == ["b"]
