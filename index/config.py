"""Configuration of the vector index stage (no torch import anywhere in index/)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rec.errors import ConfigError


@dataclass(frozen=True)
class IndexConfig:
    """FAISS index choice and search parameters.

    ``factory = "auto"`` picks by catalogue size ``n``: exact ``Flat`` up to ``flat_max`` items,
    ``HNSW{hnsw_m},Flat`` up to ``hnsw_max`` (0 = never), ``IVF{nlist},Flat`` below ``ivfpq_min``
    and ``IVF{nlist},PQ{d/4}`` from there, with ``nlist`` about ``4 * sqrt(n)`` (a power of two).
    Any other value is a FAISS factory string (``Flat``, ``IVF4096,Flat``, ``HNSW32``, ...).

    HNSW is off in ``auto`` by default: on the benchmark (bench/bench_index.py, 100k-1M clustered
    vectors, 2 CPU cores) IVF-Flat reached Recall@100 >= 0.99 with lower latency, half the
    memory, a 5-10x shorter build and real removal, while HNSW32 (efSearch 256) reached 0.985 at
    100k and 0.942 at 1M. Set ``hnsw_max`` to use it.
    """

    factory: str = "auto"  # auto | Flat | IVF{n},Flat | HNSW{m} | IVF{n},PQ{m} ...
    use_gpu: Literal["auto", "never", "always"] = "auto"
    nprobe: int = 0  # IVF lists probed per query; 0 = auto (nlist / 32, at least 64)
    ef_search: int = 256  # HNSW beam width at search time (at least k is used)
    candidates: int = 200  # retrieved candidates handed to the reranker
    flat_max: int = 100_000  # auto: exact Flat up to this many items
    hnsw_max: int = 0  # auto: HNSW for flat_max < n <= hnsw_max (0 = never)
    ivfpq_min: int = 10_000_000  # auto: IVF-PQ from this many items (memory)
    hnsw_m: int = 32  # auto: HNSW graph degree
    ef_construction: int = 160  # HNSW beam width while building
    train_per_list: int = 64  # IVF: training vectors per inverted list (k-means sample size)
    kmeans_iters: int = 10  # IVF: k-means iterations when training the coarse quantizer
    search_batch: int = 4096  # queries per faiss call when searching many users
    # OpenMP threads for searches (and building when > 0); 0 = auto: one thread for a single user
    # (several times faster than FAISS's default on a busy machine), FAISS's default otherwise
    threads: int = 0
    gpu_device: int = 0

    def __post_init__(self) -> None:
        for name in (
            "flat_max",
            "ivfpq_min",
            "hnsw_m",
            "ef_construction",
            "train_per_list",
            "kmeans_iters",
            "search_batch",
            "candidates",
            "ef_search",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"index.{name} must be positive, got {getattr(self, name)}")
        if self.hnsw_max < 0:
            raise ConfigError(f"index.hnsw_max must be >= 0 (0 = never), got {self.hnsw_max}")
        if self.threads < 0:
            raise ConfigError(f"index.threads must be >= 0 (0 = auto), got {self.threads}")
        if self.nprobe < 0:
            raise ConfigError(f"index.nprobe must be >= 0 (0 = auto), got {self.nprobe}")
        if self.use_gpu not in ("auto", "never", "always"):
            raise ConfigError(f"index.use_gpu must be auto, never or always, not {self.use_gpu!r}")
        if not self.factory.strip():
            raise ConfigError('index.factory must not be empty (use "auto")')
