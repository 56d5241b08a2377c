"""A FAISS index over item vectors with string item ids, exclusion of seen items, add / remove,
atomic save and an encoder-hash check on load.

numpy and faiss are imported inside functions (faiss is optional until an index is built);
torch is never imported here. Scores are similarities, higher is better: inner product for
``ip``, cosine for ``cosine`` (vectors and queries are L2-normalised, then inner product) and the
negative squared Euclidean distance for ``l2``.

HNSW over inner product searches augmented vectors with L2 (``[x, sqrt(M^2 - |x|^2)]``, queries
``[q, 0]``), which ranks exactly by inner product and keeps HNSW's recall on two-tower vectors
whose norms differ; scores are converted back to inner products.

Ids: each item gets an int64 *slot* (0, 1, 2, ... in insertion order, never reused); FAISS stores
slots as labels (``IndexIDMap2`` around Flat / HNSW, native ids in IVF). Flat and IVF remove
vectors physically; HNSW cannot, so removed slots become tombstones skipped by an ``IDSelector``
at search time and dropped by ``compact()`` (automatic once they pass half the index).

On disk (``save``)::

    DIR/items.faiss      the CPU index (faiss.write_index)
    DIR/item_ids.json    item id per slot (null = removed)
    DIR/index.json       factory, metric, dim, ntotal, search params, encoder_sha256, created,
                         tombstones, size of items.faiss (written last)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from index.config import IndexConfig
from index.exact import METRICS, normalize
from rec.artifacts import atomic_dir, read_json, write_json
from rec.errors import ArtifactError, ConfigError, DataError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_FILE = "items.faiss"
IDS_FILE = "item_ids.json"
META_FILE = "index.json"
GPU_MAX_K = 2048  # FAISS GPU limit on k and nprobe
SINGLE_QUERY_MAX = 4  # threads = 0: searches of up to this many users run on one thread
# Exact (Flat) search of this many queries or more goes through BLAS matrix products. FAISS 1.15
# sets the threshold to 128000 (SIMD dot products); for k=100 over 100k x 64 BLAS took 5x less
# CPU time (0.23 s vs 1.14 s per 1000 users on one core).
FLAT_BLAS_MIN_QUERIES = 20


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ConfigError(
            "the vector index needs FAISS: pip install 'rec[cpu]' (faiss-cpu) or "
            "'rec[gpu]' (faiss-gpu-cu12)"
        ) from None
    return faiss


def gpu_available() -> bool:
    """True when the installed FAISS has GPU support and sees at least one GPU."""
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def resolve_use_gpu(use_gpu: str, factory: str = "") -> bool:
    """Decide whether to search on the GPU: ``auto`` | ``never`` | ``always``."""
    if use_gpu == "never":
        return False
    if use_gpu not in ("auto", "always"):
        raise ConfigError(f"index.use_gpu must be auto, never or always, not {use_gpu!r}")
    faiss = _faiss()
    if not hasattr(faiss, "StandardGpuResources"):
        reason = "the installed FAISS has no GPU support (faiss-cpu); install 'rec[gpu]'"
    elif faiss.get_num_gpus() == 0:
        reason = "FAISS sees no GPU"
    elif "HNSW" in factory.upper() and not factory.upper().startswith("IVF"):
        reason = f"FAISS has no GPU implementation of {factory}"
    else:
        reason = ""
    if use_gpu == "always" and reason:
        raise ConfigError(f"index.use_gpu = always but {reason}")
    log.info("index use_gpu=auto -> %s", f"cpu ({reason})" if reason else "gpu")
    return not reason


def auto_factory(n: int, d: int, cfg: IndexConfig) -> str:
    """The FAISS factory string ``factory = "auto"`` picks for ``n`` vectors of dimension ``d``."""
    if n <= cfg.flat_max:
        return "Flat"
    if n <= cfg.hnsw_max:
        return f"HNSW{cfg.hnsw_m},Flat"
    nlist = auto_nlist(n)
    if n < cfg.ivfpq_min:
        return f"IVF{nlist},Flat"
    m = max(1, d // 4)
    while d % m:
        m -= 1
    return f"IVF{nlist},PQ{m}"


def auto_nlist(n: int) -> int:
    """IVF list count: the power of two nearest 4 * sqrt(n), at least 1."""
    return max(1, 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n)))))


def auto_nprobe(nlist: int) -> int:
    """IVF lists probed by default: nlist / 32, at least 64.

    Recall@100 on the benchmark: 100k clustered vectors (1024 lists) 0.989 at 48; 1M (4096 lists)
    0.991 at 128; trained ml-latest-small / Scientific vectors (256 lists) 0.978-0.981 at 64.
    """
    return min(nlist, max(64, nlist // 32))


class VectorIndex:
    """Item vectors in a FAISS index, searched by user vectors; ids are item id strings."""

    def __init__(
        self,
        index: Any,
        ids: list[str | None],
        *,
        metric: str,
        factory: str,
        cfg: IndexConfig,
        encoder_sha256: str,
        created: str,
        tombstones: Iterable[int] = (),
        nprobe: int | None = None,
        ef_search: int | None = None,
        mips_norm: float | None = None,
    ) -> None:
        self._index = index
        self._mips_norm = mips_norm  # HNSW over inner product: the L2 reduction's M
        self._ids: list[str | None] = ids
        self._slot: dict[str, int] = {s: i for i, s in enumerate(ids) if s is not None}
        self._tomb: set[int] = set(int(t) for t in tombstones)
        self.metric = metric
        self.factory = factory
        self.cfg = cfg
        self.encoder_sha256 = encoder_sha256
        self.created = created
        self.dim = int(index.d) - (1 if mips_norm is not None else 0)
        self._id_array: Any = None
        self._gpu: Any = None
        self._gpu_idmap: Any = None
        self._gpu_res: Any = None
        inner = self._inner()
        faiss = _faiss()
        self.kind = (
            "ivf"
            if isinstance(inner, faiss.IndexIVF)
            else "hnsw"
            if isinstance(inner, faiss.IndexHNSW)
            else "flat"
            if isinstance(inner, faiss.IndexFlat)
            else "other"
        )
        nlist = int(inner.nlist) if self.kind == "ivf" else 0
        self.nprobe = min(nlist, nprobe or cfg.nprobe or auto_nprobe(nlist)) if nlist else 0
        self.ef_search = int(ef_search or cfg.ef_search)
        self.use_gpu = resolve_use_gpu(cfg.use_gpu, factory)
        if self.use_gpu:
            self._to_gpu()

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(
        cls,
        vectors: Any,
        ids: Sequence[str],
        cfg: IndexConfig | None = None,
        encoder_sha256: str = "",
        metric: str = "ip",
    ) -> VectorIndex:
        """Build an index over ``vectors`` [n, d] named by ``ids`` (unique strings).

        Args:
            vectors: float array [n, d], one row per item.
            ids: item ids, same order as ``vectors``.
            cfg: index configuration (factory, search parameters, GPU use).
            encoder_sha256: hash of the item encoder that produced ``vectors``; ``load`` checks it.
            metric: what the towers were trained with: ``ip``, ``cosine`` or ``l2``.
        """
        import numpy as np

        faiss = _faiss()
        cfg = cfg or IndexConfig()
        if metric not in METRICS:
            raise ConfigError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
        x = _check_vectors(vectors, None, "item vectors")
        ids = _check_ids(ids, x.shape[0])
        if x.shape[0] == 0:
            raise DataError("cannot build an index over an empty catalogue")
        n, d = x.shape
        factory = auto_factory(n, d, cfg) if cfg.factory == "auto" else cfg.factory
        if metric == "cosine":
            x = normalize(x)
        fmetric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        try:
            base = faiss.index_factory(d, factory, fmetric)
        except RuntimeError as exc:
            raise ConfigError(
                f"index.factory {factory!r} is not a valid FAISS factory string "
                f"for dimension {d}: {_faiss_msg(exc)}"
            ) from None
        inner = faiss.downcast_index(base)
        mips_norm = None
        if isinstance(inner, faiss.IndexHNSW) and metric == "ip":
            # HNSW searches inner products poorly when item norms differ (two-tower vectors):
            # Recall@100 0.95-0.97 on trained ml-latest-small / Scientific vectors at efSearch
            # 256. Exact reduction to L2 (Bachrach et al. 2014): x -> [x, sqrt(M^2 - |x|^2)],
            # q -> [q, 0]; then |q - x'|^2 = |q|^2 + M^2 - 2 q.x (0.993-0.999).
            mips_norm = float(np.linalg.norm(x, axis=1).max())
            base = _hnsw_base(d + 1, factory, faiss.METRIC_L2, cfg)
            inner = faiss.downcast_index(base)
            x = _augment(x, mips_norm)
        elif isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efConstruction = cfg.ef_construction
        index = base if isinstance(inner, faiss.IndexIVF) else faiss.IndexIDMap2(base)
        t0 = time.perf_counter()
        with _omp_threads(faiss, cfg.threads):
            if not base.is_trained:
                _train(base, inner, x, cfg, factory)
            index.add_with_ids(x, np.arange(n, dtype=np.int64))
        log.info("built %s (%s, %d x %d) in %.1fs", factory, metric, n, d, time.perf_counter() - t0)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return cls(
            index,
            list(ids),
            metric=metric,
            factory=factory,
            cfg=cfg,
            encoder_sha256=encoder_sha256,
            created=created,
            mips_norm=mips_norm,
        )

    # ------------------------------------------------------------------ properties

    @property
    def ntotal(self) -> int:
        """Number of (live) items."""
        return len(self._slot)

    @property
    def ids(self) -> list[str]:
        """Live item ids in slot order."""
        return [s for s in self._ids if s is not None]

    def __len__(self) -> int:
        return self.ntotal

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._slot

    def describe(self) -> dict[str, Any]:
        """What index.json records (without the id map)."""
        return {
            "format_version": FORMAT_VERSION,
            "factory": self.factory,
            "kind": self.kind,
            "metric": self.metric,
            "dim": self.dim,
            "ntotal": self.ntotal,
            "faiss_ntotal": int(self._index.ntotal),
            "search": {"nprobe": self.nprobe, "ef_search": self.ef_search},
            "encoder_sha256": self.encoder_sha256,
            "created": self.created,
            "tombstones": sorted(self._tomb),
            "mips_norm": self._mips_norm,
            "faiss_version": _faiss().__version__,
        }

    # ------------------------------------------------------------------ search

    def search(
        self, queries: Any, k: int, exclude: Sequence[Iterable[str]] | None = None
    ) -> tuple[Any, Any]:
        """Top-``k`` items for each query vector, best first.

        Args:
            queries: float array [u, d] (or [d] for one query).
            k: results per query (positive). Fewer live items than ``k`` -> padded with
                ``None`` ids and ``-inf`` scores.
            exclude: per query, item ids never to return (e.g. the user's history); still
                ``k`` results are returned when enough other items exist.

        Returns:
            (ids: object array [u, k] of str, scores: float32 array [u, k]).
        """
        import numpy as np

        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        q = _check_vectors(queries, self.dim, "query vectors")
        if self.metric == "cosine":
            q = normalize(q)
        u = q.shape[0]
        if exclude is not None and len(exclude) != u:
            raise ValueError(f"exclude has {len(exclude)} entries for {u} queries")
        out_ids = np.full((u, k), None, dtype=object)
        out_sc = np.full((u, k), -np.inf, dtype=np.float32)
        if self.ntotal == 0 or u == 0:
            return out_ids, out_sc
        step = self.cfg.search_batch
        for start in range(0, u, step):
            stop = min(u, start + step)
            ex = None
            if exclude is not None:
                ex = [{s for s in (e or ()) if s in self._slot} for e in exclude[start:stop]]
            ids_c, sc_c = self._search_chunk(q[start:stop], k, ex)
            out_ids[start:stop] = ids_c
            out_sc[start:stop] = sc_c
        return out_ids, out_sc

    def _search_chunk(self, q: Any, k: int, ex: list[set[str]] | None) -> tuple[Any, Any]:
        import numpy as np

        u = q.shape[0]
        n_live = self.ntotal
        want = min(k, n_live)
        if ex is None:
            labels, scores = self._search_raw(q, want)
            return self._labels_to_ids(labels, k), _pad(scores, k)
        need = [min(k, n_live - len(e)) for e in ex]
        out_ids = np.full((u, k), None, dtype=object)
        out_sc = np.full((u, k), -np.inf, dtype=np.float32)
        rows = np.arange(u)
        fetch = min(n_live, k + max((len(e) for e in ex), default=0))
        while len(rows):
            labels, scores = self._search_raw(q[rows], fetch)
            names = self._labels_to_ids(labels, fetch)
            short = []
            for j, r in enumerate(rows):
                e = ex[r]
                keep = [c for c in range(fetch) if names[j, c] is not None and names[j, c] not in e]
                keep = keep[:k]
                out_ids[r, : len(keep)] = names[j, keep]
                out_sc[r, : len(keep)] = scores[j, keep]
                if len(keep) < need[r]:
                    short.append(r)
            if not short or fetch >= n_live:
                break  # an ANN index may return fewer than asked for; nothing more to fetch
            rows = np.asarray(short)
            fetch = min(n_live, fetch * 2)
        return out_ids, out_sc

    def _search_raw(self, q: Any, fetch: int) -> tuple[Any, Any]:
        """FAISS search: (slot labels int64 [u, fetch], similarity float32 [u, fetch])."""
        import numpy as np

        faiss = _faiss()
        q_norm2 = None
        if self._mips_norm is not None:
            q_norm2 = (q * q).sum(1, keepdims=True)
            q = np.hstack([q, np.zeros((q.shape[0], 1), np.float32)])
        if self._gpu is not None and fetch <= GPU_MAX_K:
            dist, labels = self._gpu.search(q, fetch)
            if self._gpu_idmap is not None:
                labels = np.where(labels >= 0, self._gpu_idmap[np.maximum(labels, 0)], -1)
        else:
            if self.kind == "ivf":
                params = faiss.SearchParametersIVF()
                params.nprobe = self.nprobe
            elif self.kind == "hnsw":
                params = faiss.SearchParametersHNSW()
                params.efSearch = max(self.ef_search, fetch)
            else:
                params = faiss.SearchParameters()
            keep = None
            if self._tomb:
                batch = faiss.IDSelectorBatch(np.fromiter(self._tomb, dtype=np.int64))
                keep = faiss.IDSelectorNot(batch)
                params.sel = keep
            threads = self.cfg.threads or (1 if q.shape[0] <= SINGLE_QUERY_MAX else 0)
            blas = FLAT_BLAS_MIN_QUERIES if self.kind == "flat" else 0
            with _omp_threads(faiss, threads), _blas_threshold(faiss, blas):
                dist, labels = self._index.search(q, fetch, params=params)
            del keep
        if q_norm2 is not None:
            scores = 0.5 * (q_norm2 + np.float32(self._mips_norm) ** 2 - dist)
        else:
            scores = -dist if self.metric == "l2" else dist
        scores = np.where(labels >= 0, scores, -np.inf).astype(np.float32, copy=False)
        return labels, scores

    def _labels_to_ids(self, labels: Any, k: int) -> Any:
        import numpy as np

        if self._id_array is None:
            arr = np.empty(len(self._ids) + 1, dtype=object)
            arr[:-1] = self._ids
            arr[-1] = None  # label -1 (no result) maps to the last cell
            self._id_array = arr
        names = self._id_array[labels]
        if names.shape[1] < k:
            names = np.concatenate(
                [names, np.full((names.shape[0], k - names.shape[1]), None, dtype=object)], 1
            )
        return names

    # ------------------------------------------------------------------ updates

    def add(self, vectors: Any, ids: Sequence[str]) -> None:
        """Add items; an id already in the index has its vector replaced."""
        import numpy as np

        x = _check_vectors(vectors, self.dim, "item vectors")
        ids = _check_ids(ids, x.shape[0])
        if not len(ids):
            return
        existing = [s for s in ids if s in self._slot]
        if existing:
            self.remove(existing, _compact=False)
        if self.metric == "cosine":
            x = normalize(x)
        start = len(self._ids)
        slots = np.arange(start, start + len(ids), dtype=np.int64)
        longest = float(np.linalg.norm(x, axis=1).max())
        if self._mips_norm is not None and longest > self._mips_norm:
            self._rebuild_hnsw(mips_norm=longest)  # the reduction needs M >= every norm
        if self._mips_norm is not None:
            x = _augment(x, self._mips_norm)
        self._index.add_with_ids(x, slots)
        self._ids.extend(ids)
        self._slot.update((s, start + i) for i, s in enumerate(ids))
        self._changed()

    def remove(self, ids: Iterable[str], _compact: bool = True) -> None:
        """Remove items by id; an id not in the index raises DataError (nothing is removed)."""
        import numpy as np

        ids = list(dict.fromkeys(ids))
        unknown = [s for s in ids if s not in self._slot]
        if unknown:
            more = f" (and {len(unknown) - 3} more)" if len(unknown) > 3 else ""
            raise DataError(
                f"unknown item id{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown[:3]))}{more}: not in the index"
            )
        if not ids:
            return
        slots = np.array([self._slot.pop(s) for s in ids], dtype=np.int64)
        for s in slots:
            self._ids[s] = None
        if self.kind == "hnsw":
            self._tomb.update(int(s) for s in slots)
            if _compact and len(self._tomb) > 0.5 * self._index.ntotal:
                self.compact()
        else:
            self._index.remove_ids(_faiss().IDSelectorBatch(slots))
        self._changed()

    def compact(self) -> None:
        """Rebuild an HNSW graph without its tombstones (no-op for other kinds)."""
        if self._tomb:
            self._rebuild_hnsw(self._mips_norm)

    def _rebuild_hnsw(self, mips_norm: float | None) -> None:
        """Rebuild the HNSW graph from its stored vectors: drop tombstones, re-apply the
        inner-product reduction with ``mips_norm``."""
        import numpy as np

        faiss = _faiss()
        idmap = faiss.downcast_index(self._index)
        inner = faiss.downcast_index(idmap.index)
        pos_slots = faiss.vector_to_array(idmap.id_map)
        keep = np.flatnonzero(~np.isin(pos_slots, np.fromiter(self._tomb, dtype=np.int64)))
        vecs = inner.reconstruct_n(0, inner.ntotal)[keep] if inner.ntotal else None
        if self._mips_norm is not None and vecs is not None:
            vecs = np.ascontiguousarray(vecs[:, :-1])
        if mips_norm is not None and vecs is not None:
            vecs = _augment(vecs, mips_norm)
        new = faiss.IndexIDMap2(_hnsw_base(inner.d, self.factory, inner.metric_type, self.cfg))
        if vecs is not None and len(keep):
            with _omp_threads(faiss, self.cfg.threads):
                new.add_with_ids(vecs, pos_slots[keep])
        log.info("rebuilt HNSW index: dropped %d tombstones", len(self._tomb))
        self._index = new
        self._mips_norm = mips_norm
        self._tomb.clear()
        self._changed()

    def _changed(self) -> None:
        self._id_array = None
        if self._gpu is not None:
            self._to_gpu()

    # ------------------------------------------------------------------ GPU

    def _inner(self) -> Any:
        faiss = _faiss()
        idx = faiss.downcast_index(self._index)
        if isinstance(idx, faiss.IndexIDMap):
            return faiss.downcast_index(idx.index)
        return idx

    def _to_gpu(self) -> None:
        """Clone the CPU index to GPU ``cfg.gpu_device`` for searching (the CPU form stays)."""
        faiss = _faiss()
        if self._gpu_res is None:
            self._gpu_res = faiss.StandardGpuResources()
        src = self._index
        self._gpu_idmap = None
        if isinstance(faiss.downcast_index(self._index), faiss.IndexIDMap):
            src = self._inner()
            self._gpu_idmap = faiss.vector_to_array(faiss.downcast_index(self._index).id_map)
        try:
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_res, self.cfg.gpu_device, src)
        except RuntimeError as exc:
            msg = f"cannot move the {self.factory} index to the GPU: {_faiss_msg(exc)}"
            if self.cfg.use_gpu == "always":
                raise ConfigError(msg) from None
            log.warning("%s; index use_gpu=auto -> cpu", msg)
            self._gpu, self._gpu_idmap, self.use_gpu = None, None, False
            return
        if self.kind == "ivf":
            faiss.GpuParameterSpace().set_index_parameter(
                self._gpu, "nprobe", min(self.nprobe, GPU_MAX_K)
            )

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path, extra: Callable[[Path], None] | None = None) -> Path:
        """Write the index to ``directory`` atomically (a crash leaves the previous one intact).

        ``extra(tmp_dir)`` may write more files that are swapped in together with the index.
        """
        faiss = _faiss()
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            faiss.write_index(self._index, str(tmp / INDEX_FILE))
            write_json(tmp / IDS_FILE, self._ids)
            if extra is not None:
                extra(tmp)
            meta = self.describe()
            meta["items_faiss_bytes"] = os.path.getsize(tmp / INDEX_FILE)
            meta["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            write_json(tmp / META_FILE, meta)  # last: its presence marks a complete index
        return directory

    @classmethod
    def load(
        cls,
        directory: str | Path,
        expected_encoder_sha256: str | None = None,
        cfg: IndexConfig | None = None,
    ) -> VectorIndex:
        """Load an index saved by ``save``.

        Args:
            directory: folder holding index.json, items.faiss and item_ids.json.
            expected_encoder_sha256: when given, refuse (ArtifactError) an index built with
                another item encoder.
            cfg: search-time settings (nprobe, ef_search, use_gpu); default: those saved.
        """
        faiss = _faiss()
        d = resolve_index_dir(directory)
        meta = read_json(d / META_FILE)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"{d / META_FILE}: format_version {meta.get('format_version')} "
                f"is not {FORMAT_VERSION}"
            )
        stored = meta.get("encoder_sha256", "")
        if expected_encoder_sha256 is not None and stored != expected_encoder_sha256:
            raise ArtifactError(
                f"{d}: index was built with item encoder {stored[:12] or '(unknown)'} but the "
                f"retrieval model's encoder is {expected_encoder_sha256[:12]}; rebuild it with "
                "`rec build-index`"
            )
        path = d / INDEX_FILE
        if not path.is_file() or path.stat().st_size != meta.get("items_faiss_bytes"):
            raise ArtifactError(f"{path}: missing or truncated; rebuild with `rec build-index`")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise ArtifactError(f"{path}: unreadable FAISS index ({_faiss_msg(exc)})") from None
        ids = read_json(d / IDS_FILE)
        live = sum(s is not None for s in ids) if isinstance(ids, list) else -1
        if live != meta.get("ntotal") or index.ntotal != meta.get("faiss_ntotal"):
            raise ArtifactError(
                f"{d}: index files disagree (ids {live}, faiss {index.ntotal}, "
                f"index.json {meta.get('ntotal')}); rebuild with "
                "`rec build-index`"
            )
        search = meta.get("search", {})
        base_cfg = cfg or IndexConfig()
        return cls(
            index,
            ids,
            metric=meta["metric"],
            factory=meta["factory"],
            cfg=base_cfg,
            encoder_sha256=stored,
            created=meta.get("created", ""),
            tombstones=meta.get("tombstones", ()),
            nprobe=(cfg.nprobe if cfg is not None and cfg.nprobe else search.get("nprobe") or None),
            ef_search=(cfg.ef_search if cfg is not None else search.get("ef_search")),
            mips_norm=meta.get("mips_norm"),
        )


# ---------------------------------------------------------------------- helpers


def _hnsw_base(d: int, factory: str, metric_type: int, cfg: IndexConfig) -> Any:
    base = _faiss().index_factory(d, factory, metric_type)
    _faiss().downcast_index(base).hnsw.efConstruction = cfg.ef_construction
    return base


def _augment(x: Any, mips_norm: float) -> Any:
    """[x, sqrt(M^2 - |x|^2)]: inner-product search becomes L2 search (queries get a 0)."""
    import numpy as np

    sq = np.maximum(np.float32(mips_norm) ** 2 - (x * x).sum(1, keepdims=True), 0.0)
    return np.ascontiguousarray(np.hstack([x, np.sqrt(sq)]), dtype=np.float32)


def resolve_index_dir(directory: str | Path) -> Path:
    """The folder to load an index from: ``directory`` when it holds a complete index, else the
    newest complete previous version left next to it by a save killed between its two renames
    (``.NAME.old-*``, see rec.artifacts.atomic_dir); ArtifactError when there is none."""
    d = Path(directory)
    if (d / META_FILE).is_file():
        return d
    olds = sorted(
        (p for p in d.parent.glob(f".{d.name}.old-*") if (p / META_FILE).is_file()),
        key=lambda p: p.stat().st_mtime,
    )
    if olds:
        log.warning("%s: incomplete; using the previous index %s", d, olds[-1])
        return olds[-1]
    raise ArtifactError(f"{d}: no index here (no {META_FILE}); build it with `rec build-index`")


def _train(base: Any, inner: Any, x: Any, cfg: IndexConfig, factory: str) -> None:
    import numpy as np

    faiss = _faiss()
    n = x.shape[0]
    nlist = int(inner.nlist) if isinstance(inner, faiss.IndexIVF) else 1
    if n < nlist:
        raise ConfigError(
            f"index.factory {factory!r} has {nlist} lists but the catalogue has "
            f'only {n} items; use a smaller IVF or factory = "auto"'
        )
    n_train = min(n, max(cfg.train_per_list * nlist, 10_000))
    sample = x
    if n_train < n:
        rng = np.random.default_rng(0)
        sample = x[np.sort(rng.choice(n, n_train, replace=False))]
    if isinstance(inner, faiss.IndexIVF):
        inner.cp.niter = cfg.kmeans_iters
    try:
        base.train(sample)
    except RuntimeError as exc:
        raise ConfigError(
            f"cannot train index {factory!r} on {n} items: {_faiss_msg(exc)}"
        ) from None


def _check_vectors(vectors: Any, dim: int | None, what: str) -> Any:
    import numpy as np

    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise DataError(f"{what} must be a 2-D array, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ArtifactError(
            f"{what} have dimension {x.shape[1]} but the index has {dim}; "
            "was it built with another encoder?"
        )
    if x.size and not np.isfinite(x).all():
        raise DataError(f"{what} contain NaN or infinite values")
    return np.ascontiguousarray(x)


def _check_ids(ids: Sequence[str], n: int) -> list[str]:
    ids = [str(s) for s in ids]
    if len(ids) != n:
        raise DataError(f"{len(ids)} item ids for {n} vectors")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(s for s in ids if s in seen or seen.add(s))  # type: ignore[func-returns-value]
        raise DataError(f"duplicate item id {dup!r}")
    return ids


def _pad(scores: Any, k: int) -> Any:
    import numpy as np

    if scores.shape[1] >= k:
        return scores
    fill = np.full((scores.shape[0], k - scores.shape[1]), -np.inf, dtype=np.float32)
    return np.concatenate([scores, fill], 1)


@contextlib.contextmanager
def _omp_threads(faiss: Any, n: int) -> Iterator[None]:
    """Run the block with ``n`` OpenMP threads (0 = unchanged); the setting is restored after."""
    old = faiss.omp_get_max_threads()
    if n <= 0 or n == old:
        yield
        return
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)


@contextlib.contextmanager
def _blas_threshold(faiss: Any, n: int) -> Iterator[None]:
    """Run the block with FAISS's BLAS query threshold at ``n`` (0 = unchanged), then restore it."""
    cvar = getattr(faiss, "cvar", None)
    if n <= 0 or cvar is None or not hasattr(cvar, "distance_compute_blas_threshold"):
        yield
        return
    old = cvar.distance_compute_blas_threshold
    cvar.distance_compute_blas_threshold = n
    try:
        yield
    finally:
        cvar.distance_compute_blas_threshold = old


def _faiss_msg(exc: BaseException) -> str:
    """The useful last line of a FAISS C++ exception message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__
