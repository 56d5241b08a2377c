"""Library entry point of the data layer: raw source -> canonical dataset directory.

``prepare_dataset(cfg, out_dir)``: load (rec.data.loaders) -> clean (rec.data.clean) -> item text
(rec.data.text) -> splits (leave-one-out always; the global temporal split when the source has
timestamps) -> ``save_dataset`` (atomic: a failure leaves a previous ``out_dir`` untouched).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import polars as pl

from rec.artifacts import sha256_file
from rec.config import DataConfig, to_dict
from rec.data.clean import clean_interactions
from rec.data.dataset import Split, save_dataset, splits_for, temporal_cuts
from rec.data.loaders import LOADERS, load_source
from rec.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA
from rec.data.text import build_item_text, text_coverage
from rec.errors import DataError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]


def data_root() -> Path | None:
    """Where relative input paths are looked up: REC_DATA_DIR, else ../shared/data next to the
    repository when it exists."""
    env = os.environ.get("REC_DATA_DIR")
    if env:
        return Path(env).expanduser()
    cand = REPO.parent / "shared" / "data"
    return cand if cand.is_dir() else None


def resolve_input(path: str | Path) -> Path:
    """``path`` itself when it exists or is absolute, else ``data_root() / path`` when that exists."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    root = data_root()
    if root is not None and (root / p).exists():
        return root / p
    return p


def prepare_dataset(cfg: DataConfig, out_dir: str | Path) -> Path:
    """Build the canonical dataset described by ``cfg`` into ``out_dir`` and return its path.

    Raises DataError (one line, naming the file) for unknown formats, missing or malformed input
    and data that is empty after cleaning; nothing is written unless everything succeeded.
    """
    t0 = time.perf_counter()
    if not cfg.format:
        raise DataError(f"no data format given (--format or data.format: {', '.join(LOADERS)})")
    if cfg.format not in LOADERS:
        raise DataError(f"unknown format {cfg.format!r} (known: {', '.join(LOADERS)})")
    if not cfg.input:
        raise DataError("no input given (--input or data.input)")
    if cfg.kcore < 0:
        raise DataError(f"data.kcore must be >= 0, not {cfg.kcore}")
    path = resolve_input(cfg.input)
    src = load_source(cfg.format, path, cfg)
    log.info(
        "loaded %d events from %s in %.1fs", src.interactions.height, path, time.perf_counter() - t0
    )

    inter, report = clean_interactions(
        src.interactions, dedupe=cfg.dedupe, min_value=cfg.min_value, kcore=cfg.kcore, source=path
    )
    src.interactions = inter  # let the raw frame go
    has_time = bool(src.info.get("timestamps")) and inter["timestamp"].null_count() == 0

    items, n_missing_meta = _catalogue(src.items, inter)
    fields = list(cfg.text_fields)
    if cfg.format in ("csv", "parquet"):
        fields += [c for c in cfg.item_text_cols if c not in fields and c != cfg.item_id_col]
    items = build_item_text(items, fields, cfg.max_tags)
    log.info("cleaned to %d events, item text built: %.1fs", inter.height, time.perf_counter() - t0)

    if cfg.split == "temporal" and not has_time:
        raise DataError(
            "data.split = 'temporal' needs timestamps; this source has only an order", path
        )
    splits = splits_for(inter, has_time, cfg.temporal_valid_frac, cfg.temporal_test_frac)
    log.info("splits %s: %.1fs", [s.name for s in splits], time.perf_counter() - t0)
    temporal: dict[str, Any] | None = None
    if has_time:
        t_valid, t_test = temporal_cuts(inter, cfg.temporal_valid_frac, cfg.temporal_test_frac)
        temporal = {
            "t_valid": t_valid,
            "t_test": t_test,
            "valid_frac": cfg.temporal_valid_frac,
            "test_frac": cfg.temporal_test_frac,
            "events": {p: getattr(splits[1], p).height for p in ("train", "valid", "test")},
        }

    with_events = items.filter(pl.col("n_events") > 0)
    counts = {
        "events": inter.height,
        "users": report["users"],
        "items_catalogue": items.height,
        "items_with_events": with_events.height,
        "items_without_events": items.height - with_events.height,
        "items_missing_metadata": n_missing_meta,
        "raw_events": report["input_events"],
        "raw_users": report["input_users"],
        "raw_items": report["input_items"],
    }
    hashes = {str(f.resolve()): sha256_file(f) for f in src.files}
    log.info("inputs hashed: %.1fs", time.perf_counter() - t0)
    meta: dict[str, Any] = {
        "source": {
            "format": cfg.format,
            "input": str(path.resolve()),
            "files": hashes,
            **{k: v for k, v in src.info.items() if k != "timestamps"},
        },
        "timestamps": has_time,
        "order": "stable sort by (timestamp, order); order = row order in the source"
        if has_time
        else "no timestamps: order is the source's chronological order",
        "counts": counts,
        "cleaning": report,
        "text": {
            "fields": fields,
            "max_tags": cfg.max_tags,
            "coverage_catalogue": text_coverage(items),
            "coverage_with_events": text_coverage(with_events),
        },
        "catalogue": "items.parquet keeps every catalogue item; n_events = events after "
        "cleaning (0 = no events: filter n_events > 0 for the items with events)",
        "temporal": temporal,
        "schema": {
            "interactions": {k: str(v) for k, v in INTERACTIONS_SCHEMA.items()},
            "items": {**{k: str(v) for k, v in ITEMS_SCHEMA.items()}, "n_events": "Int64"},
        },
        "config": to_dict(dataclasses.replace(cfg, input=str(path))),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if src.given_targets is not None:
        meta["given_split"] = _compare_given(splits[0], src.given_targets)
    out = save_dataset(out_dir, inter, items, meta, users=src.users, splits=splits)
    log.info("prepared %s in %.1fs", out, time.perf_counter() - t0)
    return out


def _catalogue(items: pl.DataFrame, inter: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Source catalogue + any event item it lacks (no metadata), with ``n_events``."""
    counts = inter.group_by("item_id").agg(pl.len().cast(pl.Int64).alias("n_events"))
    missing = counts.join(items.select("item_id"), on="item_id", how="anti")
    if missing.height:
        first = inter.select("item_id").unique(maintain_order=True)
        missing = first.join(missing.select("item_id"), on="item_id", how="semi")
        items = pl.concat([items, missing], how="diagonal_relaxed")
    items = items.join(counts, on="item_id", how="left", maintain_order="left")
    return items.with_columns(pl.col("n_events").fill_null(0)), missing.height


def _compare_given(loo: Split, given: dict[str, pl.DataFrame]) -> dict[str, Any]:
    """Does leave-one-out on the recovered sequences give the source's own valid/test targets?"""
    out: dict[str, Any] = {}
    for part in ("valid", "test"):
        ours = getattr(loo, part).select("user_id", "item_id").sort("user_id")
        theirs = given[part].select("user_id", "item_id").sort("user_id")
        out[f"{part}_equal"] = ours.equals(theirs)
        out[f"{part}_rows"] = theirs.height
    return out
