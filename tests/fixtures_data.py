"""Tiny raw sources in every supported format, written by the fixtures themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def _flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES)


@pytest.fixture
def ml100k_dir(tmp_path: Path) -> Path:
    """ml-100k layout: 3 users, 3 items, u.item in latin-1 with a non-ASCII title."""
    d = tmp_path / "ml-100k"
    d.mkdir()
    (d / "u.data").write_text(
        "1\t1\t5\t100\n1\t2\t3\t90\n2\t1\t4\t50\n2\t3\t1\t60\n3\t2\t2\t70\n1\t3\t4\t100\n"
    )
    (d / "u.item").write_bytes(
        (
            "1|Toy Story (1995)|01-Jan-1995||http://x|"
            + _flags("Animation", "Children's", "Comedy")
            + "\n2|Café Society (1995)|01-Jan-1995||http://y|"
            + _flags("Drama")
            + "\n3|unknown||||"
            + _flags("unknown")
            + "\n"
        ).encode("latin-1")
    )
    (d / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n")
    (d / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n")
    return d


@pytest.fixture
def ml1m_dir(tmp_path: Path) -> Path:
    """ml-1m (SASRec form): interactions.csv with positions, movies.dat, users.dat."""
    d = tmp_path / "ml-1m"
    d.mkdir()
    (d / "interactions.csv").write_text(
        "user_id,movie_id,position\n1,10,2\n1,20,0\n1,30,1\n2,20,1\n2,10,0\n"
    )
    (d / "movies.dat").write_bytes(
        "10::Amélie (2001)::Comedy|Romance\n20::Star Wars: Episode IV (1977)::Action|Sci-Fi\n"
        "30::Heat (1995)::Action\n40::Unrated (1990)::Drama\n".encode("latin-1")
    )
    (d / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    return d


@pytest.fixture
def ml1m_ratings_dir(tmp_path: Path) -> Path:
    """ml-1m original release layout: ratings.dat with timestamps."""
    d = tmp_path / "ml-1m-orig"
    d.mkdir()
    (d / "ratings.dat").write_text(
        "1::10::5::978300760\n1::20::3::978300700\n2::10::4::978300800\n"
    )
    (d / "movies.dat").write_bytes("10::A (2001)::Comedy\n20::B (1977)::Action\n".encode("latin-1"))
    return d


@pytest.fixture
def mllatest_dir(tmp_path: Path) -> Path:
    """ml-latest-small layout with quoted titles, no-genre movie and tags."""
    d = tmp_path / "ml-latest-small"
    d.mkdir()
    (d / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,3.5,964981247\n"
        "2,1,5.0,964982224\n2,3,0.5,964983815\n"
    )
    (d / "movies.csv").write_text(
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n"
        '2,"American President, The (1995)",Comedy|Drama|Romance\n'
        "3,Empty (2000),(no genres listed)\n4,Never Rated (2001),Drama\n"
    )
    (d / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n1,1,fun,1\n2,1,Pixar,2\n3,1,pixar,3\n1,2,politics,4\n"
    )
    return d


def _jsonl(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def amazon2014_dir(tmp_path: Path) -> Path:
    """2014 release: strict-JSON reviews, python-dict metadata with nested categories."""
    d = tmp_path / "amazon2014"
    d.mkdir()
    _jsonl(
        d / "reviews_Toys_5.json",
        [
            json.dumps(
                {"reviewerID": "A1", "asin": "B001", "overall": 5.0, "unixReviewTime": 1000}
            ),
            json.dumps(
                {"reviewerID": "A1", "asin": "B002", "overall": 3.0, "unixReviewTime": 1100}
            ),
            json.dumps({"reviewerID": "A2", "asin": "B001", "overall": 4.0, "unixReviewTime": 900}),
        ],
    )
    _jsonl(
        d / "meta_Toys.json",
        [
            "{'asin': 'B001', 'title': 'Red  Car', 'price': 12.99, 'brand': 'Acme', "
            "'categories': [['Toys & Games', 'Vehicles'], ['Toys & Games', 'Cars']]}",
            "{'asin': 'B002', 'title': 'Blue Ball', 'description': 'A ball.', "
            "'categories': [['Toys & Games']]}",
        ],
    )
    return d


@pytest.fixture
def amazon2018_dir(tmp_path: Path) -> Path:
    """2018 release: JSON reviews (with style dicts) and JSON metadata, price as "$1,299.00"."""
    d = tmp_path / "amazon2018"
    d.mkdir()
    _jsonl(
        d / "Industrial_and_Scientific_5.json",
        [
            json.dumps(
                {
                    "overall": 5.0,
                    "verified": True,
                    "reviewerID": "R1",
                    "asin": "X1",
                    "style": {"Size:": "Big"},
                    "unixReviewTime": 1500000000,
                }
            ),
            json.dumps(
                {"overall": 2.0, "reviewerID": "R2", "asin": "X2", "unixReviewTime": 1500000100}
            ),
        ],
    )
    _jsonl(
        d / "meta_Industrial_and_Scientific.json",
        [
            json.dumps(
                {
                    "asin": "X1",
                    "title": "Glue",
                    "brand": "Gorilla",
                    "price": "$1,299.00",
                    "category": ["Industrial & Scientific", "Adhesives"],
                    "description": ["Strong", "glue."],
                }
            ),
            json.dumps({"asin": "X2", "title": "Tape", "price": "", "category": []}),
        ],
    )
    return d


@pytest.fixture
def unisrec_dir(tmp_path: Path) -> Path:
    """UniSRec-style split files with histories cut to the last 3 items (chaining needed)."""
    d = tmp_path / "Tiny"
    d.mkdir()
    seqs = {"0": ["0", "1", "2", "3", "4", "5", "6"], "1": ["2", "3", "1", "0", "5"]}
    window = 3
    rows = {"train": [], "valid": [], "test": []}
    for u, s in seqs.items():
        n = len(s)
        for pos in range(1, n):
            part = "test" if pos == n - 1 else "valid" if pos == n - 2 else "train"
            hist = " ".join(s[max(0, pos - window) : pos])
            rows[part].append(f"{u}\t{hist}\t{s[pos]}")
    rows["train"].reverse()  # order inside the file must not matter
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    for part, lines in rows.items():
        (d / f"Tiny.{part}.inter").write_text(header + "\n".join(lines) + "\n")
    (d / "Tiny.user2index").write_text("AUSER0\t0\nAUSER1\t1\n")
    (d / "Tiny.item2index").write_text("".join(f"ASIN{i}\t{i}\n" for i in range(7)))
    (d / "Tiny.text").write_text(
        "item_id:token\ttext:token_seq\n"
        + "".join(
            f"ASIN{i}\tThing {i}. Industrial & Scientific Tools. Brand{i}. \n" for i in range(7)
        )
    )
    return d


@pytest.fixture
def recbole_plain(tmp_path: Path) -> Path:
    """Plain RecBole atomic .inter (+ .item)."""
    d = tmp_path / "ml"
    d.mkdir()
    (d / "ml.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t5\t881250949.0\n1\t20\t3\t881250950\n2\t10\t4\t881250000\n"
    )
    (d / "ml.item").write_text(
        "item_id:token\tmovie_title:token_seq\tclass:token_seq\n10\tToy Story\tAnimation Comedy\n"
        "20\tHeat\tAction\n"
    )
    return d / "ml.inter"


@pytest.fixture
def events_csv(tmp_path: Path) -> Path:
    """A generic CSV event log with its own column names, and an items CSV."""
    p = tmp_path / "log.csv"
    p.write_text(
        "uid,iid,ts,score,kind\n"
        "007,a,10,1.0,click\n007,b,20,1.0,click\n008,a,15,0.5,view\n"
        "008,c,16,1.0,click\n007,c,30,1.0,click\n"
    )
    (tmp_path / "items.csv").write_text(
        "iid,name,genres,maker\na,Alpha,x|y,M1\nb,Beta,,M2\nc,Gamma,z,\nd,Delta,x,M4\n"
    )
    return p
