"""Configuration of offline evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class EvalConfig:
    """Leave-one-out full-ranking evaluation (../shared/PROTOCOL.md)."""

    ks: tuple[int, ...] = (5, 10, 20, 50, 100)
    filter_seen: bool = True  # remove history items from the ranking (PROTOCOL.md)
    keep_seen_target: bool = False  # False: a repeat target is filtered too and counts as a miss
    both_seen_modes: bool = True  # also report the other filter setting as `<stage>:unfiltered`
    ties: Literal["pessimistic", "optimistic"] = "pessimistic"  # items scoring equal rank above
    bootstrap: int = 1000  # resamples of users for the NDCG@10 95% CI and the paired test
    seed: int = 0  # bootstrap and sampled-negative draws
    baseline_knn: str = "ease"  # ease | itemknn
    ease_lambdas: tuple[float, ...] = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)  # on valid
    refit_on_valid: bool = True  # for split=test, floors are fit on train + valid events
    topk: int = 100  # top-k kept per user and stage (coverage, exports, plots)
    chunk_users: int = 1024  # users scored per block (memory: chunk x n_items floats)
    ece_bins: int = 10
    ece_strategy: Literal["width", "mass"] = "width"
