"""Metrics against hand-computed values and edge cases (eval/metrics.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from eval.metrics import (
    MISSING,
    auc,
    average_popularity,
    bootstrap_ci,
    calibration_bins,
    catalogue_coverage,
    ece,
    hit_at_k,
    log_loss,
    metric_keys,
    ndcg_at_k,
    paired_test,
    ranking_metrics,
    ranks_from_scores,
    reciprocal_rank,
    sampled_ranks,
    slice_masks,
)

INF = MISSING


def test_known_ranks_give_known_values():
    ranks = np.array([0, 1, 4, 9, INF])
    m = ranking_metrics(ranks, ks=(1, 5, 10))
    assert m["recall@1"] == pytest.approx(1 / 5)
    assert m["recall@5"] == pytest.approx(3 / 5)
    assert m["recall@10"] == pytest.approx(4 / 5)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5)
    assert m["ndcg@10"] == pytest.approx(
        (1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11)) / 5
    )
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 10) / 5)
    assert m["n_users"] == 5
    assert list(m) == [*metric_keys((1, 5, 10)), "n_users"]


def test_mrr_is_over_the_whole_list_not_a_cutoff():
    ranks = np.array([200.0])
    assert ranking_metrics(ranks)["mrr"] == pytest.approx(1 / 201)
    assert reciprocal_rank(ranks, k=100)[0] == 0.0


def test_metric_keys_are_exact():
    m = ranking_metrics(np.array([0.0]))
    assert set(m) == {f"{n}@{k}" for n in ("recall", "ndcg") for k in (5, 10, 20, 50, 100)} | {
        "mrr",
        "n_users",
    }


def test_bad_ranks_raise():
    with pytest.raises(ValueError):
        hit_at_k(np.array([-1.0]), 5)
    with pytest.raises(ValueError):
        ndcg_at_k(np.array([np.nan]), 5)


def test_empty_ranks():
    m = ranking_metrics(np.zeros(0))
    assert m["n_users"] == 0 and m["ndcg@10"] == 0.0


SCORES = np.array(
    [
        [0.9, 0.1, 0.5, 0.7, 0.3],  # target 2: above it 0 and 3
        [0.2, 0.2, 0.2, 0.9, 0.0],  # target 1: ties with items 0 and 2
        [0.1, 0.2, 0.3, 0.4, 0.5],  # target 0: last
    ],
    dtype=np.float32,
)
TARGETS = np.array([2, 1, 0])


def test_ranks_without_seen_filter():
    r, _, _ = ranks_from_scores(SCORES, TARGETS, filter_seen=False)
    assert r.tolist() == [2.0, 3.0, 4.0]  # pessimistic: 2 ties + 1 greater for user 1
    r, _, _ = ranks_from_scores(SCORES, TARGETS, filter_seen=False, ties="optimistic")
    assert r.tolist() == [2.0, 1.0, 4.0]


def test_ranks_with_seen_filtered_list_and_csr():
    seen = [np.array([0]), np.array([3, 0]), np.array([4, 0])]  # user 2's target is seen
    r, _, _ = ranks_from_scores(SCORES, TARGETS, seen)
    # user 0: item 0 removed -> only 3 above; user 1: 3 and 0 removed -> tie with 2 only;
    # user 2: the target is a repeat: filtered with the history -> a miss
    assert r.tolist() == [1.0, 1.0, INF]
    k, _, _ = ranks_from_scores(SCORES, TARGETS, seen, keep_target=True)
    assert k.tolist() == [1.0, 1.0, 3.0]  # user 2: 4 removed, the target kept -> 1, 2, 3 above
    csr = sp.csr_matrix(([True] * 5, ([0, 1, 1, 2, 2], [0, 3, 0, 4, 0])), shape=(3, 5))
    r2, _, _ = ranks_from_scores(SCORES, TARGETS, csr)
    assert r2.tolist() == r.tolist()
    assert np.isinf(sampled_ranks(SCORES, TARGETS, seen, 2)[2])
    assert sampled_ranks(SCORES, TARGETS, seen, 2, keep_target=True)[2] == 2.0
    r3, _, _ = ranks_from_scores(SCORES, TARGETS, seen, filter_seen=False)
    assert r3.tolist() == [2.0, 3.0, 4.0]


def test_constant_scorer_ranks_every_target_last():
    s = np.zeros((4, 10), dtype=np.float32)
    r, _, _ = ranks_from_scores(s, np.array([0, 3, 5, 9]), filter_seen=False)
    assert (r == 9).all()


def test_unknown_target_and_nan_score_are_missing():
    s = SCORES.copy()
    s[1, 1] = np.nan
    r, _, _ = ranks_from_scores(s, np.array([-1, 1, 0]), filter_seen=False)
    assert np.isinf(r[0]) and np.isinf(r[1]) and r[2] == 4


def test_chunking_and_callable_match_the_matrix():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(37, 23)).astype(np.float32)
    s[:, 5] = s[:, 6]  # some ties
    t = rng.integers(0, 23, size=37)
    seen = [rng.choice(23, size=rng.integers(0, 6), replace=False) for _ in range(37)]
    full, ti, ts = ranks_from_scores(s, t, seen, topk=7, keep_target=True)
    small, ti2, ts2 = ranks_from_scores(s, t, seen, chunk_size=4, topk=7, keep_target=True)
    calls = []

    def fn(rows: slice) -> np.ndarray:
        calls.append(rows)
        return s[rows]

    viafn, _, _ = ranks_from_scores(fn, t, seen, n_items=23, chunk_size=10, keep_target=True)
    assert np.array_equal(full, small) and np.array_equal(full, viafn)
    assert np.array_equal(ti, ti2) and np.array_equal(ts, ts2)
    assert len(calls) == 4
    # brute force
    for u in range(37):
        keep = np.ones(23, bool)
        keep[seen[u]] = False
        keep[t[u]] = True
        above = (s[u] >= s[u, t[u]]) & keep
        above[t[u]] = False
        assert full[u] == above.sum()
        order = sorted(
            np.flatnonzero(keep & ~np.isin(np.arange(23), [])), key=lambda j: (-s[u, j], j)
        )
        assert ti[u].tolist() == order[:7]
        assert not set(ti[u]) & (set(seen[u].tolist()) - {t[u]})
    strict, _, _ = ranks_from_scores(s, t, seen)  # repeats filtered: misses, the rest equal
    repeat = np.array([t[u] in seen[u] for u in range(37)])
    assert repeat.any() and np.isinf(strict[repeat]).all()
    assert np.array_equal(strict[~repeat], full[~repeat])


def test_shape_errors():
    with pytest.raises(ValueError):
        ranks_from_scores(SCORES, np.array([0, 1]))
    with pytest.raises(ValueError):
        ranks_from_scores(SCORES, np.array([0, 1, 7]))
    with pytest.raises(ValueError):
        ranks_from_scores(lambda rows: SCORES[rows], TARGETS)


def test_sampled_ranks_with_all_negatives_equal_full_ranking():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(20, 15)).astype(np.float32)
    t = rng.integers(0, 15, size=20)
    seen = [np.setdiff1d(rng.choice(15, 3, replace=False), [t[u]]) for u in range(20)]
    full, _, _ = ranks_from_scores(s, t, seen)
    samp = sampled_ranks(s, t, seen, n_negatives=100)
    assert np.array_equal(full, samp)
    few = sampled_ranks(s, t, seen, n_negatives=3, seed=5)
    assert (few <= 3).all() and (few <= full).all()
    assert np.array_equal(few, sampled_ranks(s, t, seen, n_negatives=3, seed=5))


def test_auc_logloss_ece_by_hand():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.8, 0.3, 0.1])
    assert auc(y, p) == pytest.approx(0.75)  # pairs: (0.9>0.8, 0.9>0.1, 0.3<0.8, 0.3>0.1)
    assert auc(y, np.full(4, 0.5)) == pytest.approx(0.5)
    assert math.isnan(auc(np.ones(3), np.ones(3)))
    expected = -(math.log(0.9) + math.log(0.2) + math.log(0.3) + math.log(0.9)) / 4
    assert log_loss(y, p) == pytest.approx(expected)
    # 2 equal-width bins: [0, .5): p .3 .1 -> mean .2, rate .5; [.5, 1]: .9 .8 -> .85, .5
    assert ece(y, p, n_bins=2) == pytest.approx(0.5 * 0.3 + 0.5 * 0.35)
    b = calibration_bins(y, p, n_bins=2, strategy="mass")
    assert b["count"].tolist() == [2, 2]
    assert ece(y, p, n_bins=2, strategy="mass") == pytest.approx(0.5 * 0.3 + 0.5 * 0.35)
    assert ece(np.array([1, 0]), np.array([1.0, 0.0]), n_bins=10) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        ece(y, p, strategy="nope")  # type: ignore[arg-type]


def test_coverage_popularity_slices():
    top = np.array([[0, 1, 2], [0, 1, 3]])
    assert catalogue_coverage(top, 10, k=2) == pytest.approx(0.2)
    assert catalogue_coverage(top, 10, k=3) == pytest.approx(0.4)
    counts = np.array([10, 5, 1, 0])
    assert average_popularity(top, counts, k=3) == pytest.approx((10 + 5 + 1 + 10 + 5 + 0) / 6)
    m = slice_masks(np.array([0, 3, -1, 1]), np.array([1, 2, 3, 10]), counts)
    assert m["cold_target"].tolist() == [False, True, True, False]
    assert m["warm_target"].tolist() == [True, False, False, True]
    assert m["short_history"].tolist() == [True, True, False, False]  # median 2.5
    assert m["long_history"].tolist() == [False, False, True, True]


def test_bootstrap_ci_and_paired_test():
    rng = np.random.default_rng(0)
    v = rng.random(500)
    lo, hi = bootstrap_ci(v, 500, seed=3)
    assert lo < v.mean() < hi and hi - lo < 0.1
    assert (lo, hi) == bootstrap_ci(v, 500, seed=3)
    better = paired_test(v + 0.05, v, 500, seed=0)
    assert better["mean_diff"] == pytest.approx(0.05)
    assert better["p_bootstrap"] < 0.01 and better["p_wilcoxon"] < 0.01
    same = paired_test(v, v, 200)
    assert same["p_bootstrap"] == 1.0 and math.isnan(same["p_wilcoxon"])
    noise = paired_test(v, rng.permutation(v), 500)
    assert noise["p_bootstrap"] > 0.01
