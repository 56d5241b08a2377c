"""Configuration of the two-tower retrieval stage."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetrievalConfig:
    """Two-tower retrieval: item tower (text + ID + attributes), user tower (causal transformer)."""

    encoder: str = "packaged:all-MiniLM-L6-v2"  # local path, hub name, or the packaged MiniLM
    dim: int = 64
    max_len: int = 50
    epochs: int = 200
