"""Configuration of offline evaluation."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalConfig:
    """Leave-one-out full-ranking evaluation (../shared/PROTOCOL.md)."""

    ks: tuple[int, ...] = (5, 10, 20, 50, 100)
    filter_seen: bool = True
    bootstrap: int = 1000
    baseline_knn: str = "ease"  # ease | itemknn
