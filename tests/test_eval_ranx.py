"""Agreement with ranx (an independent implementation) to 1e-6, full ranking and run tables."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest

from eval.evaluate import evaluate_run_table
from eval.metrics import ap_at_k, ranking_metrics, ranks_from_scores

ranx = pytest.importorskip("ranx")

KS = (5, 10, 20)


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(7)
    n_users, n_items = 60, 40
    scores = rng.permutation(n_users * n_items).reshape(n_users, n_items).astype(np.float32)
    targets = rng.integers(0, n_items, size=n_users)
    seen = [
        np.setdiff1d(rng.choice(n_items, rng.integers(0, 8), replace=False), [targets[u]])
        for u in range(n_users)
    ]
    return scores, targets, seen


def _ranx(qrels: dict, run: dict, metrics: list[str]) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), metrics)
    return {k: float(v) for k, v in out.items()}


def test_full_ranking_matches_ranx(case):
    scores, targets, seen = case
    ranks, _, _ = ranks_from_scores(scores, targets, seen, filter_seen=True)
    ours = ranking_metrics(ranks, KS)
    qrels = {f"u{u}": {f"i{targets[u]}": 1} for u in range(len(targets))}
    run = {}
    for u in range(len(targets)):
        drop = set(seen[u].tolist())
        run[f"u{u}"] = {
            f"i{j}": float(scores[u, j]) for j in range(scores.shape[1]) if j not in drop
        }
    names = [f"{m}@{k}" for m in ("hit_rate", "ndcg", "map") for k in KS] + ["mrr"]
    ref = _ranx(qrels, run, names)
    for k in KS:
        assert ours[f"recall@{k}"] == pytest.approx(ref[f"hit_rate@{k}"], abs=1e-6)
        assert ours[f"ndcg@{k}"] == pytest.approx(ref[f"ndcg@{k}"], abs=1e-6)
        assert float(ap_at_k(ranks, k).mean()) == pytest.approx(ref[f"map@{k}"], abs=1e-6)
    assert ours["mrr"] == pytest.approx(ref["mrr"], abs=1e-6)


def test_run_table_matches_ranx(case):
    scores, targets, seen = case
    _, top, top_s = ranks_from_scores(scores, targets, seen, topk=15)
    users = [f"u{u}" for u in range(len(targets))]
    table = pl.DataFrame(
        {
            "user_id": np.repeat(users, 15).tolist(),
            "item_id": [f"i{j}" for j in top.ravel()],
            "rank": np.tile(np.arange(15), len(users)),
            "score": top_s.ravel(),
            "stage": ["retrieval"] * top.size,
        }
    )
    truth = pl.DataFrame({"user_id": users, "item_id": [f"i{t}" for t in targets]})
    ours = evaluate_run_table(table, truth, ks=(5, 10))["retrieval"]
    run = {u: {f"i{j}": float(s) for j, s in zip(top[i], top_s[i])} for i, u in enumerate(users)}
    qrels = {u: {f"i{targets[i]}": 1} for i, u in enumerate(users)}
    ref = _ranx(qrels, run, ["hit_rate@5", "hit_rate@10", "ndcg@5", "ndcg@10", "mrr"])
    assert ours["recall@5"] == pytest.approx(ref["hit_rate@5"], abs=1e-6)
    assert ours["recall@10"] == pytest.approx(ref["hit_rate@10"], abs=1e-6)
    assert ours["ndcg@5"] == pytest.approx(ref["ndcg@5"], abs=1e-6)
    assert ours["ndcg@10"] == pytest.approx(ref["ndcg@10"], abs=1e-6)
    assert ours["mrr"] == pytest.approx(ref["mrr"], abs=1e-6)  # over the 15-item lists
    assert ours["n_users"] == len(users)
