"""Score stages against leave-one-out targets: run tables, score matrices, floors, CIs, tests.

Two inputs, one evaluator:

- a **run table** (polars: ``user_id, item_id, rank, score, stage``; ``rank`` 0-based, only its
  order matters) against a **truth table** (``user_id, item_id``, one target per user);
- a **score function** over dense item indices (full ranking, seen items optionally removed).

Every truth user is evaluated in every stage: a user missing from a stage's run table, or whose
target is not in the stage's list, is a miss. Results of all stages are aligned on the same users
(``EvalData.user_ids``), so per-user values can be compared pairwise.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from eval.baselines import EASE, Scorer, item_counts, make_baselines
from eval.config import EvalConfig
from eval.metrics import (
    KS,
    MISSING,
    average_popularity,
    bootstrap_ci,
    catalogue_coverage,
    ndcg_at_k,
    paired_test,
    ranking_metrics,
    ranks_from_scores,
    sampled_ranks,
    slice_masks,
)
from rec.data import Split, histories_for, sequences
from rec.errors import DataError

log = logging.getLogger(__name__)

RUN_COLUMNS = ("user_id", "item_id", "rank", "score", "stage")
FLOORS = ("popularity", "ease", "itemknn", "markov")
ScoreFn = Callable[[Sequence[np.ndarray]], np.ndarray]


# ---------------------------------------------------------------------------------------------
# the users, histories and targets of one evaluated part


@dataclass
class EvalData:
    """Histories and targets of one part (``valid`` | ``test``) over a dense item catalogue."""

    part: str
    item_ids: list[str]
    user_ids: list[str]
    histories: list[np.ndarray]  # dense item indices, oldest first (events before the target)
    history_ids: list[list[str]]
    targets: np.ndarray  # dense index of each user's target; -1 if not in the catalogue
    target_ids: list[str]
    fit_sequences: list[np.ndarray]  # what the floors are fit on (every user, time order)
    item_counts: np.ndarray  # events per item in fit_sequences
    item_index: dict[str, int] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def truth(self) -> pl.DataFrame:
        """The truth table (user_id, item_id)."""
        return pl.DataFrame(
            {"user_id": self.user_ids, "item_id": self.target_ids},
            schema={"user_id": pl.Utf8, "item_id": pl.Utf8},
        )

    def history_lengths(self) -> np.ndarray:
        return np.fromiter((len(h) for h in self.histories), dtype=np.int64, count=self.n_users)


def catalogue(split: Split, items: pl.DataFrame | None = None) -> list[str]:
    """The items ranked: every item with an event in the split, in ``items`` order when given
    (catalogue entries without events are left out, as in the published protocol)."""
    ids = pl.concat(
        [split.train.select("item_id"), split.valid.select("item_id"), split.test.select("item_id")]
    )["item_id"].unique()
    have = set(ids.to_list())
    out: list[str] = []
    if items is not None:
        out = [i for i in items["item_id"].to_list() if i in have]
    rest = sorted(have - set(out))
    return out + rest


def eval_data(
    split: Split, part: str, item_ids: Sequence[str], refit_on_valid: bool = True
) -> EvalData:
    """Build the :class:`EvalData` of ``part`` from a leave-one-out split.

    Histories are every event before the target (valid: train; test: train + valid). The floors
    are fit on train for ``valid`` and on train + valid for ``test`` (``refit_on_valid``), i.e. on
    exactly the events that precede the evaluated targets.
    """
    if part not in ("valid", "test"):
        raise DataError(f"split must be valid or test, not {part!r}")
    index = {it: i for i, it in enumerate(item_ids)}
    hist, targets = histories_for(split, part)
    users = list(targets)
    if not users:
        raise DataError(f"the {part} split has no users to evaluate")

    def dense(seq: Sequence[str]) -> np.ndarray:
        return np.fromiter((index[i] for i in seq if i in index), dtype=np.int64)

    fit_df = (
        split.train
        if part == "valid" or not refit_on_valid
        else pl.concat([split.train, split.valid])
    )
    fit = [dense(s) for s in sequences(fit_df).values()]
    return EvalData(
        part=part,
        item_ids=list(item_ids),
        user_ids=users,
        histories=[dense(hist[u]) for u in users],
        history_ids=[list(hist[u]) for u in users],
        targets=np.array([index.get(targets[u], -1) for u in users], dtype=np.int64),
        target_ids=[targets[u] for u in users],
        fit_sequences=fit,
        item_counts=item_counts(fit, len(item_ids)),
        item_index=index,
    )


# ---------------------------------------------------------------------------------------------
# one stage's result


@dataclass
class StageResult:
    """Ranks of every evaluated user's target in one stage, and what follows from them."""

    name: str
    ranks: np.ndarray  # float [n_users], 0-based, MISSING when not in the list
    metrics: dict[str, Any]  # recall@K, ndcg@K, mrr, n_users (+ ceiling for two-stage)
    top_items: np.ndarray | None = None  # dense indices [n_users, k], -1 padding
    top_scores: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)  # CI, coverage, slices, settings, wall_s

    def per_user_ndcg10(self) -> np.ndarray:
        return ndcg_at_k(self.ranks, 10)


def make_result(
    name: str,
    ranks: np.ndarray,
    data: EvalData,
    cfg: EvalConfig,
    *,
    top_items: np.ndarray | None = None,
    top_scores: np.ndarray | None = None,
    ceiling: bool = False,
    info: dict[str, Any] | None = None,
) -> StageResult:
    """Metrics, bootstrap CI of NDCG@10, coverage, popularity and slices of one stage."""
    metrics = ranking_metrics(ranks, cfg.ks)
    if ceiling:
        metrics["ceiling"] = float(np.isfinite(ranks).mean()) if len(ranks) else 0.0
    lo, hi = bootstrap_ci(ndcg_at_k(ranks, 10), cfg.bootstrap, cfg.seed)
    extra: dict[str, Any] = {"ndcg@10_ci95": [lo, hi]}
    if top_items is not None and top_items.size:
        extra["coverage@10"] = catalogue_coverage(top_items, data.n_items, 10)
        extra["avg_popularity@10"] = average_popularity(top_items, data.item_counts, 10)
    masks = slice_masks(data.targets, data.history_lengths(), data.item_counts)
    extra["slices"] = {
        s: {
            "n_users": int(m.sum()),
            **(
                {
                    k: v
                    for k, v in ranking_metrics(ranks[m], cfg.ks).items()
                    if k in ("recall@10", "ndcg@10")
                }
                if m.any()
                else {}
            ),
        }
        for s, m in masks.items()
    }
    extra.update(info or {})
    return StageResult(
        name, np.asarray(ranks, dtype=np.float64), metrics, top_items, top_scores, extra
    )


def evaluate_scorer(
    name: str,
    score_fn: ScoreFn,
    data: EvalData,
    cfg: EvalConfig,
    *,
    sampled: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, StageResult]:
    """Full-ranking evaluation of a score function over dense item indices.

    ``score_fn(histories) -> float32 [len(histories), n_items]`` is called once per block of
    ``cfg.chunk_users`` users. Returns ``{name: result}`` with seen items filtered per
    ``cfg.filter_seen``; with ``cfg.both_seen_modes`` also ``name:unfiltered`` (or
    ``name:filtered``); with ``sampled=N`` also ``name:sampledN`` (N uniform negatives, labelled).
    """
    t0 = time.perf_counter()
    n = data.n_users
    main = np.full(n, MISSING)
    other = np.full(n, MISSING) if cfg.both_seen_modes else None
    samp = np.full(n, MISSING) if sampled else None
    k = min(cfg.topk, data.n_items)
    top_i = np.zeros((n, k), dtype=np.int64)
    top_s = np.zeros((n, k), dtype=np.float32)
    keep = cfg.keep_seen_target
    for start in range(0, n, cfg.chunk_users):
        rows = slice(start, min(start + cfg.chunk_users, n))
        hist = data.histories[rows]
        s = np.asarray(score_fn(hist), dtype=np.float32)
        if s.shape != (len(hist), data.n_items):
            raise DataError(
                f"{name}: scorer returned shape {s.shape}, expected {(len(hist), data.n_items)}"
            )
        t = data.targets[rows]
        main[rows], ti, ts = ranks_from_scores(
            s, t, hist, filter_seen=cfg.filter_seen, keep_target=keep, ties=cfg.ties, topk=k
        )
        top_i[rows], top_s[rows] = ti, ts
        if other is not None:
            other[rows] = ranks_from_scores(
                s, t, hist, filter_seen=not cfg.filter_seen, keep_target=keep, ties=cfg.ties
            )[0]
        if samp is not None:
            samp[rows] = sampled_ranks(
                s, t, hist, sampled, seed=cfg.seed + start, keep_target=keep or not cfg.filter_seen
            )
        if progress is not None:
            progress(len(hist))
    wall = round(time.perf_counter() - t0, 2)
    mode = "filtered" if cfg.filter_seen else "unfiltered"
    out = {
        name: make_result(
            name,
            main,
            data,
            cfg,
            top_items=top_i,
            top_scores=top_s,
            info={"filter_seen": cfg.filter_seen, "score_wall_s": wall},
        )
    }
    if other is not None:
        alt = "unfiltered" if cfg.filter_seen else "filtered"
        out[f"{name}:{alt}"] = make_result(
            f"{name}:{alt}", other, data, cfg, info={"filter_seen": not cfg.filter_seen}
        )
    if samp is not None:
        key = f"{name}:sampled{sampled}"
        out[key] = make_result(
            key, samp, data, cfg, info={"sampled_negatives": sampled, "filter_seen": mode}
        )
    return out


def _scorer_fn(model: Scorer) -> ScoreFn:
    return lambda hist: model.score(hist)


# ---------------------------------------------------------------------------------------------
# floors


def choose_ease_lambda(
    split: Split, item_ids: Sequence[str], cfg: EvalConfig
) -> tuple[float, dict[str, float]]:
    """EASE lambda with the best NDCG@10 on the VALIDATION targets (fit on train only)."""
    valid = eval_data(split, "valid", item_ids, cfg.refit_on_valid)
    vcfg = dataclasses.replace(cfg, both_seen_modes=False, bootstrap=0, topk=1)
    model = EASE(cfg.ease_lambdas[0]).fit(valid.fit_sequences, valid.n_items)
    grid: dict[str, float] = {}
    for lam in cfg.ease_lambdas:
        model.with_lambda(lam)
        ranks = evaluate_scorer("ease", _scorer_fn(model), valid, vcfg)["ease"].ranks
        grid[f"{lam:g}"] = float(ndcg_at_k(ranks, 10).mean())
        log.info("EASE lambda %g: valid NDCG@10 %.4f", lam, grid[f"{lam:g}"])
    best = max(cfg.ease_lambdas, key=lambda lam: grid[f"{lam:g}"])
    return float(best), grid


def evaluate_floors(
    split: Split,
    item_ids: Sequence[str],
    part: str,
    cfg: EvalConfig,
    *,
    sampled: int | None = None,
    data: EvalData | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> tuple[dict[str, StageResult], EvalData]:
    """Most-popular, EASE (lambda chosen on valid) or item-kNN, and Markov on ``part``.

    Returns (results keyed ``popularity``, ``ease`` | ``itemknn``, ``markov`` plus their
    ``:unfiltered`` / ``:sampledN`` variants, the EvalData used).
    """
    data = data or eval_data(split, part, item_ids, cfg.refit_on_valid)
    results: dict[str, StageResult] = {}
    lam, grid = (None, None)
    if cfg.baseline_knn == "ease":
        lam, grid = choose_ease_lambda(split, item_ids, cfg)
    for model in make_baselines(cfg.baseline_knn, lam or 500.0):
        t0 = time.perf_counter()
        model.fit(data.fit_sequences, data.n_items)
        fit_s = time.perf_counter() - t0
        cb = (lambda n, _name=model.name: progress(_name, n)) if progress else None
        res = evaluate_scorer(
            model.name, _scorer_fn(model), data, cfg, sampled=sampled, progress=cb
        )
        wall = round(time.perf_counter() - t0, 2)
        for r in res.values():
            r.info.update({"fit_wall_s": round(fit_s, 2), "wall_s": wall})
            if model.name == "ease":
                r.info.update({"ease_lambda": lam, "ease_valid_ndcg@10": grid})
        results.update(res)
    return results, data


# ---------------------------------------------------------------------------------------------
# run tables


def _check_run(run: pl.DataFrame) -> None:
    missing = [c for c in ("user_id", "item_id", "rank", "stage") if c not in run.columns]
    if missing:
        raise DataError(
            f"run table lacks column(s) {', '.join(missing)} (expected {', '.join(RUN_COLUMNS)})"
        )


def _check_truth(truth: pl.DataFrame) -> None:
    missing = [c for c in ("user_id", "item_id") if c not in truth.columns]
    if missing:
        raise DataError(f"truth table lacks column(s) {', '.join(missing)}")
    if truth["user_id"].n_unique() != truth.height:
        raise DataError("truth table must hold one target per user (leave-one-out)")


def run_positions(run: pl.DataFrame) -> pl.DataFrame:
    """Run table with ``pos``: 0-based position in the user's list of the stage (order of
    ``rank``, then ``score`` descending); a repeated item keeps its first position."""
    _check_run(run)
    sort = ["stage", "user_id", "rank"] + (["score"] if "score" in run.columns else [])
    desc = [False, False, False] + ([True] if "score" in run.columns else [])
    return (
        run.with_columns(pl.col("user_id").cast(pl.Utf8), pl.col("item_id").cast(pl.Utf8))
        .sort(sort, descending=desc, maintain_order=True)
        .unique(["stage", "user_id", "item_id"], keep="first", maintain_order=True)
        .with_columns(pl.int_range(pl.len()).over(["stage", "user_id"]).alias("pos"))
    )


def run_table_ranks(run: pl.DataFrame, truth: pl.DataFrame) -> dict[str, np.ndarray]:
    """Per stage: the 0-based rank of each truth user's target (truth row order), MISSING when
    the target is not in the user's list (or the user has no list)."""
    _check_truth(truth)
    pos = run_positions(run)
    t = truth.select(
        pl.col("user_id").cast(pl.Utf8), pl.col("item_id").cast(pl.Utf8)
    ).with_row_index("_row")
    out = {}
    for stage in pos["stage"].unique(maintain_order=True).to_list():
        p = pos.filter(pl.col("stage") == stage).select("user_id", "item_id", "pos")
        j = t.join(p, on=["user_id", "item_id"], how="left").sort("_row")
        out[stage] = j["pos"].cast(pl.Float64).fill_null(np.inf).to_numpy()
    return out


def evaluate_run_table(
    run: pl.DataFrame,
    truth: pl.DataFrame,
    ks: Sequence[int] = KS,
    two_stage: Sequence[str] = ("reranked",),
) -> dict[str, dict[str, Any]]:
    """Metrics per stage of a run table against a truth table.

    Keys ``recall@K``, ``ndcg@K`` (K in ``ks``), ``mrr`` (over the stage's whole list) and
    ``n_users`` (every truth user); stages named in ``two_stage`` also get ``ceiling``, the share
    of targets anywhere in the stage's list (its candidate set).
    """
    out = {}
    for stage, ranks in run_table_ranks(run, truth).items():
        m = ranking_metrics(ranks, ks)
        if stage in two_stage:
            m["ceiling"] = float(np.isfinite(ranks).mean()) if len(ranks) else 0.0
        out[stage] = m
    return out


def table_result(
    name: str,
    table: pl.DataFrame,
    data: EvalData,
    cfg: EvalConfig,
    *,
    ceiling: bool = False,
    info: dict[str, Any] | None = None,
) -> StageResult:
    """A :class:`StageResult` from one stage's run table (users aligned on ``data``)."""
    table = table.with_columns(pl.lit(name).alias("stage"))
    ranks = run_table_ranks(table, data.truth()).get(name, np.full(data.n_users, MISSING))
    top_i, top_s = table_top(table, data, cfg.topk)
    return make_result(
        name, ranks, data, cfg, top_items=top_i, top_scores=top_s, ceiling=ceiling, info=info
    )


def table_top(table: pl.DataFrame, data: EvalData, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense top-``k`` item indices and scores per user of ``data`` from a one-stage run table."""
    pos = run_positions(table).filter(pl.col("pos") < k)
    uidx = {u: i for i, u in enumerate(data.user_ids)}
    top_i = np.full((data.n_users, k), -1, dtype=np.int64)
    top_s = np.full((data.n_users, k), -np.inf, dtype=np.float32)
    u = np.array([uidx.get(x, -1) for x in pos["user_id"].to_list()], dtype=np.int64)
    it = np.array([data.item_index.get(x, -1) for x in pos["item_id"].to_list()], dtype=np.int64)
    p = pos["pos"].to_numpy().astype(np.int64)
    ok = u >= 0
    top_i[u[ok], p[ok]] = it[ok]
    if "score" in pos.columns:
        top_s[u[ok], p[ok]] = pos["score"].cast(pl.Float32).fill_null(np.nan).to_numpy()[ok]
    return top_i, top_s


def rankings_table(results: dict[str, StageResult], data: EvalData, k: int = 100) -> pl.DataFrame:
    """Each evaluated user's top-``k`` per stage as a run table (user_id, item_id, rank, score,
    stage); ``rank`` is 0-based."""
    frames = []
    items = np.array(data.item_ids, dtype=object)
    users = np.array(data.user_ids, dtype=object)
    for name, r in results.items():
        if r.top_items is None:
            continue
        ti = r.top_items[:, :k]
        ts = (
            r.top_scores[:, :k]
            if r.top_scores is not None
            else np.full(ti.shape, np.nan, dtype=np.float32)
        )
        ok = ti >= 0
        uu, pp = np.nonzero(ok)
        frames.append(
            pl.DataFrame(
                {
                    "user_id": users[uu].tolist(),
                    "item_id": items[ti[ok]].tolist(),
                    "rank": pp.astype(np.int64),
                    "score": ts[ok].astype(np.float32),
                    "stage": [name] * len(uu),
                },
                schema={
                    "user_id": pl.Utf8,
                    "item_id": pl.Utf8,
                    "rank": pl.Int64,
                    "score": pl.Float32,
                    "stage": pl.Utf8,
                },
            )
        )
    if not frames:
        return pl.DataFrame(
            schema={
                "user_id": pl.Utf8,
                "item_id": pl.Utf8,
                "rank": pl.Int64,
                "score": pl.Float32,
                "stage": pl.Utf8,
            }
        )
    return pl.concat(frames)


# ---------------------------------------------------------------------------------------------
# comparisons


def best_floor(results: dict[str, StageResult]) -> str | None:
    """The floor (popularity / ease / itemknn / markov) with the highest NDCG@10."""
    floors = [k for k in results if k in FLOORS]
    return max(floors, key=lambda k: results[k].metrics["ndcg@10"]) if floors else None


def compare_to_floor(results: dict[str, StageResult], cfg: EvalConfig) -> dict[str, Any]:
    """Paired test of per-user NDCG@10 of every model stage against the best floor."""
    base = best_floor(results)
    if base is None:
        return {}
    out: dict[str, Any] = {}
    for name, r in results.items():
        if name in FLOORS or ":" in name:
            continue
        test = paired_test(
            r.per_user_ndcg10(), results[base].per_user_ndcg10(), max(cfg.bootstrap, 1), cfg.seed
        )
        out[name] = {"baseline": base, "metric": "ndcg@10", **test}
    return out


def metrics_dict(results: dict[str, StageResult]) -> dict[str, dict[str, Any]]:
    """``{stage: metrics}`` as written to metrics.json."""
    return {k: dict(r.metrics) for k, r in results.items()}
