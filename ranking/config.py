"""Configuration of the cross-encoder reranking stage."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RankingConfig:
    """Cross-encoder reranker over (history text, candidate text) pairs."""

    model: str = "packaged:all-MiniLM-L6-v2"
    max_tokens: int = 128
    rerank_top: int = 50
