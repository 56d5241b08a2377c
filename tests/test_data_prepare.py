"""prepare_dataset end to end on tiny sources: dataset.json, splits, atomicity, REC_DATA_DIR."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from rec.artifacts import sha256_file
from rec.config import DataConfig
from rec.data import load_dataset, load_split
from rec.data.prepare import prepare_dataset, resolve_input
from rec.errors import DataError


def test_prepare_ml100k(ml100k_dir: Path, tmp_path: Path) -> None:
    out = prepare_dataset(
        DataConfig(format="movielens-100k", input=str(ml100k_dir)), tmp_path / "out"
    )
    ds = load_dataset(out)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["counts"]["events"] == 6 and meta["counts"]["users"] == 3
    assert meta["source"]["format"] == "movielens-100k"
    files = meta["source"]["files"]
    assert files[str((ml100k_dir / "u.data").resolve())] == sha256_file(ml100k_dir / "u.data")
    assert meta["cleaning"]["duplicates"] == 0
    assert meta["config"]["format"] == "movielens-100k"
    assert meta["splits"] == ["loo", "temporal"]
    assert ds.users is not None
    text = dict(zip(ds.items["item_id"], ds.items["text"]))
    assert text["1"] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    loo = load_split(out, "loo")
    # user 1: times 100 (order 0), 90, 100 (order 5): tie keeps file order -> test = item 3
    assert dict(loo.test.select("user_id", "item_id").iter_rows())["1"] == "3"
    assert load_split(out, "temporal").test.height >= 1


def test_prepare_kcore_keeps_catalogue(mllatest_dir: Path, tmp_path: Path) -> None:
    (mllatest_dir / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4,1\n1,2,4,2\n2,1,4,3\n2,2,4,4\n3,3,4,5\n"
    )
    out = prepare_dataset(
        DataConfig(format="movielens-latest", input=str(mllatest_dir), kcore=2), tmp_path / "out"
    )
    meta = json.loads((out / "dataset.json").read_text())
    c = meta["counts"]
    assert c["items_catalogue"] == 4 and c["items_with_events"] == 2
    assert c["items_without_events"] == 2 and c["users"] == 2
    assert meta["cleaning"]["kcore"]["removed_events"] == 1
    items = pl.read_parquet(out / "items.parquet")
    assert dict(zip(items["item_id"], items["n_events"]))["1"] == 2


def test_prepare_atomic_given_split(unisrec_dir: Path, tmp_path: Path) -> None:
    out = prepare_dataset(DataConfig(format="atomic", input=str(unisrec_dir)), tmp_path / "o")
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["given_split"]["test_equal"] and meta["given_split"]["valid_equal"]
    assert meta["timestamps"] is False and meta["splits"] == ["loo"]


def test_prepare_csv_items_text(events_csv: Path, tmp_path: Path) -> None:
    cfg = DataConfig(
        format="csv",
        input=str(events_csv),
        user_col="uid",
        item_col="iid",
        time_col="ts",
        items_path="items.csv",
        item_id_col="iid",
        item_text_cols=("name", "genres", "maker"),
        text_fields=("genres",),
    )
    out = prepare_dataset(cfg, tmp_path / "o")
    items = pl.read_parquet(out / "items.parquet")
    text = dict(zip(items["item_id"], items["text"]))
    assert text["a"] == "Genres: x, y. Name: Alpha. Maker: M1."
    assert text["d"] == "Genres: x. Name: Delta. Maker: M4."  # catalogue item without events


def test_failure_keeps_previous_dir(ml100k_dir: Path, tmp_path: Path) -> None:
    out = prepare_dataset(
        DataConfig(format="movielens-100k", input=str(ml100k_dir)), tmp_path / "out"
    )
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(DataError, match="no events left"):
        prepare_dataset(DataConfig(format="movielens-100k", input=str(ml100k_dir), kcore=50), out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k", "out"]  # no leftovers


def test_no_output_on_failure(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        prepare_dataset(DataConfig(format="csv", input=str(tmp_path / "no.csv")), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_temporal_requires_timestamps(ml1m_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs timestamps"):
        prepare_dataset(
            DataConfig(format="movielens-1m", input=str(ml1m_dir), split="temporal"), tmp_path / "o"
        )


def test_relative_input_resolves_against_rec_data_dir(
    ml100k_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REC_DATA_DIR", str(ml100k_dir.parent))
    monkeypatch.chdir(tmp_path / "..")
    assert resolve_input("ml-100k") == ml100k_dir
    assert resolve_input("missing-thing") == Path("missing-thing")


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no data format"):
        prepare_dataset(DataConfig(input="x"), tmp_path / "o")
    with pytest.raises(DataError, match="no input"):
        prepare_dataset(DataConfig(format="csv"), tmp_path / "o")
