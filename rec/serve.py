"""HTTP API over a run directory (FastAPI): recommend, retrieve, look up and add items.

``create_app(run_dir)`` loads the run once (retrieval model, FAISS index, reranker when the run
has one) into a ``Recommender`` and serves::

    GET  /health                      run, stages, number of indexed items
    GET  /recommend?user=ID&k=10      retrieve, then rerank when the run has a reranker
    POST /recommend                   {"user": ID} or {"history": [ids]}, "k", "rerank"
    GET  /retrieve?user=ID&k=100      retrieval only (also POST with a history)
    GET  /items/{item_id}             title and text of an item
    POST /items                       {"items": [{"item_id", "text", "title"}]}: add or replace

A RecError becomes a 4xx response ``{"error": "<one line>"}``; anything else a 500 with a fixed
message (the traceback goes to the server log, never into the response). The index is reloaded
when RUN/index changes on disk (``POST /items`` here, another worker, or ``rec index add``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from rec.errors import ArtifactError, ConfigError, DataError, RecError

log = logging.getLogger(__name__)

MAX_K = 1000  # larger k would let one request allocate without bound
MAX_NEW_ITEMS = 10_000


class UnknownIdError(DataError):
    """A user or item id the run does not know (HTTP 404)."""


class UnavailableError(RecError):
    """The run lacks what the request needs, e.g. a reranker (HTTP 409)."""


def check_run(run_dir: str | Path) -> None:
    """Cheap start-up check (no model loading): a run with a retrieval model and an index."""
    from index.vector_index import resolve_index_dir
    from rec.artifacts import RunDir

    run = RunDir(run_dir).require()
    run.require_stage("retrieval", "model.json")
    resolve_index_dir(run.stage("index"))


@dataclass(frozen=True)
class _Catalogue:
    """What changes when items are added or removed; swapped as a whole on reload."""

    index: Any  # index.vector_index.VectorIndex
    items: dict[str, tuple[str | None, str | None]]  # item_id -> (title, text)
    rank_texts: Any  # ranking.train.TextTables, or None without a reranker
    stamp: tuple[str, int, int]  # index folder, inode and mtime of its index.json


class Recommender:
    """A run loaded once: user histories, retrieval model, index, optional reranker.

    Methods take string ids and return plain rows; they raise RecError for bad requests.
    """

    def __init__(self, run_dir: str | Path, device: str | None = None, max_k: int = MAX_K) -> None:
        from rec.artifacts import RunDir
        from rec.data import load_dataset, sort_events
        from rec.device import resolve_device
        from rec.pipeline.index import load_retrieval_model

        self.run = RunDir(run_dir).require()
        self.cfg = self.run.config()
        self.device = resolve_device(device or self.cfg.device)
        self.max_k = max_k
        t0 = time.perf_counter()
        ds = load_dataset(self.run.dataset_dir())
        self._base_items = ds.items  # every column: the reranker may read another text field
        events = sort_events(ds.interactions).select("user_id", "item_id", "timestamp")
        self._ev_items = events["item_id"].cast(pl.Utf8)
        self._ev_ts = events["timestamp"]
        users = events.group_by("user_id", maintain_order=True).len()
        ends = np.cumsum(users["len"].to_numpy())
        self._users = {
            u: (int(e - n), int(e))
            for u, n, e in zip(users["user_id"].to_list(), users["len"].to_list(), ends)
        }
        self.model = load_retrieval_model(
            self.run.require_stage("retrieval", "model.json"), self.device
        )
        self.encoder_sha256 = str(self.model.encoder_sha256)
        self._model_items = set(map(str, self.model.item_ids))
        self.reranker = None
        if (self.run.stage("ranking") / "ranking.json").is_file():
            from ranking.model import Reranker

            self.reranker = Reranker.load(self.run.stage("ranking"), device=self.device)
        self._lock = threading.Lock()
        self._cat = self._load_catalogue()
        log.info(
            "serving %s: %d users, %d items, stages %s, loaded in %.1fs",
            self.run.path,
            len(self._users),
            self._cat.index.ntotal,
            self.stages,
            time.perf_counter() - t0,
        )

    # ------------------------------------------------------------------ state

    @property
    def stages(self) -> list[str]:
        return ["retrieval", "index"] + (["ranking"] if self.reranker is not None else [])

    @property
    def n_items(self) -> int:
        return int(self.catalogue().index.ntotal)

    @property
    def n_users(self) -> int:
        return len(self._users)

    def _stamp(self) -> tuple[str, int, int]:
        from index.vector_index import resolve_index_dir

        d = resolve_index_dir(self.run.stage("index"))
        st = (d / "index.json").stat()  # rewritten (a new file) by every save
        return str(d), st.st_ino, st.st_mtime_ns

    def _load_catalogue(self) -> _Catalogue:
        from index.vector_index import VectorIndex, resolve_index_dir
        from rec.pipeline.index import EXTRA_ITEMS

        stamp = self._stamp()
        vi = VectorIndex.load(
            self.run.stage("index"), expected_encoder_sha256=self.encoder_sha256, cfg=self.cfg.index
        )
        items = self._base_items
        extra_path = resolve_index_dir(self.run.stage("index")) / EXTRA_ITEMS
        if extra_path.is_file():  # items added without retraining (rec.pipeline.index.add_items)
            try:
                extra = pl.read_parquet(extra_path)
            except (pl.exceptions.PolarsError, OSError) as exc:
                raise ArtifactError(f"{extra_path}: unreadable ({exc})") from None
            items = pl.concat(
                [items.filter(~pl.col("item_id").is_in(extra["item_id"])), extra],
                how="diagonal_relaxed",
            )
        ids = items["item_id"].cast(pl.Utf8).to_list()
        none = [None] * len(ids)
        titles = items["title"].cast(pl.Utf8).to_list() if "title" in items.columns else none
        texts_ = items["text"].cast(pl.Utf8).to_list() if "text" in items.columns else none
        table = dict(zip(ids, zip(titles, texts_)))
        texts = None
        if self.reranker is not None:
            from ranking.train import TextTables

            texts = TextTables.from_items(items, self.reranker.cfg)
        return _Catalogue(vi, table, texts, stamp)

    def catalogue(self) -> _Catalogue:
        """The current items and index, reloaded first when RUN/index changed on disk."""
        cat = self._cat
        try:
            fresh = self._stamp() == cat.stamp
        except (ArtifactError, OSError):
            fresh = True  # mid-swap or gone: keep serving what is loaded
        if fresh:
            return cat
        with self._lock:
            if self._cat is cat:
                try:
                    self._cat = self._load_catalogue()
                    log.info("index reloaded: %d items", self._cat.index.ntotal)
                except (RecError, OSError) as exc:
                    log.warning(
                        "index changed but could not be reloaded (%s); keeping the old", exc
                    )
            return self._cat

    # ------------------------------------------------------------------ queries

    def item(self, item_id: str) -> dict[str, Any]:
        """Title and text of an item (also one removed from the index: ``in_index`` false)."""
        cat = self.catalogue()
        if item_id not in cat.items:
            raise UnknownIdError(f"unknown item {item_id!r}")
        title, text = cat.items[item_id]
        return {"item_id": item_id, "title": title, "text": text, "in_index": item_id in cat.index}

    def history(self, user: str | None, history: list[str] | None) -> tuple[list[str], Any]:
        """(item ids oldest first, timestamps or None) of a known user or a given history."""
        if (user is None) == (history is None):
            raise ConfigError("give either a user id or a history of item ids, not both or neither")
        if user is not None:
            span = self._users.get(user)
            if span is None:
                raise UnknownIdError(
                    f"unknown user {user!r}: no interactions in the run's dataset "
                    "(send a history of item ids instead)"
                )
            s, e = span
            ts = self._ev_ts[s:e].to_list()
            return self._ev_items[s:e].to_list(), None if any(t is None for t in ts) else [ts]
        hist = [str(h).strip() for h in history or [] if str(h).strip()]
        if not hist:
            raise DataError("the history is empty; give at least one item id")
        index = self.catalogue().index
        unknown = [h for h in hist if h not in self._model_items and h not in index]
        if unknown:
            raise DataError(
                f"unknown item {unknown[0]!r} in the history"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            )
        return hist, None

    def _check_k(self, k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        if k > self.max_k:
            raise ConfigError(f"k must be at most {self.max_k}, got {k}")
        return k

    def retrieve(
        self, user: str | None = None, history: list[str] | None = None, k: int = 100
    ) -> list[dict[str, Any]]:
        """Top-``k`` items from the index (history items left out): ``rank, item_id, title,
        score``, best first; the same rows as ``rec.pipeline.index.retrieve``."""
        k = self._check_k(k)
        hist, timestamps = self.history(user, history)
        return self._retrieve(hist, timestamps, k)

    def _retrieve(self, hist: list[str], timestamps: Any, k: int) -> list[dict[str, Any]]:
        cat = self.catalogue()
        queries = self.model.encode_users([hist], timestamps)
        ids, scores = cat.index.search(queries, k, exclude=[set(hist)])
        return [
            {"rank": r + 1, "item_id": s, "title": cat.items.get(s, (None, None))[0], "score": sc}
            for r, (s, sc) in enumerate(zip(ids[0], scores[0].tolist()))
            if s is not None
        ]

    def recommend(
        self,
        user: str | None = None,
        history: list[str] | None = None,
        k: int = 10,
        rerank: bool | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """(rows, stage): retrieval's top-``k`` (stage ``retrieval``), or with ``rerank`` (default:
        when the run has a reranker) the first ``ranking.rerank_top`` retrieved items reordered
        by calibrated click probability, followed by the rest in retrieval order (``reranked``)."""
        k = self._check_k(k)
        if rerank is None:
            rerank = self.reranker is not None
        if rerank and self.reranker is None:
            raise UnavailableError(
                "this run has no reranker (train one with `rec train reranker`); "
                "ask with rerank=false"
            )
        hist, timestamps = self.history(user, history)
        if not rerank:
            return self._retrieve(hist, timestamps, k), "retrieval"
        from ranking.pairs import history_texts_of

        assert self.reranker is not None
        rc = self.reranker.cfg
        top = max(1, rc.rerank_top)
        retrieved = self._retrieve(hist, timestamps, max(top, k))
        head, tail = retrieved[:top], retrieved[top:k]
        if not head:
            return [], "reranked"
        texts = self.catalogue().rank_texts
        htexts = history_texts_of(hist, texts.history, rc.history_items)
        ctexts = [texts.candidate.get(r["item_id"], r["item_id"]) for r in head]
        ranks = np.arange(len(head))
        logits = self.reranker.logits([htexts] * len(head), ctexts, rc.eval_batch_size)
        cal = self.reranker.calibrator
        probs = cal.transform(logits, ranks)
        order = np.argsort(-cal.score(logits, ranks), kind="stable")
        rows = [
            {
                "rank": i + 1,
                "item_id": head[j]["item_id"],
                "title": head[j]["title"],
                "click_probability": round(float(probs[j]), 6),
                "retrieval_rank": int(j) + 1,
            }
            for i, j in enumerate(order)
        ]
        rows += [
            {
                "rank": len(head) + i + 1,
                "item_id": r["item_id"],
                "title": r["title"],
                "click_probability": None,
                "retrieval_rank": r["rank"],
            }
            for i, r in enumerate(tail)
        ]
        return rows[:k], "reranked"

    def add_items(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Add or replace items from their text (no retraining) through
        ``rec.pipeline.index.add_items``, then reload the index."""
        from rec.pipeline.index import add_items

        with self._lock, tempfile.TemporaryDirectory(prefix="rec-serve-") as tmp:
            path = Path(tmp) / "items.jsonl"
            path.write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
            )
            try:
                info = add_items(self.run.path, path, device=self.device)
            except RecError as exc:  # the temporary file means nothing to the client
                raise type(exc)(str(exc).replace(str(path), "items")) from None
            self._cat = self._load_catalogue()
        return info


# ---------------------------------------------------------------------------------------------
# HTTP

Id = str | int  # ids are strings; JSON numbers are accepted and turned into strings


class RecommendBody(BaseModel):
    """Body of POST /recommend: a user or a history, k, rerank (default: when possible)."""

    model_config = ConfigDict(extra="forbid")
    user: Id | None = None
    history: list[Id] | None = None
    k: int = 10
    rerank: bool | None = None


class RetrieveBody(BaseModel):
    """Body of POST /retrieve: a user or a history, k."""

    model_config = ConfigDict(extra="forbid")
    user: Id | None = None
    history: list[Id] | None = None
    k: int = 100


class NewItem(BaseModel):
    """One item to add: its id, text (what the item tower encodes) and title."""

    model_config = ConfigDict(extra="forbid")
    item_id: Id
    text: str = Field(min_length=1)
    title: str | None = None


class NewItems(BaseModel):
    """Body of POST /items."""

    model_config = ConfigDict(extra="forbid")
    items: list[NewItem] = Field(min_length=1, max_length=MAX_NEW_ITEMS)


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else "error"


def status_of(exc: RecError) -> int:
    """HTTP status of a domain error: 404 unknown id, 409 missing artifact, else 422."""
    if isinstance(exc, UnknownIdError):
        return 404
    if isinstance(exc, (UnavailableError, ArtifactError)):
        return 409
    return 422


def create_app(
    run_dir: str | Path | None = None,
    device: str | None = None,
    recommender: Recommender | None = None,
) -> FastAPI:
    """The FastAPI app over ``run_dir`` (models loaded here, once), or over ``recommender``.

    Raises:
        RecError: the run directory is missing or incomplete (no retrieval model or index).
    """
    if recommender is None:
        if run_dir is None:
            raise ConfigError("create_app needs a run directory")
        recommender = Recommender(run_dir, device=device)
    rec = recommender

    def s(x: Id | None) -> str | None:
        return None if x is None else str(x)

    def hist(x: list[Id] | None) -> list[str] | None:
        return None if x is None else [str(i) for i in x]

    app = FastAPI(title="rec", summary="Recommendations from a rec run directory.")
    app.state.recommender = rec

    @app.exception_handler(RecError)
    async def _rec_error(request: Request, exc: RecError) -> JSONResponse:
        return JSONResponse({"error": _one_line(str(exc))}, status_code=status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        msg = f"{where}: {first.get('msg', 'invalid request')}"
        return JSONResponse({"error": _one_line(msg)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": _one_line(str(exc.detail))}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"error": "internal server error (see the server log)"}, status_code=500
        )

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "run": rec.cfg.name,
            "run_dir": str(rec.run.path),
            "stages": rec.stages,
            "n_items": rec.n_items,
            "n_users": rec.n_users,
        }

    def recommend_response(t0: float, rows: list[dict[str, Any]], stage: str) -> dict[str, Any]:
        ms = (time.perf_counter() - t0) * 1000
        return {"items": rows, "stage": stage, "latency_ms": round(ms, 3)}

    @app.get("/recommend")
    def recommend_get(user: str, k: int = 10, rerank: bool | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        return recommend_response(t0, *rec.recommend(user=user, k=k, rerank=rerank))

    @app.post("/recommend")
    def recommend_post(body: RecommendBody) -> dict[str, Any]:
        t0 = time.perf_counter()
        rows, stage = rec.recommend(s(body.user), hist(body.history), body.k, body.rerank)
        return recommend_response(t0, rows, stage)

    @app.get("/retrieve")
    def retrieve_get(user: str, k: int = 100) -> dict[str, Any]:
        t0 = time.perf_counter()
        return recommend_response(t0, rec.retrieve(user=user, k=k), "retrieval")

    @app.post("/retrieve")
    def retrieve_post(body: RetrieveBody) -> dict[str, Any]:
        t0 = time.perf_counter()
        rows = rec.retrieve(s(body.user), hist(body.history), body.k)
        return recommend_response(t0, rows, "retrieval")

    @app.get("/items/{item_id}")
    def get_item(item_id: str) -> dict[str, Any]:
        return rec.item(item_id)

    @app.post("/items")
    def post_items(body: NewItems) -> dict[str, Any]:
        rows = [{**i.model_dump(), "item_id": str(i.item_id)} for i in body.items]
        return rec.add_items(rows)

    return app


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` with several workers: REC_RUN_DIR, REC_DEVICE."""
    run_dir = os.environ.get("REC_RUN_DIR")
    if not run_dir:
        raise ConfigError("REC_RUN_DIR is not set")
    return create_app(run_dir, device=os.environ.get("REC_DEVICE") or None)
