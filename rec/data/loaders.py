"""Source loaders: one function per raw format, each returning frames in the canonical schema.

Every loader returns a :class:`Source`: ``interactions`` (user_id, item_id as the original ids in
string form, timestamp as integer unix seconds or null where the source only has an order, event,
value, order = 0-based row order in the source file), ``items`` (the catalogue; ``text`` only where
the source ships a ready-made item text), optional ``users``, and the list of files it read.

Bad input (missing file or column, wrong encoding, unparsable timestamp) raises ``DataError``
naming the file, and the line and column where known.
"""

from __future__ import annotations

import ast
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from rec.config import DataConfig
from rec.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, conform
from rec.errors import DataError

# The 19 genre flags of ml-100k u.item, in file order (as in u.genre).
ML100K_GENRES = (
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
)


@dataclass
class Source:
    """What a loader read: canonical frames plus provenance."""

    interactions: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame | None = None
    files: list[Path] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    # targets of a split shipped with the source (atomic): {"valid"|"test": frame(user_id, item_id)}
    given_targets: dict[str, pl.DataFrame] | None = None


# ---------------------------------------------------------------------------------------------
# helpers


def _require_file(path: Path, what: str = "file") -> Path:
    if not path.exists():
        raise DataError(f"{what} not found", path)
    if not path.is_file():
        raise DataError(f"expected a {what}, found a directory", path)
    return path


def _find(folder: Path, *names: str) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _read_bytes(path: Path) -> bytes:
    _require_file(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read file: {exc}", path) from None


def _decode(path: Path, raw: bytes, encoding: str = "utf-8") -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"not valid {encoding.upper()} text (byte 0x{raw[exc.start]:02x}); "
            "re-encode the file as UTF-8",
            path,
            line,
        ) from None


def _lines(path: Path, encoding: str = "utf-8") -> list[str]:
    return _decode(path, _read_bytes(path), encoding).splitlines()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _read_table(
    path: Path,
    separator: str = ",",
    has_header: bool = True,
    new_columns: list[str] | None = None,
    quote_char: str | None = '"',
) -> pl.DataFrame:
    """Read a delimited UTF-8 file with every column as a string; errors become DataError."""
    _require_file(path)
    try:
        df = pl.read_csv(
            path,
            separator=separator,
            has_header=has_header,
            infer_schema=False,
            quote_char=quote_char,
            new_columns=new_columns,
            raise_if_empty=False,
        )
    except pl.exceptions.ComputeError as exc:
        msg = _first_line(exc)
        if "utf-8" in msg.lower() or "utf8" in msg.lower():
            _decode(path, _read_bytes(path))  # raises with the line number
        raise DataError(
            f"unreadable {path.suffix.lstrip('.') or 'delimited'} file: {msg}", path
        ) from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"unreadable file: {_first_line(exc)}", path) from None
    return df


def _require_columns(df: pl.DataFrame, cols: list[str], path: Path) -> None:
    missing = [c for c in cols if c and c not in df.columns]
    if missing:
        have = ", ".join(repr(c) for c in df.columns[:12]) or "none"
        raise DataError(f"missing column {missing[0]!r} (columns: {have})", path, column=missing[0])


def _numeric(
    df: pl.DataFrame, col: str, dtype: pl.DataType, path: Path, what: str, line_offset: int
) -> pl.Series:
    """Cast a string column to ``dtype``; the first unparsable non-empty value is a DataError."""
    s = df[col].str.strip_chars()
    s = s.set(s == "", None) if s.dtype == pl.Utf8 else s
    as_float = s.cast(pl.Float64, strict=False)
    bad = s.is_not_null() & (as_float.is_null() | as_float.is_nan() | as_float.is_infinite())
    if bad.any():
        i = int(bad.arg_true()[0])
        raise DataError(f"non-numeric {what} {s[i]!r}", path, i + line_offset, col)
    if dtype == pl.Int64:
        as_int = s.cast(pl.Int64, strict=False)  # exact for integer strings
        out = as_int.fill_null(as_float.floor().cast(pl.Int64, strict=False))
        bad = s.is_not_null() & out.is_null()
        if bad.any():
            i = int(bad.arg_true()[0])
            raise DataError(f"{what} {s[i]!r} out of range", path, i + line_offset, col)
        return out
    return as_float


def _interactions(
    user: pl.Series | pl.Expr,
    item: Any,
    timestamp: Any = None,
    value: Any = None,
    event: str | pl.Series | None = None,
    order: Any = None,
    n: int | None = None,
) -> pl.DataFrame:
    cols: dict[str, Any] = {"user_id": user, "item_id": item}
    if timestamp is not None:
        cols["timestamp"] = timestamp
    if value is not None:
        cols["value"] = value
    if event is not None:
        cols["event"] = event if isinstance(event, pl.Series) else pl.Series([event] * len(user))
    df = pl.DataFrame(cols)
    df = df.with_columns(
        (order if order is not None else pl.int_range(pl.len(), dtype=pl.Int64)).alias("order")
    )
    return conform(df, INTERACTIONS_SCHEMA)


def _items(df: pl.DataFrame) -> pl.DataFrame:
    return conform(df, ITEMS_SCHEMA).unique("item_id", keep="first", maintain_order=True)


# ---------------------------------------------------------------------------------------------
# MovieLens


def load_movielens_100k(path: Path, cfg: DataConfig) -> Source:
    """GroupLens ml-100k folder (or its u.data): u.data, u.item (latin-1), u.genre, u.user."""
    folder = path if path.is_dir() else path.parent
    data = path if path.is_file() else folder / "u.data"
    raw = _read_table(data, separator="\t", has_header=False, quote_char=None)
    if raw.width != 4:
        raise DataError(
            f"expected 4 tab-separated fields (user, item, rating, time), got {raw.width}", data
        )
    raw.columns = ["user", "item", "rating", "time"]
    inter = _interactions(
        raw["user"],
        raw["item"],
        _numeric(raw, "time", pl.Int64, data, "timestamp", 1),
        _numeric(raw, "rating", pl.Float64, data, "rating", 1),
        "rating",
    )
    files = [data]

    genre_names = list(ML100K_GENRES)
    genre_file = folder / "u.genre"
    if genre_file.is_file():
        names = [ln.split("|")[0] for ln in _lines(genre_file, "latin-1") if ln.strip()]
        if len(names) == len(genre_names):
            genre_names = names
        files.append(genre_file)
    item_file = _require_file(folder / "u.item", "item file u.item")
    files.append(item_file)
    ids, titles, genres = [], [], []
    for n, line in enumerate(_lines(item_file, "latin-1"), 1):
        if not line.strip():
            continue
        f = line.split("|")
        if len(f) < 5 + len(genre_names):
            raise DataError(
                f"expected {5 + len(genre_names)} '|'-separated fields, got {len(f)}", item_file, n
            )
        ids.append(f[0])
        titles.append(f[1])
        flags = f[5 : 5 + len(genre_names)]
        genres.append(
            [g for g, x in zip(genre_names, flags) if x.strip() == "1" and g != "unknown"]
        )
    items = _items(
        pl.DataFrame(
            {"item_id": ids, "title": titles, "genres": genres},
            schema_overrides={"genres": pl.List(pl.Utf8)},
        )
    )

    users = None
    user_file = folder / "u.user"
    if user_file.is_file():
        rows = [ln.split("|") for ln in _lines(user_file, "latin-1") if ln.strip()]
        users = pl.DataFrame(
            {
                "user_id": [r[0] for r in rows],
                "age": [int(r[1]) if len(r) > 1 and r[1].strip().isdigit() else None for r in rows],
                "gender": [r[2] if len(r) > 2 else None for r in rows],
                "occupation": [r[3] if len(r) > 3 else None for r in rows],
                "zip": [r[4] if len(r) > 4 else None for r in rows],
            },
            schema_overrides={"age": pl.Int64},
        )
        files.append(user_file)
    return Source(inter, items, users, files, {"timestamps": True})


def _split_dat(path: Path, n_fields: int, encoding: str = "latin-1") -> list[list[str]]:
    rows = []
    for n, line in enumerate(_lines(path, encoding), 1):
        if not line.strip():
            continue
        f = line.split("::")
        if len(f) != n_fields:
            raise DataError(f"expected {n_fields} '::'-separated fields, got {len(f)}", path, n)
        rows.append(f)
    return rows


def load_movielens_1m(path: Path, cfg: DataConfig) -> Source:
    """ML-1M folder: ``interactions.csv`` (user_id,movie_id,position; order only, no timestamps)
    or the original ``ratings.dat`` (``::``), plus ``movies.dat`` (latin-1) and ``users.dat``."""
    folder = path if path.is_dir() else path.parent
    if path.is_file():
        data = path
    else:
        found = _find(folder, "interactions.csv", "ratings.dat")
        if found is None:
            raise DataError("no interactions.csv or ratings.dat in folder", folder)
        data = found
    if data.suffix == ".dat":
        # "1::1193::5::978300760": split on ':' and keep the even fields (ids are numeric).
        raw = _read_table(data, separator=":", has_header=False, quote_char=None)
        if raw.width != 7:
            raise DataError("expected 'UserID::MovieID::Rating::Timestamp' lines", data)
        raw = raw.select(pl.nth(0, 2, 4, 6))
        raw.columns = ["user", "item", "rating", "time"]
        inter = _interactions(
            raw["user"],
            raw["item"],
            _numeric(raw, "time", pl.Int64, data, "timestamp", 1),
            _numeric(raw, "rating", pl.Float64, data, "rating", 1),
            "rating",
        )
        info: dict[str, Any] = {"timestamps": True}
    else:
        raw = _read_table(data)
        _require_columns(raw, ["user_id", "movie_id", "position"], data)
        pos = _numeric(raw, "position", pl.Int64, data, "position", 2)
        inter = _interactions(raw["user_id"], raw["movie_id"], event="rating", order=pos)
        info = {"timestamps": False, "order": "position (chronological within user)"}
    files = [data]

    movies = _find(folder, "movies.dat")
    if movies is None:
        raise DataError("movies.dat not found next to the interactions", folder / "movies.dat")
    rows = _split_dat(movies, 3)
    items = _items(
        pl.DataFrame(
            {
                "item_id": [r[0] for r in rows],
                "title": [r[1] for r in rows],
                "genres": [
                    [g for g in r[2].split("|") if g and g != "(no genres listed)"] for r in rows
                ],
            },
            schema_overrides={"genres": pl.List(pl.Utf8)},
        )
    )
    files.append(movies)

    users = None
    user_file = _find(folder, "users.dat")
    if user_file is not None:
        urows = _split_dat(user_file, 5)
        users = pl.DataFrame(
            {
                "user_id": [r[0] for r in urows],
                "gender": [r[1] for r in urows],
                "age": [int(r[2]) if r[2].isdigit() else None for r in urows],
                "occupation": [r[3] for r in urows],
                "zip": [r[4] for r in urows],
            },
            schema_overrides={"age": pl.Int64},
        )
        files.append(user_file)
    return Source(inter, items, users, files, info)


def load_movielens_latest(path: Path, cfg: DataConfig) -> Source:
    """ml-latest(-small) folder: ratings.csv, movies.csv, optional tags.csv (UTF-8, quoted)."""
    folder = path if path.is_dir() else path.parent
    data = path if path.is_file() else folder / "ratings.csv"
    raw = _read_table(data)
    _require_columns(raw, ["userId", "movieId", "rating", "timestamp"], data)
    inter = _interactions(
        raw["userId"],
        raw["movieId"],
        _numeric(raw, "timestamp", pl.Int64, data, "timestamp", 2),
        _numeric(raw, "rating", pl.Float64, data, "rating", 2),
        "rating",
    )
    files = [data]

    movies_file = _require_file(folder / "movies.csv", "movies.csv")
    movies = _read_table(movies_file)
    _require_columns(movies, ["movieId", "title", "genres"], movies_file)
    files.append(movies_file)
    items = movies.select(
        pl.col("movieId").alias("item_id"),
        pl.col("title").str.strip_chars(),
        pl.col("genres")
        .str.split("|")
        .list.eval(
            pl.element().filter((pl.element() != "") & (pl.element() != "(no genres listed)"))
        ),
    )
    tags_file = folder / "tags.csv"
    if tags_file.is_file():
        tags = _read_table(tags_file)
        _require_columns(tags, ["movieId", "tag"], tags_file)
        files.append(tags_file)
        ranked = (
            tags.with_row_index("_row")
            .with_columns(pl.col("tag").str.strip_chars().str.to_lowercase())
            .filter(pl.col("tag").is_not_null() & (pl.col("tag") != ""))
            .group_by("movieId", "tag")
            .agg(pl.len().alias("_n"), pl.col("_row").min())
            .sort(["movieId", "_n", "_row"], descending=[False, True, False])
            .group_by("movieId", maintain_order=True)
            .agg(pl.col("tag").alias("tags"))
        )
        items = items.join(ranked, left_on="item_id", right_on="movieId", how="left")
    return Source(inter, _items(items), None, files, {"timestamps": True})


# ---------------------------------------------------------------------------------------------
# Amazon reviews (2014 and 2018 releases)


def _json_records(path: Path) -> list[dict[str, Any]]:
    """One object per line: strict JSON, else a Python-literal dict (2014 metadata)."""
    out = []
    text = _decode(path, _read_bytes(path))
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            try:
                obj = ast.literal_eval(line)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise DataError("not a JSON object or Python dict literal", path, n) from None
        if not isinstance(obj, dict):
            raise DataError("expected one JSON object per line", path, n)
        out.append(obj)
    return out


def _flatten(value: Any) -> list[str]:
    out: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif v is not None and str(v).strip():
            s = str(v).strip()
            if s not in out:
                out.append(s)

    walk(value)
    return out


def _price(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        s = value.strip().replace("$", "").replace(",", "").split("-")[0].strip()
        try:
            return float(s)
        except ValueError:
            return None
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value if v)
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def _amazon_files(path: Path, cfg: DataConfig) -> tuple[Path, Path | None]:
    meta = Path(cfg.items_path) if cfg.items_path else None
    if path.is_dir():
        cands = sorted(
            p
            for p in path.iterdir()
            if p.is_file()
            and any(p.name.endswith(s) for s in (".json", ".json.gz", ".jsonl", ".jsonl.gz"))
        )
        metas = [p for p in cands if p.name.startswith("meta")]
        reviews = [p for p in cands if not p.name.startswith("meta")]
        if not reviews:
            raise DataError("no review file (*.json, *.json.gz, *.jsonl) in folder", path)
        if len(reviews) > 1:
            raise DataError(f"{len(reviews)} review files in folder; pass one with --input", path)
        if meta is None and metas:
            meta = metas[0]
        return reviews[0], meta
    if meta is None:
        # reviews_Toys_5.json -> meta_Toys.json; Industrial_5.json -> meta_Industrial.json
        key = path.name.split(".")[0].removeprefix("reviews_").removesuffix("_5")
        metas = sorted(p for p in path.parent.glob("meta*") if p.is_file())
        same = [p for p in metas if p.name.split(".")[0].removeprefix("meta_") == key]
        meta = same[0] if same else metas[0] if len(metas) == 1 else None
    return path, meta


REVIEW_SCHEMA = {
    "reviewerID": pl.Utf8,
    "asin": pl.Utf8,
    "overall": pl.Float64,
    "unixReviewTime": pl.Int64,
}


def _amazon_reviews_fast(path: Path) -> pl.DataFrame | None:
    """Strict JSON lines with the usual field types, parsed by polars; None to fall back."""
    try:
        if path.suffix == ".gz":
            import io

            df = pl.read_ndjson(io.BytesIO(_read_bytes(path)), schema=REVIEW_SCHEMA)
        else:
            df = pl.read_ndjson(path, schema=REVIEW_SCHEMA)
    except (pl.exceptions.PolarsError, OSError, ValueError):
        return None
    if df["reviewerID"].null_count() or df["asin"].null_count():
        return None  # the line-by-line reader names the bad line
    return _interactions(
        df["reviewerID"], df["asin"], df["unixReviewTime"], df["overall"], "review"
    )


def _amazon_reviews(path: Path) -> pl.DataFrame:
    """Line by line: strict JSON, else Python dict literals; errors name the line."""
    users, items, times, values = [], [], [], []
    for n, r in enumerate(_json_records(path), 1):
        for key in ("reviewerID", "asin"):
            if key not in r:
                raise DataError(f"missing field {key!r}", path, n, key)
        t = r.get("unixReviewTime")
        if t is not None:
            try:
                if isinstance(t, bool) or not isinstance(t, (int, float, str)):
                    raise ValueError(t)
                t = int(float(t)) if not isinstance(t, int) else t
            except (ValueError, OverflowError):
                raise DataError(f"non-numeric timestamp {t!r}", path, n, "unixReviewTime") from None
        users.append(None if r["reviewerID"] is None else str(r["reviewerID"]))
        items.append(None if r["asin"] is None else str(r["asin"]))
        times.append(t)
        v = r.get("overall")
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        values.append(float(v) if ok else None)
    return _interactions(
        pl.Series(users, dtype=pl.Utf8),
        pl.Series(items, dtype=pl.Utf8),
        pl.Series(times, dtype=pl.Int64),
        pl.Series(values, dtype=pl.Float64),
        "review",
    )


def load_amazon(path: Path, cfg: DataConfig) -> Source:
    """Amazon review JSON lines (2014 or 2018: reviewerID, asin, overall, unixReviewTime) and the
    metadata JSON lines (title, brand, categories/category, price, description) from
    ``data.items_path`` or a ``meta*`` file next to the reviews."""
    reviews_path, meta_path = _amazon_files(path, cfg)
    _require_file(reviews_path)
    inter = _amazon_reviews_fast(reviews_path)
    if inter is None:
        inter = _amazon_reviews(reviews_path)
    files = [reviews_path]
    if meta_path is not None:
        _require_file(meta_path, "metadata file")
        rows = []
        for r in _json_records(meta_path):
            if r.get("asin") is None:
                continue
            cats = r.get("categories", r.get("category"))
            rows.append(
                {
                    "item_id": str(r["asin"]),
                    "title": _text(r.get("title")),
                    "brand": _text(r.get("brand")),
                    "categories": _flatten(cats),
                    "price": _price(r.get("price")),
                    "description": _text(r.get("description")),
                }
            )
        files.append(meta_path)
        items_df = pl.DataFrame(
            rows,
            schema={
                "item_id": pl.Utf8,
                "title": pl.Utf8,
                "brand": pl.Utf8,
                "categories": pl.List(pl.Utf8),
                "price": pl.Float64,
                "description": pl.Utf8,
            },
        )
    else:
        items_df = pl.DataFrame({"item_id": pl.Series([], dtype=pl.Utf8)})
    return Source(inter, _items(items_df), None, files, {"timestamps": True})


# ---------------------------------------------------------------------------------------------
# RecBole atomic files


def _atomic_table(path: Path) -> pl.DataFrame:
    df = _read_table(path, separator="\t", quote_char=None)
    df.columns = [c.split(":")[0] for c in df.columns]
    return df


def _index_map(path: Path | None) -> dict[str, str] | None:
    if path is None or not path.is_file():
        return None
    out = {}
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        f = line.split("\t")
        if len(f) != 2:
            raise DataError("expected 'original_id<TAB>index'", path, n)
        out[f[1].strip()] = f[0].strip()
    return out


def _chain(rows: list[tuple[tuple[str, ...], str]], user: str, path: Path) -> list[str]:
    """Recover one user's sequence from (history <= 50, next item) rows."""
    by_hist: dict[tuple[str, ...], list[str]] = {}
    for hist, target in rows:
        by_hist.setdefault(hist, []).append(target)
    window = max(len(h) for h, _ in rows)
    start = min(rows, key=lambda r: len(r[0]))
    seq = list(start[0])
    while True:
        nxt = by_hist.get(tuple(seq[-window:]))
        if not nxt:
            break
        seq.append(nxt.pop(0))
    if len(seq) != len(rows) + 1:
        raise DataError(
            f"cannot chain the rows of user {user!r} into one sequence "
            f"({len(seq)} of {len(rows) + 1} events)",
            path,
        )
    return seq


def load_atomic(path: Path, cfg: DataConfig) -> Source:
    """RecBole atomic files: a UniSRec-style folder (``X.train/valid/test.inter`` with
    ``item_id_list`` histories, ``X.text``, ``X.item2index``, ``X.user2index``) whose full sequences
    are recovered by chaining; or a plain ``X.inter`` with user_id / item_id / timestamp."""
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        trains = sorted(folder.glob("*.train.inter"))
        plain = sorted(p for p in folder.glob("*.inter") if p.name.count(".") == 1)
        if trains:
            return _load_atomic_chained(trains[0])
        if plain:
            return _load_atomic_plain(plain[0])
        raise DataError("no *.inter file in folder", folder)
    _require_file(path)
    if any(path.name.endswith(f".{p}.inter") for p in ("train", "valid", "test")):
        return _load_atomic_chained(path.with_name(path.name.rsplit(".", 2)[0] + ".train.inter"))
    return _load_atomic_plain(path)


def _load_atomic_chained(train_path: Path) -> Source:
    stem = train_path.name[: -len(".train.inter")]
    folder = train_path.parent
    parts = {p: folder / f"{stem}.{p}.inter" for p in ("train", "valid", "test")}
    per_user: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    given: dict[str, pl.DataFrame] = {}
    for part, p in parts.items():
        df = _atomic_table(p)
        _require_columns(df, ["user_id", "item_id_list", "item_id"], p)
        null = df["user_id"].is_null() | df["item_id"].is_null()
        if null.any():
            raise DataError("missing user_id or item_id", p, int(null.arg_true()[0]) + 2)
        hists = df["item_id_list"].fill_null("").str.split(" ").to_list()
        for u, h, t in zip(df["user_id"].to_list(), hists, df["item_id"].to_list()):
            per_user.setdefault(u, []).append((tuple(x for x in h if x), t))
        if part != "train":
            given[part] = df.select("user_id", "item_id")
    users_order = sorted(per_user, key=lambda u: (len(u), u))
    seq_users: list[str] = []
    seq_items: list[str] = []
    for u in users_order:
        seq = _chain(per_user[u], u, parts["train"])
        seq_users.extend([u] * len(seq))
        seq_items.extend(seq)

    umap = _index_map(folder / f"{stem}.user2index")
    imap = _index_map(folder / f"{stem}.item2index")
    files = [parts["train"], parts["valid"], parts["test"]]
    files += [
        p for p in (folder / f"{stem}.user2index", folder / f"{stem}.item2index") if p.is_file()
    ]

    def conv(values: pl.Series, mapping: dict[str, str] | None, what: str) -> pl.Series:
        if mapping is None:
            return values
        out = values.replace_strict(mapping, default=None)
        if out.null_count():
            bad = values.filter(out.is_null())[0]
            raise DataError(f"{what} index {bad!r} not in the {what}2index file", folder)
        return out

    inter = _interactions(
        conv(pl.Series(seq_users), umap, "user"),
        conv(pl.Series(seq_items), imap, "item"),
        event="interaction",
    )
    given = {
        k: v.with_columns(conv(v["user_id"], umap, "user"), conv(v["item_id"], imap, "item"))
        for k, v in given.items()
    }

    text_path = folder / f"{stem}.text"
    if text_path.is_file():
        t = _atomic_table(text_path)
        _require_columns(t, ["item_id", "text"], text_path)
        files.append(text_path)
        text = t["text"].str.strip_chars()
        # "title. Root Category ... path. brand." -- keep the title part for display.
        cut = text.str.find(". Industrial & Scientific", literal=True)
        items = pl.DataFrame({"item_id": t["item_id"], "text": text}).with_columns(
            pl.when(cut.is_not_null()).then(text.str.slice(0, cut)).otherwise(text).alias("title")
        )
    else:
        ids = sorted(set(imap.values())) if imap else []
        items = pl.DataFrame({"item_id": pl.Series(ids, dtype=pl.Utf8)})
    if imap:
        known = set(items["item_id"].to_list())
        extra = [i for i in imap.values() if i not in known]
        if extra:
            items = pl.concat([items, pl.DataFrame({"item_id": extra})], how="diagonal")
    return Source(
        inter,
        _items(items),
        None,
        files,
        {"timestamps": False, "order": "chained RecBole histories (chronological)"},
        given_targets=given,
    )


def _load_atomic_plain(path: Path) -> Source:
    df = _atomic_table(path)
    _require_columns(df, ["user_id", "item_id"], path)
    ts = (
        _numeric(df, "timestamp", pl.Int64, path, "timestamp", 2)
        if "timestamp" in df.columns
        else None
    )
    val_col = next((c for c in ("rating", "value", "label") if c in df.columns), None)
    val = _numeric(df, val_col, pl.Float64, path, val_col, 2) if val_col else None
    inter = _interactions(df["user_id"], df["item_id"], ts, val, "interaction")
    files = [path]
    item_path = path.with_suffix(".item")
    items = pl.DataFrame({"item_id": pl.Series([], dtype=pl.Utf8)})
    if item_path.is_file():
        it = _atomic_table(item_path)
        _require_columns(it, ["item_id"], item_path)
        files.append(item_path)
        cols: list[pl.Expr] = [pl.col("item_id")]
        title = next((c for c in ("title", "movie_title", "name") if c in it.columns), None)
        if title:
            cols.append(pl.col(title).alias("title"))
        for src, dst in (
            ("genre", "genres"),
            ("class", "genres"),
            ("genres", "genres"),
            ("categories", "categories"),
            ("category", "categories"),
        ):
            if src in it.columns and dst not in [c.meta.output_name() for c in cols]:
                cols.append(pl.col(src).str.split(" ").alias(dst))
        if "brand" in it.columns:
            cols.append(pl.col("brand"))
        if "price" in it.columns:
            cols.append(pl.col("price").cast(pl.Float64, strict=False))
        items = it.select(cols)
    return Source(inter, _items(items), None, files, {"timestamps": ts is not None})


# ---------------------------------------------------------------------------------------------
# Generic CSV / Parquet with a column mapping


def load_table(path: Path, cfg: DataConfig, kind: str) -> Source:
    """A CSV (UTF-8, header) or Parquet event log; columns named by ``cfg`` (user_col, ...)."""
    _require_file(path)
    cols = [cfg.user_col, cfg.item_col, cfg.time_col, cfg.value_col, cfg.event_col]
    if kind == "parquet":
        try:
            lf = pl.scan_parquet(path)
            names = lf.collect_schema().names()
            _require_columns(pl.DataFrame(schema=dict.fromkeys(names, pl.Utf8)), cols, path)
            df = lf.select([c for c in dict.fromkeys(cols) if c]).collect()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise DataError(f"unreadable Parquet file: {_first_line(exc)}", path) from None
        df = df.with_columns(pl.col(c).cast(pl.Utf8) for c in (cfg.user_col, cfg.item_col))
        offset = 1
    else:
        df = _read_table(path)
        _require_columns(df, cols, path)
        offset = 2
    ts = None
    if cfg.time_col:
        ts = (
            df[cfg.time_col].cast(pl.Int64)
            if df[cfg.time_col].dtype.is_integer()
            else _numeric(
                df.with_columns(pl.col(cfg.time_col).cast(pl.Utf8)),
                cfg.time_col,
                pl.Int64,
                path,
                "timestamp",
                offset,
            )
        )
    val = None
    if cfg.value_col:
        val = (
            df[cfg.value_col].cast(pl.Float64)
            if df[cfg.value_col].dtype.is_numeric()
            else _numeric(df, cfg.value_col, pl.Float64, path, "value", offset)
        )
    event = df[cfg.event_col].cast(pl.Utf8) if cfg.event_col else None
    inter = _interactions(df[cfg.user_col], df[cfg.item_col], ts, val, event)
    files = [path]
    items = pl.DataFrame({"item_id": pl.Series([], dtype=pl.Utf8)})
    if cfg.items_path:
        items, ipath = _load_items_table(Path(cfg.items_path), cfg, path.parent)
        files.append(ipath)
    return Source(inter, items, None, files, {"timestamps": ts is not None})


def _load_items_table(ipath: Path, cfg: DataConfig, base: Path) -> tuple[pl.DataFrame, Path]:
    if not ipath.is_absolute() and not ipath.exists() and (base / ipath).exists():
        ipath = base / ipath
    if ipath.suffix == ".parquet":
        _require_file(ipath)
        try:
            it = pl.read_parquet(ipath)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise DataError(f"unreadable Parquet file: {_first_line(exc)}", ipath) from None
    else:
        it = _read_table(ipath)
    _require_columns(it, [cfg.item_id_col, *cfg.item_text_cols], ipath)
    sel = [pl.col(cfg.item_id_col).cast(pl.Utf8).alias("item_id")]
    for c in cfg.item_text_cols:
        if c == cfg.item_id_col:
            continue
        dtype = ITEMS_SCHEMA.get(c)
        if isinstance(dtype, pl.List) and it[c].dtype == pl.Utf8:
            sel.append(pl.col(c).str.split("|").alias(c))
        elif dtype == pl.Float64 and it[c].dtype == pl.Utf8:
            sel.append(pl.col(c).map_elements(_price, return_dtype=pl.Float64).alias(c))
        else:
            sel.append(pl.col(c))
    return _items(it.select(sel)), ipath


# ---------------------------------------------------------------------------------------------

LOADERS: dict[str, Callable[[Path, DataConfig], Source]] = {
    "movielens-100k": load_movielens_100k,
    "movielens-1m": load_movielens_1m,
    "movielens-latest": load_movielens_latest,
    "amazon": load_amazon,
    "atomic": load_atomic,
    "csv": lambda p, c: load_table(p, c, "csv"),
    "parquet": lambda p, c: load_table(p, c, "parquet"),
}


def load_source(fmt: str, path: Path, cfg: DataConfig) -> Source:
    """Dispatch to the loader of ``fmt``; DataError for an unknown format or a missing input."""
    if fmt not in LOADERS:
        raise DataError(f"unknown format {fmt!r} (known: {', '.join(LOADERS)})")
    if not path.exists():
        raise DataError("input not found", path)
    try:
        return LOADERS[fmt](path, cfg)
    except pl.exceptions.PolarsError as exc:  # malformed input that slipped past the checks
        raise DataError(f"malformed {fmt} input: {_first_line(exc)}", path) from None
