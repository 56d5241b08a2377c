"""Integration tests on the real datasets in ../shared/data (skipped when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from rec.config import DataConfig
from rec.data import load_split
from rec.data.prepare import prepare_dataset
from rec.data.stats import dataset_stats


def _prepare(real_data: Path, tmp_path: Path, fmt: str, folder: str, **kw: object) -> Path:
    return prepare_dataset(
        DataConfig(format=fmt, input=str(real_data / folder), **kw), tmp_path / folder
    )


def test_ml100k(real_data: Path, tmp_path: Path) -> None:
    out = _prepare(real_data, tmp_path, "movielens-100k", "ml-100k")
    s = dataset_stats(out)
    assert (s["users"], s["items_with_events"], s["events"]) == (943, 1682, 100_000)
    assert s["items_catalogue"] == 1682
    assert (s["timestamp_min"], s["timestamp_max"]) == (874724710, 893286638)
    assert pl.read_parquet(out / "users.parquet").height == 943
    loo = load_split(out)
    assert loo.test.height == 943 and loo.valid.height == 943


def test_ml_latest_small(real_data: Path, tmp_path: Path) -> None:
    out = _prepare(real_data, tmp_path, "movielens-latest", "ml-latest-small")
    s = dataset_stats(out)
    assert (s["users"], s["items_with_events"], s["events"]) == (610, 9724, 100_836)
    assert s["items_catalogue"] == 9742


def test_ml_latest_small_5core(real_data: Path, tmp_path: Path) -> None:
    out = _prepare(real_data, tmp_path, "movielens-latest", "ml-latest-small", kcore=5)
    s = dataset_stats(out)
    # PROTOCOL.md: "610 users, ~3,650 items"
    assert (s["users"], s["items_with_events"], s["events"]) == (610, 3650, 90_274)
    inter = pl.read_parquet(out / "interactions.parquet")
    assert inter.group_by("user_id").len()["len"].min() >= 5
    assert inter.group_by("item_id").len()["len"].min() >= 5


def test_scientific_recovered_sequences(real_data: Path, tmp_path: Path) -> None:
    out = _prepare(real_data, tmp_path, "atomic", "amazon-scientific-unisrec")
    s = dataset_stats(out)
    assert (s["users"], s["items_with_events"], s["events"]) == (8442, 4385, 59_427)
    assert (s["history_p5"] >= 5) and s["history_max"] == 80
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["given_split"] == {
        "valid_equal": True,
        "valid_rows": 8442,
        "test_equal": True,
        "test_rows": 8442,
    }
    # exact equality against the files, with original ids
    folder = real_data / "amazon-scientific-unisrec"
    users = dict(
        line.split("\t")
        for line in (folder / "Scientific.user2index").read_text().split("\n")
        if line
    )
    items = dict(
        line.split("\t")
        for line in (folder / "Scientific.item2index").read_text().split("\n")
        if line
    )
    uinv = {v: k for k, v in users.items()}
    iinv = {v: k for k, v in items.items()}
    loo = load_split(out)
    for part in ("valid", "test"):
        rows = (folder / f"Scientific.{part}.inter").read_text().split("\n")[1:]
        given = {uinv[r.split("\t")[0]]: iinv[r.split("\t")[2]] for r in rows if r}
        ours = dict(getattr(loo, part).select("user_id", "item_id").iter_rows())
        assert ours == given
    assert s["text_coverage_catalogue"] == 1.0


@pytest.mark.slow
def test_ml1m(real_data: Path, tmp_path: Path) -> None:
    out = _prepare(real_data, tmp_path, "movielens-1m", "ml-1m")
    s = dataset_stats(out)
    assert (s["users"], s["items_with_events"], s["events"]) == (6040, 3416, 999_611)
    assert s["timestamp_min"] is None
