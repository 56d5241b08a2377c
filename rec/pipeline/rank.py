"""Retrieval + ranking composed: candidate functions, reranker training, ``rerank``, ``recommend``
and the two-stage evaluation (retrieval alone vs retrieve + rerank, with the retrieval ceiling).

Candidates come from the run's retrieval model (RUN/retrieval) when it exists, else from an
item-to-item co-occurrence first stage built from the training split (``source``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rec.artifacts import RunDir, write_json
from rec.config import RunConfig
from rec.data.dataset import Split, load_dataset, load_split, sequences, sort_events
from rec.errors import ArtifactError, DataError, RecError

log = logging.getLogger(__name__)

CandidateFn = Callable[[list[list[str]], int], list[list[str]]]


# ---------------------------------------------------------------------------------------------
# candidate functions (first stage)


def cooccurrence_candidates(
    train: pl.DataFrame, all_items: list[str], window: int = 3, recent: int = 5, decay: float = 0.7
) -> CandidateFn:
    """A first stage without a trained model: items that followed the user's recent items in
    training sequences (within ``window`` steps), backed off to popularity; seen items removed."""
    import scipy.sparse as sp

    index = {it: i for i, it in enumerate(all_items)}
    rows, cols, vals = [], [], []
    for seq in sequences(train).values():
        ids = [index[i] for i in seq if i in index]
        for a in range(len(ids)):
            for d in range(1, window + 1):
                if a + d < len(ids):
                    rows.append(ids[a])
                    cols.append(ids[a + d])
                    vals.append(1.0 / d)
    n = len(all_items)
    co = sp.csr_matrix((vals, (rows, cols)), shape=(n, n), dtype=np.float64)
    norm = np.asarray(co.sum(axis=1)).ravel()
    co = sp.diags(1.0 / np.maximum(norm, 1.0)) @ co
    pop = np.zeros(n)
    counts = train.group_by("item_id").len()
    for it, c in zip(counts["item_id"].to_list(), counts["len"].to_list()):
        if it in index:
            pop[index[it]] = c
    pop = 1e-3 * pop / max(pop.max(), 1.0)

    def fn(histories: list[list[str]], k: int) -> list[list[str]]:
        out = []
        for hist in histories:
            ids = [index[i] for i in hist if i in index]
            s = pop.copy()
            for w, i in enumerate(reversed(ids[-recent:])):
                s += decay**w * co.getrow(i).toarray().ravel()
            if ids:
                s[ids] = -np.inf
            kk = min(k, n)
            top = np.argpartition(-s, kk - 1)[:kk]
            top = top[np.argsort(-s[top], kind="stable")]
            out.append([all_items[j] for j in top if np.isfinite(s[j])])
        return out

    return fn


def retriever_candidates(
    retrieval_dir: str | Path, device: str = "cpu", batch: int = 256
) -> CandidateFn:
    """Candidates from the run's trained retrieval model (exact top-k, seen items removed)."""
    from retrieval.model import RetrievalModel

    model = RetrievalModel.load(retrieval_dir, device=device)

    def fn(histories: list[list[str]], k: int) -> list[list[str]]:
        out: list[list[str]] = []
        for i in range(0, len(histories), batch):
            ids, _ = model.recommend(
                [list(h) for h in histories[i : i + batch]], k, exclude_seen=True
            )
            out.extend([list(map(str, row)) for row in ids])
        return out

    return fn


def candidate_function(
    run: RunDir, split: Split, items: pl.DataFrame, source: str = "auto", device: str = "cpu"
) -> tuple[CandidateFn, str]:
    """(candidate function, its name): ``retrieval`` (RUN/retrieval), ``cooccurrence``, or
    ``auto`` (retrieval when the run has one)."""
    rdir = run.stage("retrieval")
    has_retriever = (rdir / "model.json").is_file()
    if source == "retrieval" or (source == "auto" and has_retriever):
        if not has_retriever:
            raise ArtifactError(
                f"{rdir}: no retrieval model; train one or use --source cooccurrence"
            )
        return retriever_candidates(rdir, device=device), "retrieval"
    if source not in ("auto", "cooccurrence"):
        raise RecError(f"unknown candidate source {source!r} (auto, retrieval, cooccurrence)")
    from ranking.train import catalogue

    return cooccurrence_candidates(split.train, catalogue(items)), "cooccurrence"


def _load(run_dir: str | Path) -> tuple[RunDir, RunConfig, pl.DataFrame, Split]:
    run = RunDir(run_dir).require()
    cfg = run.config()
    data_dir = run.dataset_dir()
    return run, cfg, load_dataset(data_dir).items, load_split(data_dir, "loo")


# ---------------------------------------------------------------------------------------------
# training and evaluation


def train_reranker(
    run_dir: str | Path,
    device: str = "cpu",
    cfg: RunConfig | None = None,
    source: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Train the reranker of a run into RUN/ranking with candidates from ``source``."""
    from ranking.train import train_reranker as train

    run, run_cfg, items, split = _load(run_dir)
    cfg = cfg or run_cfg
    if cfg is not run_cfg:
        run.update_manifest(config=cfg)
    fn, name = candidate_function(run, split, items, source, device)
    log.warning("reranker: candidates from %s", name)
    res = train(
        split,
        items,
        fn,
        cfg.ranking,
        run.stage("ranking"),
        seed=cfg.seed + 3,
        device=device,
        progress=progress,
    )
    summary = {
        "candidates": name,
        "best_step": res.best_step,
        "steps": res.steps,
        "train_groups": res.train_groups,
        "train_seconds": round(res.seconds, 1),
        "valid": res.valid,
    }
    run.update_manifest(
        part="ranking", info={"candidates": name}, metrics={"ranking_train": summary}
    )
    return summary


def recalibrate_reranker(
    run_dir: str | Path,
    source: str = "auto",
    valid_users: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Refit RUN/ranking's calibrator on validation lists of the current first stage."""
    from ranking.train import recalibrate

    run, cfg, items, split = _load(run_dir)
    rdir = run.require_stage("ranking", "ranking.json")
    fn, name = candidate_function(run, split, items, source, device)
    rep = recalibrate(rdir, split, items, fn, valid_users, cfg.seed + 3, device, progress, name)
    run.update_manifest(
        part="ranking", info={"candidates": name}, metrics={"ranking_recalibrated": rep}
    )
    return rep


def evaluate_reranker(
    run_dir: str | Path,
    part: str = "test",
    max_users: int = 0,
    seed: int = 0,
    device: str = "cpu",
    quantize: str | None = None,
    source: str = "auto",
    progress: bool = True,
    out_name: str | None = None,
) -> dict[str, Any]:
    """End-to-end NDCG@10 / HR@10 of retrieval alone and retrieve + rerank on ``part`` (same
    users), the retrieval ceiling (targets inside the reranked top-``rerank_top`` and inside the
    retrieved top-``retrieve_top``), and calibration (AUC, log-loss, ECE) of the served lists.

    A target retrieval missed counts as a miss; it is never inserted. Seen items are filtered.
    """
    from ranking.calibrate import calibration_report, reliability_plot
    from ranking.metrics import hit_at_k, ndcg_at_k
    from ranking.model import Reranker
    from ranking.pairs import eval_examples, serving_groups
    from ranking.train import TextTables, group_logits, list_metrics

    t0 = time.time()
    run, cfg, items, split = _load(run_dir)
    rdir = run.require_stage("ranking", "ranking.json")
    rr = Reranker.load(rdir, device=device, quantize=quantize)
    rc = rr.cfg
    fn, name = candidate_function(run, split, items, source, device)
    examples = eval_examples(split, part, max_users, np.random.default_rng(seed))
    groups = serving_groups(examples, fn, rc.retrieve_top)
    full_labels = [g.labels for g in groups]
    for g in groups:  # the reranked window
        g.candidates, g.labels, g.ranks = (
            g.candidates[: rc.rerank_top],
            g.labels[: rc.rerank_top],
            g.ranks[: rc.rerank_top],
        )
    texts = TextTables.from_items(items, rc)
    logits = group_logits(
        rr.encoder, groups, texts, rc.eval_batch_size, progress=progress, desc=f"rerank {part}"
    )
    cal = rr.calibrator
    fused = [cal.score(x, g.ranks) for g, x in zip(groups, logits)]
    lg = np.concatenate(logits) if logits else np.zeros(0)
    y = np.concatenate([g.labels for g in groups]) if groups else np.zeros(0)
    r = np.concatenate([g.ranks for g in groups]) if groups else np.zeros(0)
    probs = cal.transform(lg, r)
    raw = 1.0 / (1.0 + np.exp(-lg))
    out = {
        "part": part,
        "users": len(groups),
        "candidates": name,
        "serving": rr.meta["serving"],
        "retrieve_top": rc.retrieve_top,
        "rerank_top": rc.rerank_top,
        "filter_seen": True,
        "retrieval": {"ndcg@10": ndcg_at_k(full_labels, 10), "hr@10": hit_at_k(full_labels, 10)},
        "reranked": list_metrics(groups, fused),
        "cross_encoder_only": list_metrics(groups, logits),
        "ceiling@rerank_top": float(np.mean([g.labels.sum() > 0 for g in groups]))
        if groups
        else 0.0,
        "ceiling@retrieve_top": float(np.mean([lab.sum() > 0 for lab in full_labels]))
        if groups
        else 0.0,
        "calibration": calibration_report(probs, y),
        "calibration_uncalibrated": calibration_report(raw, y),
        "calibrator": cal.method,
        "rank_fusion": cal.use_rank,
        "calibrated_on": "validation served lists (retrieval top-rerank_top)",
        "seconds": round(time.time() - t0, 1),
    }
    rel = out["reranked"]["ndcg@10"] / max(out["retrieval"]["ndcg@10"], 1e-12) - 1.0
    out["relative_gain"] = rel
    name_ = out_name or f"reranker_{part}_{name}_{out['serving']}"
    edir = run.stage("eval")
    edir.mkdir(parents=True, exist_ok=True)
    reliability_plot(
        edir / f"{name_}_reliability.png",
        {"sigmoid(logit)": (raw, y), cal.method: (probs, y)},
        title=f"Reranker, {part} served lists",
    )
    write_json(edir / f"{name_}.json", out)
    return out


# ---------------------------------------------------------------------------------------------
# serving


def user_history(run_dir: str | Path, user: str) -> list[str]:
    """The user's whole known history (all events, time order) from the run's dataset."""
    run = RunDir(run_dir).require()
    ds = load_dataset(run.dataset_dir())
    ev = ds.interactions.filter(pl.col("user_id") == user)
    if ev.height == 0:
        raise DataError(f"unknown user {user!r} (no events); pass --history")
    return sort_events(ev)["item_id"].to_list()


class _Serving:
    """Loaded once per process: the reranker, item texts, the candidate function."""

    _cache: dict[tuple[str, str, str | None], _Serving] = {}

    def __init__(self, run_dir: str | Path, device: str, quantize: str | None) -> None:
        from ranking.model import Reranker
        from ranking.train import TextTables

        run, cfg, items, split = _load(run_dir)
        self.run = run
        self.reranker = Reranker.load(
            run.require_stage("ranking", "ranking.json"), device=device, quantize=quantize
        )
        index_dir = run.stage("index")
        has_index = (index_dir / "index.json").is_file()
        if has_index:  # serve what the index holds, including items added without retraining
            from rec.pipeline.index import _overlays

            extra, _ = _overlays(index_dir)
            if extra is not None:
                items = pl.concat([items, extra], how="diagonal_relaxed").unique(
                    "item_id", keep="last", maintain_order=True
                )
        self.texts = TextTables.from_items(items, self.reranker.cfg)
        self.titles = dict(
            zip(
                items["item_id"].to_list(),
                (items["title"] if "title" in items.columns else items["item_id"]).to_list(),
            )
        )
        if has_index:
            from rec.pipeline.index import index_candidates

            self.candidates, self.source = index_candidates(run.path, device), "index"
        else:
            self.candidates, self.source = candidate_function(run, split, items, "auto", device)
        ev = sort_events(load_dataset(run.dataset_dir()).interactions)
        self.histories = sequences(ev)

    @classmethod
    def get(cls, run_dir: str | Path, device: str = "cpu", quantize: str | None = None) -> _Serving:
        key = (str(Path(run_dir).resolve()), device, quantize)
        if key not in cls._cache:
            cls._cache[key] = cls(run_dir, device, quantize)
        return cls._cache[key]


def rerank(
    run_dir: str | Path,
    user: str,
    candidates: list[str] | None = None,
    history: list[str] | None = None,
    device: str = "cpu",
    quantize: str | None = None,
    rerank_top: int | None = None,
) -> list[dict[str, Any]]:
    """Rerank ``candidates`` (default: the retriever's top ``rerank_top``) for ``user``.

    Returns rows ``rank, item_id, title, click_probability, retrieval_rank``, best first.
    """
    s = _Serving.get(run_dir, device, quantize)
    cfg = s.reranker.cfg
    hist = history if history is not None else s.histories.get(user)
    if hist is None:
        raise DataError(f"unknown user {user!r} (no events); pass --history")
    if candidates is None:
        candidates = s.candidates([hist], cfg.retrieve_top)[0][: rerank_top or cfg.rerank_top]
    unknown = [c for c in candidates if c not in s.titles]
    if unknown:
        raise DataError(f"unknown candidate item {unknown[0]!r}")
    if not candidates:
        return []
    from ranking.pairs import history_texts_of

    htexts = history_texts_of(hist, s.texts.history, cfg.history_items)
    ctexts = [s.texts.candidate.get(c, c) for c in candidates]
    ranks = np.arange(len(candidates))
    logits = s.reranker.logits([htexts] * len(candidates), ctexts, cfg.eval_batch_size)
    cal = s.reranker.calibrator
    score = cal.score(logits, ranks)
    probs = cal.transform(logits, ranks)
    order = np.argsort(-score, kind="stable")
    return [
        {
            "rank": i + 1,
            "item_id": candidates[j],
            "title": s.titles.get(candidates[j]),
            "click_probability": round(float(probs[j]), 6),
            "retrieval_rank": int(j) + 1,
        }
        for i, j in enumerate(order)
    ]


def recommend(
    run_dir: str | Path,
    user: str,
    k: int = 10,
    history: list[str] | None = None,
    device: str = "cpu",
    quantize: str | None = None,
    retrieve_top: int | None = None,
    rerank_top: int | None = None,
) -> list[dict[str, Any]]:
    """Retrieve ``retrieve_top``, rerank the first ``rerank_top``, return the top ``k`` rows
    (reranked items first, then the rest of the retrieved list in retrieval order)."""
    if k <= 0:
        raise RecError(f"k must be positive, got {k}")
    s = _Serving.get(run_dir, device, quantize)
    cfg = s.reranker.cfg
    hist = history if history is not None else s.histories.get(user)
    if hist is None:
        raise DataError(f"unknown user {user!r} (no events); pass --history")
    top_r = rerank_top or cfg.rerank_top
    retrieved = s.candidates([hist], max(retrieve_top or cfg.retrieve_top, k))[0]
    rows = rerank(run_dir, user, retrieved[:top_r], hist, device, quantize)
    for j, it in enumerate(retrieved[top_r:k], start=top_r):
        rows.append(
            {
                "rank": len(rows) + 1,
                "item_id": it,
                "title": s.titles.get(it),
                "click_probability": None,
                "retrieval_rank": j + 1,
            }
        )
    return rows[:k]


def with_ranking(cfg: RunConfig, **changes: Any) -> RunConfig:
    """A copy of ``cfg`` with ranking fields changed."""
    return dataclasses.replace(cfg, ranking=dataclasses.replace(cfg.ranking, **changes))
