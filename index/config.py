"""Configuration of the vector index stage (no torch import anywhere in index/)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IndexConfig:
    """FAISS index choice and search parameters."""

    factory: str = "auto"  # auto | Flat | IVF{n},Flat | HNSW{m} | IVF{n},PQ{m} ...
    use_gpu: str = "auto"  # auto | never | always
    nprobe: int = 32
    ef_search: int = 128
    candidates: int = 200
