"""Benchmark the vector index: build time, memory, single-user latency, batch throughput and
Recall@100 against exact search, for Flat / IVF / HNSW (and what ``factory = "auto"`` picks).

Synthetic item vectors are a Gaussian mixture (sqrt(n) clusters of uneven size, unit-normalised,
inner product, like two-tower item embeddings); each user vector is the normalised mean of 4
items drawn from one or two clusters plus noise. Ground truth is the exact Flat search, itself
checked against the numpy oracle (index/exact.py) on a few queries.

Prints Markdown rows (with the command, data, machine and date) for BENCHMARKS.md::

    python bench/bench_index.py                          # 100k and 1M x d 64, 384 (see --big-kinds)
    python bench/bench_index.py --sizes 100000 --dims 64 # quick subset
    python bench/bench_index.py --gpu                    # also GPU rows (needs faiss-gpu + a GPU)
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index.config import IndexConfig  # noqa: E402
from index.exact import exact_topk, recall_at_k  # noqa: E402
from index.vector_index import VectorIndex, auto_factory, auto_nlist, gpu_available  # noqa: E402

K = 100


def clustered_vectors(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item vectors [n, d], cluster centers, cluster of each item); unit-normalised float32."""
    rng = np.random.default_rng(seed)
    nc = max(32, int(np.sqrt(n)))
    centers = rng.standard_normal((nc, d), dtype=np.float32)
    weights = rng.dirichlet(np.full(nc, 2.0))
    lab = rng.choice(nc, size=n, p=weights)
    x = np.empty((n, d), dtype=np.float32)
    step = 200_000
    for s in range(0, n, step):
        e = min(n, s + step)
        x[s:e] = centers[lab[s:e]] + rng.standard_normal((e - s, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, centers, lab


def user_vectors(x: np.ndarray, lab: np.ndarray, nq: int, seed: int = 1) -> np.ndarray:
    """User vectors: mean of 4 items from one or two clusters, plus noise, normalised."""
    rng = np.random.default_rng(seed)
    by_cluster: dict[int, np.ndarray] = {}
    order = np.argsort(lab, kind="stable")
    bounds = np.searchsorted(lab[order], np.arange(lab.max() + 2))
    q = np.empty((nq, x.shape[1]), dtype=np.float32)
    for i in range(nq):
        clusters = rng.choice(lab, size=1 + int(rng.random() < 0.5))  # popular clusters likelier
        picks = []
        for c in clusters:
            members = by_cluster.setdefault(int(c), order[bounds[c] : bounds[c + 1]])
            picks.extend(rng.choice(members, size=4 // len(clusters)))
        v = x[picks].mean(0) + 0.05 * rng.standard_normal(x.shape[1], dtype=np.float32)
        q[i] = v / np.linalg.norm(v)
    return q


def rss_mb() -> float:
    """Current resident memory of this process in MB (Linux)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def bench_one(
    label: str,
    x: np.ndarray,
    ids: list[str],
    q: np.ndarray,
    truth: np.ndarray,
    cfg: IndexConfig,
    n_single: int,
) -> dict[str, object]:
    gc.collect()
    m0 = rss_mb()
    t0 = time.perf_counter()
    vi = VectorIndex.build(x, ids, cfg, encoder_sha256="bench", metric="ip")
    build_s = time.perf_counter() - t0
    mem = rss_mb() - m0
    with tempfile.TemporaryDirectory() as tmp:
        vi.save(tmp)
        size_mb = (Path(tmp) / "items.faiss").stat().st_size / 2**20
    for i in range(min(20, n_single)):  # warm-up
        vi.search(q[i : i + 1], K)
    lat, cpu = [], []
    for i in range(n_single):
        t, c = time.perf_counter(), time.process_time()
        vi.search(q[i : i + 1], K)
        lat.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    t, c = time.perf_counter(), time.process_time()
    found, _ = vi.search(q, K)
    batch_s = time.perf_counter() - t
    batch_cpu = time.process_time() - c
    rec = recall_at_k(found, truth, K)
    row = {
        "index": label,
        "factory": vi.factory,
        "params": _params(vi),
        "build_s": build_s,
        "mem_mb": mem,
        "size_mb": size_mb,
        "p50_ms": 1e3 * float(np.percentile(lat, 50)),
        "p99_ms": 1e3 * float(np.percentile(lat, 99)),
        "users_s": len(q) / batch_s,
        "cpu_ms": 1e3 * float(np.mean(cpu)),
        "users_cpu_s": len(q) / max(batch_cpu, 1e-9),
        "recall": rec,
        "gpu": vi.use_gpu,
    }
    del vi
    gc.collect()
    return row


def _params(vi: VectorIndex) -> str:
    if vi.kind == "ivf":
        return f"nprobe={vi.nprobe}"
    if vi.kind == "hnsw":
        return f"efSearch={vi.ef_search}, efC={vi.cfg.ef_construction}"
    return "exact"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100000,1000000", help="catalogue sizes, comma-separated")
    ap.add_argument("--dims", default="64,384", help="vector dimensions, comma-separated")
    ap.add_argument(
        "--kinds",
        default="flat,ivf,hnsw",
        help="flat, ivf, hnsw, ivfpq, auto (what factory=auto picks)",
    )
    ap.add_argument(
        "--big-kinds",
        default="flat,ivf",
        help="kinds for catalogues with n*d > --big-cells (HNSW build time on 2 cores)",
    )
    ap.add_argument("--big-cells", type=float, default=2e8)
    ap.add_argument("--queries", type=int, default=2000, help="users in the batch run")
    ap.add_argument("--single", type=int, default=300, help="single-user searches timed")
    ap.add_argument("--gpu", action="store_true", help="also run on the GPU (faiss-gpu)")
    ap.add_argument("--threads", type=int, default=0, help="index.threads (0 = auto)")
    ap.add_argument("--hnsw-ef", type=int, default=0, help="HNSW efSearch (0 = config default)")
    ap.add_argument("--real", default="", help="run or retrieval model dir: real trained vectors")
    ap.add_argument("--dataset", default="", help="with --real MODEL_DIR: its canonical dataset")
    ap.add_argument("--note", default="", help="free text for the machine column")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    sizes = [int(float(s)) for s in args.sizes.split(",")]
    dims = [int(s) for s in args.dims.split(",")]
    if args.gpu and not gpu_available():
        sys.exit("bench_index: --gpu needs faiss-gpu and a visible GPU; none here")
    devices = ["never"] + (["always"] if args.gpu else [])
    cmd = shlex.join(
        ["python", "bench/bench_index.py", *(argv if argv is not None else sys.argv[1:])]
    )
    import faiss

    print(f"\ncommand: `{cmd.strip()}`  ")
    print(
        f"machine: {machine()}, faiss {faiss.__version__}, {faiss.omp_get_max_threads()} "
        f"OpenMP threads, index.threads={args.threads}{', ' + args.note if args.note else ''}  "
    )
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  ")
    data = (
        "trained two-tower vectors (see below)"
        if args.real
        else "Gaussian mixture, sqrt(n) clusters, unit-normalised, inner product; "
        f"{args.queries} users (mean of 4 items from 1-2 clusters)"
    )
    print(
        f"data: {data}, k={K}; "
        "recall = Recall@100 vs exact; p50/p99 = wall time, one user per call; CPU ms/user = mean "
        "process CPU time of those calls; users/s = one batch call (wall); users/CPU-s = same "
        "batch per CPU second (contention-free view on a shared machine)\n"
    )
    print(
        "| n | d | index | factory | params | build s | RSS MB | file MB | p50 ms | p99 ms "
        "| CPU ms/user | users/s | users/CPU-s | Recall@100 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    if args.real:
        x, ids, q, what = real_vectors(args.real, args.queries, args.dataset)
        print(f"real vectors: {what}\n")
        run_rows(f"{len(ids):,} (real)", x, ids, q, args.kinds.split(","), devices, args)
        return
    for n in sizes:
        for d in dims:
            x, _, lab = clustered_vectors(n, d)
            ids = [f"i{i}" for i in range(n)]
            q = user_vectors(x, lab, args.queries)
            kinds = args.kinds.split(",")
            if n * d > args.big_cells:
                kinds = [k for k in kinds if k in args.big_kinds.split(",")]
            run_rows(f"{n:,}", x, ids, q, kinds, devices, args)
            del x, q
            gc.collect()


def run_rows(
    label_n: str,
    x: np.ndarray,
    ids: list[str],
    q: np.ndarray,
    kinds: list[str],
    devices: list[str],
    args: argparse.Namespace,
) -> None:
    """Ground truth by exact search, then one Markdown row per index kind and device."""
    n, d = x.shape
    truth_vi = VectorIndex.build(x, ids, IndexConfig(factory="Flat", use_gpu="never"), "bench")
    truth, _ = truth_vi.search(q, K)
    del truth_vi
    oracle, _ = exact_topk(x, q[:10], K)
    assert recall_at_k(truth[:10], [[ids[j] for j in r] for r in oracle]) > 0.999
    for kind in kinds:
        for dev in devices:
            cfg = _cfg(kind, n, d, dev, args.threads, args.hnsw_ef)
            label = kind + (" (gpu)" if dev == "always" else "")
            if cfg.factory == auto_factory(n, d, IndexConfig()):
                label += " = auto"
            r = bench_one(label, x, ids, q, truth, cfg, args.single)
            print(
                f"| {label_n} | {d} | {r['index']} | {r['factory']} | {r['params']} "
                f"| {r['build_s']:.1f} | {r['mem_mb']:.0f} | {r['size_mb']:.0f} "
                f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_ms']:.2f} "
                f"| {r['users_s']:,.0f} | {r['users_cpu_s']:,.0f} "
                f"| {r['recall']:.4f} |",
                flush=True,
            )


def real_vectors(
    path: str, n_users: int, dataset: str = ""
) -> tuple[np.ndarray, list[str], np.ndarray, str]:
    """Item and user vectors of a trained two-tower model.

    ``path`` is a run directory (RUN/retrieval + the run's dataset) or a retrieval model
    directory (+ ``dataset``, its canonical dataset). Users: test-time histories of the
    leave-one-out split when the dataset is known, else random 10-item histories.
    """
    from rec.artifacts import RunDir
    from retrieval.model import RetrievalModel

    p = Path(path)
    run = RunDir(p) if (p / "retrieval" / "model.json").is_file() else None
    model = RetrievalModel.load(p / "retrieval" if run else p)
    x = model.item_vectors()
    ids = list(model.item_ids)
    data_dir = run.dataset_dir() if run is not None else (Path(dataset) if dataset else None)
    if data_dir is not None:
        from rec.data import histories_for, load_split

        hist, _ = histories_for(load_split(data_dir, "loo"), "test")
        users = [h for h in hist.values() if any(i in model.index for i in h)][:n_users]
        what = f"{p}: {len(ids)} catalogue items, {len(users)} test users"
    else:
        rng = np.random.default_rng(0)
        users = [list(rng.choice(ids, 10, replace=False)) for _ in range(n_users)]
        what = f"{p}: {len(ids)} catalogue items, {len(users)} random 10-item histories"
    q = model.encode_users(users)
    return np.ascontiguousarray(x, dtype=np.float32), ids, q, what


def _cfg(kind: str, n: int, d: int, use_gpu: str, threads: int, ef: int) -> IndexConfig:
    base = IndexConfig(use_gpu=use_gpu)  # type: ignore[arg-type]
    factory = {
        "flat": "Flat",
        "ivf": f"IVF{auto_nlist(n)},Flat",
        "hnsw": f"HNSW{base.hnsw_m},Flat",
        "ivfpq": auto_factory(10**9, d, base),
        "auto": "auto",
    }[kind]
    if kind == "ivfpq":
        factory = f"IVF{auto_nlist(n)}," + factory.split(",", 1)[1]
    return IndexConfig(
        factory=factory,
        use_gpu=use_gpu,  # type: ignore[arg-type]
        threads=threads,
        ef_search=ef or base.ef_search,
    )


if __name__ == "__main__":
    main()
