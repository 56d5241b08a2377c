"""Retrieval model + vector index composed: ``build_index``, ``retrieve``, ``add_items``,
``remove_items`` and ``index_candidates`` (a first-stage candidate function for ranking).

RUN/index holds the VectorIndex files (index/vector_index.py) plus two small overlays that keep
incremental changes alive across ``rec build-index`` (e.g. after retraining the towers):

    RUN/index/extra_items.parquet   items added with ``rec index add`` (item_id, title, text)
    RUN/index/removed_items.json    item ids removed with ``rec index remove``
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from rec.artifacts import RunDir, read_json, write_json
from rec.errors import ArtifactError, ConfigError, DataError

log = logging.getLogger(__name__)

EXTRA_ITEMS = "extra_items.parquet"
REMOVED_ITEMS = "removed_items.json"
ENCODE_BATCH = 4096


def load_retrieval_model(folder: Path, device: str = "cpu") -> Any:
    """The run's two-tower model (retrieval.model.RetrievalModel); tests replace this function."""
    from retrieval.model import RetrievalModel

    return RetrievalModel.load(folder, device=device)


class _Ctx:
    """What every operation needs: the run, its config, the model and its encoder hash."""

    def __init__(self, run_dir: str | Path, device: str | None = None) -> None:
        self.run = RunDir(run_dir).require()
        self.cfg = self.run.config()
        folder = self.run.require_stage("retrieval", "model.json")
        from rec.device import resolve_device

        self.model = load_retrieval_model(folder, resolve_device(device or self.cfg.device))
        self.encoder_sha256 = str(self.model.encoder_sha256)  # a property that hashes: once
        self.index_dir = self.run.stage("index")

    def overlays(self) -> tuple[pl.DataFrame | None, list[str]]:
        from index.vector_index import resolve_index_dir

        try:
            return _overlays(resolve_index_dir(self.index_dir))
        except ArtifactError:  # no index yet: nothing added or removed
            return None, []

    def load_index(self) -> Any:
        from index.vector_index import VectorIndex

        return VectorIndex.load(
            self.index_dir, expected_encoder_sha256=self.encoder_sha256, cfg=self.cfg.index
        )

    def encode_items(self, items: pl.DataFrame) -> Any:
        import numpy as np

        parts = [
            self.model.encode_items(items.slice(s, ENCODE_BATCH))
            for s in range(0, len(items), ENCODE_BATCH)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def save(
        self, vi: Any, extra: pl.DataFrame | None, removed: list[str], action: str
    ) -> dict[str, Any]:
        def write_overlays(tmp: Path) -> None:
            if extra is not None and len(extra):
                extra.write_parquet(tmp / EXTRA_ITEMS)
            if removed:
                write_json(tmp / REMOVED_ITEMS, removed)

        vi.save(self.index_dir, extra=write_overlays)
        info = {k: v for k, v in vi.describe().items() if k != "tombstones"}
        info.update(
            {
                "use_gpu": bool(vi.use_gpu),
                "extra_items": 0 if extra is None else len(extra),
                "removed_items": len(removed),
                "last_action": action,
            }
        )
        self.run.update_manifest(part="index", info=info)
        return info


def build_index(run_dir: str | Path, device: str | None = None) -> dict[str, Any]:
    """Encode every catalogue item (clicked or not) with the run's item tower and build RUN/index.

    Items added earlier with ``add_items`` are re-encoded and kept; removed ones stay removed.

    Returns:
        What the manifest records for the index (factory, metric, dim, ntotal, ...) plus
        ``encode_s`` and ``build_s``.
    """
    from index.vector_index import VectorIndex

    ctx = _Ctx(run_dir, device)
    from rec.data import load_dataset

    items = load_dataset(ctx.run.dataset_dir()).items
    extra, removed = ctx.overlays()
    cols = ["item_id", "title", "text"]
    catalogue = items.select([c for c in cols if c in items.columns])
    if extra is not None and len(extra):
        catalogue = pl.concat(
            [
                catalogue.filter(~pl.col("item_id").is_in(extra["item_id"])),
                extra.select(catalogue.columns),
            ],
            how="vertical_relaxed",
        )
    if removed:
        catalogue = catalogue.filter(~pl.col("item_id").is_in(removed))
    if not len(catalogue):
        raise DataError(f"{ctx.run.dataset_dir()}: the catalogue has no items to index")
    full = items.filter(pl.col("item_id").is_in(catalogue["item_id"]))
    if extra is not None and len(extra):  # added items: encoded from their text alone
        full = pl.concat(
            [full.filter(~pl.col("item_id").is_in(extra["item_id"])), extra], how="diagonal_relaxed"
        )
    t0 = time.perf_counter()
    vectors = ctx.encode_items(full)
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    vi = VectorIndex.build(
        vectors,
        full["item_id"].cast(pl.Utf8).to_list(),
        ctx.cfg.index,
        encoder_sha256=ctx.encoder_sha256,
        metric=ctx.model.metric,
    )
    build_s = time.perf_counter() - t0
    info = ctx.save(vi, extra, removed, "build")
    log.info(
        "index: %d items, %s, encode %.1fs, build %.1fs", vi.ntotal, vi.factory, encode_s, build_s
    )
    return {
        **info,
        "encode_s": round(encode_s, 3),
        "build_s": round(build_s, 3),
        "path": str(ctx.index_dir),
    }


def retrieve(
    run_dir: str | Path,
    user: str | None = None,
    history: Sequence[str] | None = None,
    k: int = 100,
    device: str | None = None,
) -> list[dict[str, Any]]:
    """Top-``k`` items for a known user (their whole history in the run's dataset) or for a
    given ``history`` of item ids (oldest first); items of the history are never returned.

    Returns:
        Rows ``{rank, item_id, score, title}``, best first.
    """
    _check_k(k)
    if (user is None) == (history is None):
        raise ConfigError("give either a user id or a history of item ids, not both or neither")
    ctx = _Ctx(run_dir, device)
    from rec.data import load_dataset, sort_events

    ds = load_dataset(ctx.run.dataset_dir())
    vi = ctx.load_index()
    timestamps = None
    if user is not None:
        events = sort_events(ds.interactions.filter(pl.col("user_id") == str(user)))
        if not len(events):
            raise DataError(
                f"unknown user {user!r}: no interactions in the run's dataset "
                "(use --history ITEM,ITEM for a new user)"
            )
        hist = events["item_id"].cast(pl.Utf8).to_list()
        ts = events["timestamp"].to_list()
        timestamps = None if any(t is None for t in ts) else [ts]
    else:
        hist = [str(h).strip() for h in history or [] if str(h).strip()]
        if not hist:
            raise DataError("the history is empty; give at least one item id")
        known = set(ctx.model.item_ids)
        unknown = [h for h in hist if h not in known and h not in vi]
        if unknown:
            raise DataError(
                f"unknown item {unknown[0]!r} in the history"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            )
    queries = ctx.model.encode_users([hist], timestamps)
    ids, scores = vi.search(queries, k, exclude=[set(hist)])
    titles = _titles(ds.items, ctx.index_dir, [s for s in ids[0] if s is not None])
    return [
        {"rank": r + 1, "item_id": s, "score": float(sc), "title": titles.get(s)}
        for r, (s, sc) in enumerate(zip(ids[0], scores[0]))
        if s is not None
    ]


def index_candidates(
    run_dir: str | Path, device: str | None = None, batch: int = 1024
) -> Callable[[list[list[str]], int], list[list[str]]]:
    """A candidate function ``(histories, k) -> item ids`` over RUN/index (seen items removed),
    for the ranking stage and evaluation; histories are encoded and searched in batches."""
    ctx = _Ctx(run_dir, device)
    vi = ctx.load_index()

    def fn(histories: list[list[str]], k: int) -> list[list[str]]:
        _check_k(k)
        out: list[list[str]] = []
        for s in range(0, len(histories), batch):
            chunk = [list(map(str, h)) for h in histories[s : s + batch]]
            ids, _ = vi.search(ctx.model.encode_users(chunk), k, exclude=[set(h) for h in chunk])
            out.extend([x for x in row if x is not None] for row in ids)
        return out

    return fn


def add_items(
    run_dir: str | Path, items_file: str | Path, device: str | None = None
) -> dict[str, Any]:
    """Add (or replace) items from a JSON-lines, Parquet or CSV file with ``item_id`` and
    ``text`` (and optionally ``title``): encoded from their text by the item tower, without
    retraining, and recorded in RUN/index/extra_items.parquet so titles resolve."""
    new = read_items_file(items_file)
    ctx = _Ctx(run_dir, device)
    vi = ctx.load_index()
    extra, removed = ctx.overlays()
    ids = new["item_id"].to_list()
    replaced = sum(i in vi for i in ids)
    vi.add(ctx.encode_items(new), ids)
    keep = ["item_id", "title", "text"]
    rows = new.select(keep)
    extra = (
        rows
        if extra is None
        else pl.concat(
            [extra.filter(~pl.col("item_id").is_in(ids)).select(keep), rows], how="vertical_relaxed"
        )
    )
    removed = [r for r in removed if r not in set(ids)]
    info = ctx.save(vi, extra, removed, "add")
    return {"added": len(ids) - replaced, "replaced": replaced, "ntotal": info["ntotal"]}


def remove_items(
    run_dir: str | Path, ids: Sequence[str], device: str | None = None
) -> dict[str, Any]:
    """Remove items from RUN/index by id; an unknown id is an error and nothing is removed."""
    ids = list(dict.fromkeys(str(i).strip() for i in ids if str(i).strip()))
    if not ids:
        raise DataError("no item ids to remove")
    ctx = _Ctx(run_dir, device)
    vi = ctx.load_index()
    extra, removed = ctx.overlays()
    vi.remove(ids)
    if extra is not None:
        extra = extra.filter(~pl.col("item_id").is_in(ids))
    removed = list(dict.fromkeys([*removed, *ids]))
    info = ctx.save(vi, extra, removed, "remove")
    return {"removed": len(ids), "ntotal": info["ntotal"]}


def read_items_file(path: str | Path) -> pl.DataFrame:
    """Items to add: ``.jsonl``/``.json`` (JSON lines), ``.parquet`` or ``.csv`` with ``item_id``,
    ``text`` and optional ``title``; returns (item_id str, title str, text str)."""
    p = Path(path)
    if not p.is_file():
        raise DataError("items file not found", path=p)
    suffix = p.suffix.lower()
    try:
        if suffix in (".jsonl", ".json", ".ndjson"):
            df = pl.read_ndjson(p)
        elif suffix == ".parquet":
            df = pl.read_parquet(p)
        elif suffix == ".csv":
            df = pl.read_csv(p, infer_schema_length=0)
        else:
            raise DataError("unsupported items file; use .jsonl, .parquet or .csv", path=p)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise DataError(f"unreadable items file ({str(exc).splitlines()[0]})", path=p) from None
    for col in ("item_id", "text"):
        if col not in df.columns:
            raise DataError(f"missing column {col!r} (need item_id and text)", path=p)
    if "title" not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.Utf8).alias("title"))
    df = df.with_columns(
        pl.col("item_id").cast(pl.Utf8), pl.col("text").cast(pl.Utf8), pl.col("title").cast(pl.Utf8)
    )
    if not len(df):
        raise DataError("no items in the file", path=p)
    bad = df.with_row_index("_row").filter(
        pl.col("item_id").is_null()
        | (pl.col("item_id").str.strip_chars() == "")
        | pl.col("text").is_null()
        | (pl.col("text").str.strip_chars() == "")
    )
    if len(bad):
        raise DataError("empty item_id or text", path=p, line=int(bad["_row"][0]) + 1)
    dup = df.filter(pl.col("item_id").is_duplicated())
    if len(dup):
        raise DataError(f"duplicate item id {dup['item_id'][0]!r}", path=p)
    return df


def _check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ConfigError(f"k must be a positive integer, got {k!r}")


def _overlays(index_dir: Path) -> tuple[pl.DataFrame | None, list[str]]:
    extra = None
    if (index_dir / EXTRA_ITEMS).is_file():
        try:
            extra = pl.read_parquet(index_dir / EXTRA_ITEMS)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise ArtifactError(f"{index_dir / EXTRA_ITEMS}: unreadable ({exc})") from None
    removed: list[str] = []
    if (index_dir / REMOVED_ITEMS).is_file():
        removed = [str(x) for x in read_json(index_dir / REMOVED_ITEMS)]
    return extra, removed


def _titles(items: pl.DataFrame, index_dir: Path, ids: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    if "title" in items.columns:
        sub = items.filter(pl.col("item_id").is_in(ids))
        out.update(zip(sub["item_id"].to_list(), sub["title"].to_list()))
    extra, _ = _overlays(index_dir)
    if extra is not None:
        sub = extra.filter(pl.col("item_id").is_in(ids))
        out.update(zip(sub["item_id"].to_list(), sub["title"].to_list()))
    return out
