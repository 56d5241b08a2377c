"""Stage rankings -> eval: the floors and every model stage of a run, scored by one evaluator.

``evaluate_run`` ranks each user's leave-one-out target with the floors (always) and with the
stages the run has: ``retrieval`` (exact full ranking by the two-tower model), ``retrieval_ann``
(the vector index in RUN/index), ``reranked`` (retrieval top-``rerank_top`` reordered by the
cross-encoder in RUN/ranking). Results go to RUN/eval (see ``eval.report``) and the manifest.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from eval.config import EvalConfig
from eval.evaluate import (
    EvalData,
    StageResult,
    catalogue,
    compare_to_floor,
    eval_data,
    evaluate_floors,
    evaluate_scorer,
    metrics_dict,
    rankings_table,
    table_result,
)
from eval.metrics import calibration_bins, click_metrics
from eval.report import identify_dataset, write_rankings, write_report
from rec.artifacts import RunDir, read_json, sha256_tree
from rec.data import Split, load_dataset, load_split
from rec.errors import ConfigError, RecError

log = logging.getLogger(__name__)

MODEL_STAGES = ("retrieval", "retrieval_ann", "reranked")


@contextmanager
def _bar(desc: str, total: int, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A tqdm progress bar on stderr, or nothing."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, file=sys.stderr, leave=False) as bar:
        yield bar.update


def _protocol(
    data_dir: Path, data: EvalData, cfg: EvalConfig, split: str, ease_lambda: float | None
) -> dict[str, Any]:
    meta = read_json(data_dir / "dataset.json")
    return {
        "dataset": identify_dataset(meta),
        "dataset_dir": str(data_dir),
        "split": "loo",
        "part": split,
        "n_users": data.n_users,
        "n_items": data.n_items,
        "filter_seen": cfg.filter_seen,
        "keep_seen_target": cfg.keep_seen_target,
        "ties": cfg.ties,
        "ks": list(cfg.ks),
        "bootstrap": cfg.bootstrap,
        "seed": cfg.seed,
        "ease_lambda": ease_lambda,
        "floors_fit_on": "train + valid" if split == "test" and cfg.refit_on_valid else "train",
        "data_fingerprint": sha256_tree(data_dir / "splits" / "loo"),
        "mrr": "over the stage's whole list (catalogue or candidates); no cutoff",
        "unknown_targets": int((data.targets < 0).sum()),
        "targets_in_history": int(sum(t in set(h) for t, h in zip(data.targets, data.histories))),
    }


def evaluate_baselines(
    data_dir: str | Path,
    split: str = "test",
    *,
    cfg: EvalConfig | None = None,
    sampled: int | None = None,
    progress: bool = False,
) -> tuple[dict[str, StageResult], dict[str, Any], EvalData, Split]:
    """The floors (most-popular, EASE or item-kNN, Markov) on a prepared dataset.

    Returns (results by stage, protocol, the EvalData, the split).
    """
    cfg = cfg or EvalConfig()
    if sampled is not None and sampled <= 0:
        raise ConfigError(f"--sampled-negatives must be positive, got {sampled}")
    d = Path(data_dir)
    ds = load_dataset(d)
    split_obj = load_split(d, "loo")
    items = catalogue(split_obj, ds.items)
    data = eval_data(split_obj, split, items, cfg.refit_on_valid)
    bars: dict[str, Any] = {}

    def cb(name: str, n: int) -> None:
        if name not in bars:
            for b in bars.values():
                b.close()
            from tqdm.auto import tqdm

            bars[name] = tqdm(total=data.n_users, desc=name, file=sys.stderr, leave=False)
        bars[name].update(n)

    try:
        results, data = evaluate_floors(
            split_obj,
            items,
            split,
            cfg,
            sampled=sampled,
            data=data,
            progress=cb if progress else None,
        )
    finally:
        for b in bars.values():
            b.close()
    lam = next(
        (r.info.get("ease_lambda") for r in results.values() if "ease_lambda" in r.info), None
    )
    return results, _protocol(d, data, cfg, split, lam), data, split_obj


# ---------------------------------------------------------------------------------------------
# model stages


def _history_times(split: Split, data: EvalData) -> list[list[int]] | None:
    """History timestamps aligned with ``data.history_ids``; None when any is missing."""
    hist_df = split.train if data.part == "valid" else pl.concat([split.train, split.valid])
    if hist_df["timestamp"].null_count() > 0:
        return None
    g = hist_df.sort(["user_id", "seq"]).group_by("user_id", maintain_order=True).agg("timestamp")
    ts = dict(zip(g["user_id"].to_list(), g["timestamp"].to_list()))
    return [list(ts.get(u, [])) for u in data.user_ids]


class _RetrievalScorer:
    """Adapts RetrievalModel.score_all (item ids, model item order) to dense catalogue indices."""

    def __init__(self, model: Any, data: EvalData, times: list[list[int]] | None) -> None:
        self.model = model
        self.data = data
        self.times = times
        self.pos = 0
        idx = (
            model.index
            if hasattr(model, "index")
            else {it: i for i, it in enumerate(model.item_ids)}
        )
        self.cols = np.array([idx.get(i, -1) for i in data.item_ids], dtype=np.int64)
        if (self.cols < 0).any():
            log.warning(
                "retrieval: %d catalogue items unknown to the model score -inf",
                int((self.cols < 0).sum()),
            )

    def user_block(self, rows: slice) -> np.ndarray:
        hist = [self.data.history_ids[i] for i in range(rows.start, rows.stop)]
        ts = self.times[rows] if self.times is not None else None
        s = np.asarray(self.model.score_all(hist, ts), dtype=np.float32)
        out = np.full((len(hist), self.data.n_items), -np.inf, dtype=np.float32)
        ok = self.cols >= 0
        out[:, ok] = s[:, self.cols[ok]]
        return out

    def __call__(self, hist: Sequence[np.ndarray]) -> np.ndarray:
        # evaluate_scorer walks users in order, in blocks: keep our own cursor
        rows = slice(self.pos, self.pos + len(hist))
        self.pos += len(hist)
        return self.user_block(rows)


def _retrieval_stage(
    run: RunDir,
    data: EvalData,
    split: Split,
    cfg: EvalConfig,
    device: str,
    sampled: int | None,
    progress: bool,
) -> tuple[dict[str, StageResult], Any]:
    from retrieval.model import RetrievalModel

    t0 = time.perf_counter()
    model = RetrievalModel.load(run.stage("retrieval"), device=device)
    scorer = _RetrievalScorer(model, data, _history_times(split, data))
    with _bar("retrieval", data.n_users, progress) as cb:
        res = evaluate_scorer("retrieval", scorer, data, cfg, sampled=sampled, progress=cb)
    for r in res.values():
        r.info["wall_s"] = round(time.perf_counter() - t0, 2)
    return res, model


def _ann_stage(
    run: RunDir,
    data: EvalData,
    split: Split,
    cfg: EvalConfig,
    model: Any,
    index_cfg: Any,
    progress: bool,
) -> StageResult:
    from index.vector_index import VectorIndex

    t0 = time.perf_counter()
    vi = VectorIndex.load(
        run.stage("index"), expected_encoder_sha256=str(model.encoder_sha256), cfg=index_cfg
    )
    times = _history_times(split, data)
    # The index holds the whole catalogue (items without events too); the protocol ranks over
    # the evaluation catalogue only, so everything else is excluded like a seen item.
    outside = set(vi.ids) - set(data.item_ids)
    frames = []
    step = cfg.chunk_users
    with _bar("retrieval_ann", data.n_users, progress) as cb:
        for s in range(0, data.n_users, step):
            hist = data.history_ids[s : s + step]
            q = model.encode_users(hist, times[s : s + step] if times is not None else None)
            # the same seen rule as the full ranking (a repeat target is excluded too, unless
            # keep_seen_target)
            ex = [
                (set(h) - ({t} if cfg.keep_seen_target else set()) if cfg.filter_seen else set())
                | outside
                for h, t in zip(hist, data.target_ids[s : s + step])
            ]
            ids, scores = vi.search(q, cfg.topk, exclude=ex if any(ex) else None)
            for u, row, sc in zip(data.user_ids[s : s + step], ids, scores):
                keep = [j for j, x in enumerate(row) if x is not None]
                frames.append(
                    pl.DataFrame(
                        {
                            "user_id": [u] * len(keep),
                            "item_id": [str(row[j]) for j in keep],
                            "rank": list(range(len(keep))),
                            "score": [float(sc[j]) for j in keep],
                        },
                        schema={
                            "user_id": pl.Utf8,
                            "item_id": pl.Utf8,
                            "rank": pl.Int64,
                            "score": pl.Float32,
                        },
                    )
                )
            if cb is not None:
                cb(len(hist))
    table = (
        pl.concat(frames)
        if frames
        else pl.DataFrame(
            schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "rank": pl.Int64, "score": pl.Float32}
        )
    )
    return table_result(
        "retrieval_ann",
        table,
        data,
        cfg,
        info={
            "filter_seen": cfg.filter_seen,
            "excluded_outside_catalogue": len(outside),
            "index": vi.describe(),
            "wall_s": round(time.perf_counter() - t0, 2),
        },
    )


def _reranked_stage(
    run: RunDir,
    data: EvalData,
    retrieval: StageResult,
    items: pl.DataFrame,
    cfg: EvalConfig,
    device: str,
    progress: bool,
) -> tuple[StageResult, dict[str, Any]]:
    """HOOK (ranking engineer's API, ranking/): retrieval top-``rerank_top`` (seen filtered) ->
    ``Reranker`` logits -> calibrated fused score orders the list; click probabilities feed the
    calibration metrics. A target retrieval missed stays a miss (never inserted)."""
    from ranking.model import Reranker
    from ranking.pairs import Group
    from ranking.train import TextTables, group_logits

    t0 = time.perf_counter()
    rr = Reranker.load(run.stage("ranking"), device=device)
    rc = rr.cfg
    n = min(rc.rerank_top, retrieval.top_items.shape[1]) if retrieval.top_items is not None else 0
    if n <= 0:
        raise RecError("reranked: the retrieval stage kept no candidates to rerank")
    ids = np.array(data.item_ids, dtype=object)
    groups = []
    for u in range(data.n_users):
        cand = retrieval.top_items[u, :n]
        cand = cand[cand >= 0]
        labels = (cand == data.targets[u]).astype(np.float32)
        groups.append(
            Group(
                data.user_ids[u],
                data.history_ids[u],
                data.target_ids[u],
                [str(x) for x in ids[cand]],
                labels,
                np.arange(len(cand)),
            )
        )
    logits = group_logits(
        rr.encoder,
        groups,
        TextTables.from_items(items, rc),
        rc.eval_batch_size,
        progress=progress,
        desc="reranked",
    )
    cal = rr.calibrator
    rows_u, rows_i, rows_r, rows_s = [], [], [], []
    probs, labels = [], []
    for g, lg in zip(groups, logits):
        score = cal.score(lg, g.ranks)
        order = np.argsort(-score, kind="stable")
        rows_u += [g.user_id] * len(order)
        rows_i += [g.candidates[j] for j in order]
        rows_r += list(range(len(order)))
        rows_s += [float(score[j]) for j in order]
        probs.append(cal.transform(lg, g.ranks))
        labels.append(g.labels)
    table = pl.DataFrame(
        {"user_id": rows_u, "item_id": rows_i, "rank": rows_r, "score": rows_s},
        schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "rank": pl.Int64, "score": pl.Float32},
    )
    p = np.concatenate(probs) if probs else np.zeros(0)
    y = np.concatenate(labels) if labels else np.zeros(0)
    cal_out: dict[str, Any] = {
        **click_metrics(y, p, cfg.ece_bins, cfg.ece_strategy),
        "bins": cfg.ece_bins,
        "strategy": cfg.ece_strategy,
        "table": calibration_bins(y, p, cfg.ece_bins, cfg.ece_strategy),
    }
    res = table_result(
        "reranked",
        table,
        data,
        cfg,
        ceiling=True,
        info={
            "filter_seen": cfg.filter_seen,
            "rerank_top": n,
            "calibrator": cal.method,
            "wall_s": round(time.perf_counter() - t0, 2),
        },
    )
    return res, cal_out


def _funnel(data: EvalData, results: dict[str, StageResult], n_cand: int) -> list[dict[str, Any]]:
    r = results["retrieval"].ranks
    final = results.get("reranked", results["retrieval"])
    return [
        {"step": "catalogue", "items": data.n_items, "share": float((data.targets >= 0).mean())},
        {
            "step": f"candidates\n(retrieval top {n_cand})",
            "items": n_cand,
            "share": float((r < n_cand).mean()),
        },
        {"step": f"top 10\n({final.name})", "items": 10, "share": float((final.ranks < 10).mean())},
    ]


# ---------------------------------------------------------------------------------------------
# the run


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    export_rankings: str | Path | None = None,
    sampled: int | None = None,
    stages: Sequence[str] | None = None,
    *,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a run on ``split`` (``test`` | ``valid``) and write RUN/eval.

    Args:
        run_dir: a run directory with a manifest and a prepared dataset.
        split: the leave-one-out part to score (the test split is meant to be read once).
        export_rankings: write each evaluated user's top-100 per stage to this Parquet file.
        sampled: also report SAMPLED-negative metrics with this many negatives (labelled).
        stages: model stages to evaluate (default: every one present); floors always run.
        device: torch device for model stages (default: the run's config).
        progress: progress bars on stderr.

    Returns:
        ``{stage: metrics}`` as written to RUN/eval/metrics.json (test) or
        RUN/eval/valid/metrics.json (valid).
    """
    from rec.device import resolve_device

    run = RunDir(run_dir).require()
    rcfg = run.config()
    cfg: EvalConfig = rcfg.eval
    unknown = sorted(set(stages or ()) - set(MODEL_STAGES))
    if unknown:
        raise ConfigError(f"unknown stage {unknown[0]!r} (known: {', '.join(MODEL_STAGES)})")
    want = set(stages) if stages is not None else set(MODEL_STAGES)
    data_dir = run.dataset_dir()
    results, protocol, data, split_obj = evaluate_baselines(
        data_dir, split, cfg=cfg, sampled=sampled, progress=progress
    )
    dev = resolve_device(device or rcfg.device)
    funnel = calibration = None
    model = None
    has_retrieval = (run.stage("retrieval") / "model.json").is_file()
    if has_retrieval and want & {"retrieval", "retrieval_ann", "reranked"}:
        res, model = _retrieval_stage(run, data, split_obj, cfg, dev, sampled, progress)
        results.update(res)
    if (
        model is not None
        and "retrieval_ann" in want
        and (run.stage("index") / "index.json").is_file()
    ):
        results["retrieval_ann"] = _ann_stage(
            run, data, split_obj, cfg, model, rcfg.index, progress
        )
    if (
        model is not None
        and "reranked" in want
        and (run.stage("ranking") / "ranking.json").is_file()
    ):
        items = load_dataset(data_dir).items
        results["reranked"], calibration = _reranked_stage(
            run, data, results["retrieval"], items, cfg, dev, progress
        )
    if "retrieval" not in want:
        results = {k: v for k, v in results.items() if k.split(":")[0] != "retrieval"}
    elif "retrieval" in results:
        n_cand = (
            int(results["reranked"].info["rerank_top"])
            if "reranked" in results
            else rcfg.ranking.rerank_top
        )
        funnel = _funnel(data, results, n_cand)
    out_dir = run.stage("eval") if split == "test" else run.stage("eval") / "valid"
    significance = compare_to_floor(results, cfg)
    write_report(
        out_dir,
        results,
        protocol,
        funnel=funnel,
        calibration=calibration,
        significance=significance,
    )
    if export_rankings is not None:
        primary = {k: v for k, v in results.items() if ":" not in k}
        write_rankings(export_rankings, rankings_table(primary, data, min(100, cfg.topk)))
    metrics = metrics_dict(results)
    key = "eval" if split == "test" else "eval_valid"
    run.update_manifest(
        part="eval", info={"split": split, "stages": list(results)}, metrics={key: metrics}
    )
    return metrics
