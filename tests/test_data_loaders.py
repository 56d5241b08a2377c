"""Loaders: every format on tiny files written by the fixtures."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from rec.config import DataConfig
from rec.data.loaders import load_source
from rec.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA
from rec.errors import DataError


def _check_schema(src) -> None:  # noqa: ANN001
    assert dict(src.interactions.schema) == INTERACTIONS_SCHEMA
    for col, dtype in ITEMS_SCHEMA.items():
        assert src.items.schema[col] == dtype
    assert src.interactions["order"].n_unique() == src.interactions.height


def test_movielens_100k(ml100k_dir: Path) -> None:
    src = load_source("movielens-100k", ml100k_dir, DataConfig())
    _check_schema(src)
    i = src.interactions
    assert i.height == 6
    assert i.row(0) == ("1", "1", 100, "rating", 5.0, 0)
    assert i["order"].to_list() == list(range(6))
    items = {r["item_id"]: r for r in src.items.to_dicts()}
    assert items["2"]["title"] == "Café Society (1995)"  # latin-1 decoded
    assert items["1"]["genres"] == ["Animation", "Children's", "Comedy"]
    assert items["3"]["genres"] == []
    assert src.users is not None and src.users.height == 3
    assert src.users.row(0) == ("1", 24, "M", "technician", "85711")
    assert {p.name for p in src.files} >= {"u.data", "u.item", "u.user"}


def test_movielens_100k_bad_timestamp(ml100k_dir: Path) -> None:
    (ml100k_dir / "u.data").write_text("1\t1\t5\t100\n1\t2\t3\tyesterday\n")
    with pytest.raises(DataError) as exc:
        load_source("movielens-100k", ml100k_dir, DataConfig())
    msg = str(exc.value)
    assert "u.data:2" in msg and "time" in msg and "'yesterday'" in msg


def test_movielens_1m_positions(ml1m_dir: Path) -> None:
    src = load_source("movielens-1m", ml1m_dir, DataConfig())
    _check_schema_no_unique(src)
    i = src.interactions
    assert i["timestamp"].null_count() == i.height
    assert i.filter(pl.col("user_id") == "1").sort("order")["item_id"].to_list() == [
        "20",
        "30",
        "10",
    ]
    titles = dict(zip(src.items["item_id"], src.items["title"]))
    assert titles["10"] == "Amélie (2001)"
    assert titles["20"] == "Star Wars: Episode IV (1977)"
    assert src.items.height == 4  # catalogue keeps the unrated movie
    assert src.users is not None and src.users["age"].to_list() == [1, 56]


def _check_schema_no_unique(src) -> None:  # noqa: ANN001
    assert dict(src.interactions.schema) == INTERACTIONS_SCHEMA


def test_movielens_1m_ratings_dat(ml1m_ratings_dir: Path) -> None:
    src = load_source("movielens-1m", ml1m_ratings_dir, DataConfig())
    _check_schema(src)
    assert src.interactions.row(0) == ("1", "10", 978300760, "rating", 5.0, 0)


def test_movielens_latest(mllatest_dir: Path) -> None:
    src = load_source("movielens-latest", mllatest_dir, DataConfig())
    _check_schema(src)
    assert src.interactions.height == 4
    items = {r["item_id"]: r for r in src.items.to_dicts()}
    assert items["2"]["title"] == "American President, The (1995)"
    assert items["3"]["genres"] == []
    assert items["1"]["tags"] == ["pixar", "fun"]  # most frequent first, case folded
    assert items["4"]["tags"] is None
    assert len(items) == 4


@pytest.mark.parametrize("fixture", ["amazon2014_dir", "amazon2018_dir"])
def test_amazon(fixture: str, request: pytest.FixtureRequest) -> None:
    d = request.getfixturevalue(fixture)
    src = load_source("amazon", d, DataConfig())
    _check_schema(src)
    assert src.interactions["timestamp"].null_count() == 0
    assert src.interactions["value"].null_count() == 0
    assert len(src.files) == 2


def test_amazon_2014_metadata(amazon2014_dir: Path) -> None:
    src = load_source("amazon", amazon2014_dir / "reviews_Toys_5.json", DataConfig())
    items = {r["item_id"]: r for r in src.items.to_dicts()}
    assert items["B001"]["categories"] == ["Toys & Games", "Vehicles", "Cars"]
    assert items["B001"]["price"] == 12.99
    assert items["B001"]["brand"] == "Acme"
    assert items["B002"]["description"] == "A ball."


def test_amazon_2018_metadata(amazon2018_dir: Path) -> None:
    src = load_source("amazon", amazon2018_dir, DataConfig())
    items = {r["item_id"]: r for r in src.items.to_dicts()}
    assert items["X1"]["price"] == 1299.0
    assert items["X1"]["categories"] == ["Industrial & Scientific", "Adhesives"]
    assert items["X1"]["description"] == "Strong glue."
    assert items["X2"]["price"] is None and items["X2"]["categories"] == []


def test_amazon_bad_line(amazon2014_dir: Path) -> None:
    p = amazon2014_dir / "reviews_Toys_5.json"
    p.write_text(p.read_text() + "{not json\n")
    with pytest.raises(DataError, match=r"reviews_Toys_5.json:4"):
        load_source("amazon", amazon2014_dir, DataConfig())


def test_atomic_chained(unisrec_dir: Path) -> None:
    src = load_source("atomic", unisrec_dir, DataConfig())
    i = src.interactions
    seq0 = i.filter(pl.col("user_id") == "AUSER0").sort("order")["item_id"].to_list()
    seq1 = i.filter(pl.col("user_id") == "AUSER1").sort("order")["item_id"].to_list()
    assert seq0 == [f"ASIN{k}" for k in range(7)]
    assert seq1 == ["ASIN2", "ASIN3", "ASIN1", "ASIN0", "ASIN5"]
    assert i["timestamp"].null_count() == i.height
    assert src.given_targets is not None
    assert dict(src.given_targets["test"].iter_rows()) == {"AUSER0": "ASIN6", "AUSER1": "ASIN5"}
    items = {r["item_id"]: r for r in src.items.to_dicts()}
    assert items["ASIN3"]["title"] == "Thing 3"
    assert items["ASIN3"]["text"] == "Thing 3. Industrial & Scientific Tools. Brand3."


def test_atomic_broken_chain(unisrec_dir: Path) -> None:
    p = unisrec_dir / "Tiny.train.inter"
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines[:2] + lines[3:]) + "\n")  # drop one row of user 0
    with pytest.raises(DataError, match="cannot chain"):
        load_source("atomic", unisrec_dir, DataConfig())


def test_atomic_plain(recbole_plain: Path) -> None:
    src = load_source("atomic", recbole_plain, DataConfig())
    _check_schema(src)
    assert src.interactions["timestamp"].to_list() == [881250949, 881250950, 881250000]
    assert src.interactions["value"].to_list() == [5.0, 3.0, 4.0]
    items = {r["item_id"]: r for r in src.items.to_dicts()}
    assert items["10"]["title"] == "Toy Story" and items["10"]["genres"] == ["Animation", "Comedy"]


def test_csv_mapping(events_csv: Path) -> None:
    cfg = DataConfig(
        format="csv",
        user_col="uid",
        item_col="iid",
        time_col="ts",
        value_col="score",
        event_col="kind",
        items_path=str(events_csv.parent / "items.csv"),
        item_id_col="iid",
        item_text_cols=("name", "genres", "maker"),
    )
    src = load_source("csv", events_csv, cfg)
    _check_schema(src)
    assert src.interactions.row(0) == ("007", "a", 10, "click", 1.0, 0)  # ids stay strings
    items = {r["item_id"]: r for r in src.items.to_dicts()}
    assert items["a"]["genres"] == ["x", "y"] and items["a"]["maker"] == "M1"
    assert items["d"]["name"] == "Delta"


def test_parquet_mapping(tmp_path: Path) -> None:
    p = tmp_path / "log.parquet"
    pl.DataFrame({"u": [1, 2], "i": [5, 6], "t": [100, 50]}).write_parquet(p)
    cfg = DataConfig(user_col="u", item_col="i", time_col="t")
    src = load_source("parquet", p, cfg)
    assert src.interactions.select("user_id", "item_id", "timestamp").rows() == [
        ("1", "5", 100),
        ("2", "6", 50),
    ]


def test_csv_without_time(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("user_id,item_id\na,b\n")
    src = load_source("csv", p, DataConfig(time_col=""))
    assert src.interactions["timestamp"].to_list() == [None]


@pytest.mark.parametrize(
    "content, match",
    [
        (
            b"user_id,item_id,timestamp\na,b,1\na,c,12:30\n",
            r"x\.csv:3 \(column 'timestamp'\): "
            r"non-numeric timestamp '12:30'",
        ),
        (b"user_id,timestamp\na,1\n", r"missing column 'item_id'"),
        (b"user_id,item_id,timestamp\nb\xe9,c,1\n", r"x\.csv:2: not valid UTF-8"),
        (b"user_id,item_id,timestamp\na,b,1,9,9\n", r"x\.csv: unreadable csv file"),
    ],
)
def test_csv_errors(tmp_path: Path, content: bytes, match: str) -> None:
    p = tmp_path / "x.csv"
    p.write_bytes(content)
    with pytest.raises(DataError, match=match):
        load_source("csv", p, DataConfig())


def test_unknown_format_and_missing_input(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown format 'xml'"):
        load_source("xml", tmp_path, DataConfig())
    with pytest.raises(DataError, match="input not found"):
        load_source("csv", tmp_path / "nope.csv", DataConfig())
    with pytest.raises(DataError, match="u.item"):
        (tmp_path / "u.data").write_text("1\t1\t5\t100\n")
        load_source("movielens-100k", tmp_path, DataConfig())


def test_amazon_gzip_and_loose_reviews(amazon2014_dir: Path) -> None:
    import gzip

    p = amazon2014_dir / "reviews_Toys_5.json"
    lines = p.read_text().splitlines()
    lines.append("{'reviewerID': 'A3', 'asin': 'B002', 'overall': 1.0, 'unixReviewTime': '1200'}")
    gz = amazon2014_dir / "reviews_Toys_5.json.gz"
    gz.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    p.unlink()
    src = load_source("amazon", amazon2014_dir, DataConfig())
    assert src.interactions["timestamp"].to_list() == [1000, 1100, 900, 1200]
    assert src.items.height == 2  # metadata found next to the reviews


def test_amazon_bad_timestamp(amazon2018_dir: Path) -> None:
    p = amazon2018_dir / "Industrial_and_Scientific_5.json"
    p.write_text(p.read_text() + '{"reviewerID": "R3", "asin": "X1", "unixReviewTime": Infinity}\n')
    with pytest.raises(DataError, match=r"_5\.json:3 \(column 'unixReviewTime'\): non-numeric"):
        load_source("amazon", amazon2018_dir, DataConfig())


def test_csv_timestamp_out_of_range(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("user_id,item_id,timestamp\na,b,1.5\na,c,99999999999999999999999\n")
    with pytest.raises(
        DataError, match=r"x\.csv:3 \(column 'timestamp'\): timestamp .* out of range"
    ):
        load_source("csv", p, DataConfig())
