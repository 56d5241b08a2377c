"""Vector index: exact oracle agreement, ANN recall, exclusion, add/remove, save/load, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from index.config import IndexConfig
from index.exact import exact_topk, recall_at_k
from index.vector_index import VectorIndex, auto_factory, gpu_available
from rec.errors import ArtifactError, ConfigError, DataError

# one OpenMP thread: the 2-core CI machine is shared, and FAISS's threads then mostly wait
CPU = IndexConfig(use_gpu="never", threads=1)


def cfg(factory: str = "Flat", **kw: object) -> IndexConfig:
    return IndexConfig(factory=factory, use_gpu="never", threads=1, **kw)  # type: ignore[arg-type]


def random_data(n: int = 400, d: int = 16, u: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((u, d)).astype(np.float32)
    return x, [f"i{i}" for i in range(n)], q


def clustered_data(n: int = 4000, d: int = 32, u: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, d)).astype(np.float32)
    lab = rng.integers(40, size=n)
    x = centers[lab] + rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.choice(n, (u, 4))].mean(1)
    return x, [f"i{i}" for i in range(n)], q


def oracle_ids(x, q, k, metric="ip", ids=None, exclude=None):
    ids = ids or [f"i{i}" for i in range(len(x))]
    ex = None
    if exclude is not None:
        pos = {s: i for i, s in enumerate(ids)}
        ex = [[pos[s] for s in e] for e in exclude]
    idx, sc = exact_topk(x, q, k, metric, exclude=ex)
    return [[ids[j] for j in row if j >= 0] for row in idx], sc


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_flat_equals_exact_oracle(metric):
    x, ids, q = random_data()
    vi = VectorIndex.build(x, ids, cfg("Flat"), "sha", metric=metric)
    found, scores = vi.search(q, 10)
    want, want_sc = oracle_ids(x, q, 10, metric)
    assert found.shape == (12, 10) and scores.dtype == np.float32
    assert [list(r) for r in found] == want
    np.testing.assert_allclose(scores, want_sc, rtol=1e-4, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first, higher is better


def test_exclude_still_returns_k_and_matches_oracle():
    x, ids, q = random_data()
    vi = VectorIndex.build(x, ids, cfg("Flat"), "sha")
    top, _ = vi.search(q, 30)
    exclude = [set(row[:20]) | {"not-an-item"} for row in top]
    found, _ = vi.search(q, 10, exclude=exclude)
    want, _ = oracle_ids(x, q, 10, exclude=[e - {"not-an-item"} for e in exclude])
    assert [list(r) for r in found] == want
    assert all(len(set(r)) == 10 and not set(r) & e for r, e in zip(found, exclude))


def test_exact_oracle_ties_and_padding():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    idx, sc = exact_topk(x, np.array([[1.0, 0.0]]), 5, exclude=[[2]])
    assert idx.tolist() == [[0, 1, -1, -1, -1]]
    assert np.isneginf(sc[0, 2:]).all()


def test_fewer_items_than_k_pads_with_none():
    x, ids, q = random_data(n=5)
    vi = VectorIndex.build(x, ids, cfg("Flat"), "sha")
    found, scores = vi.search(q[:2], 8, exclude=[{"i0"}, set()])
    assert [sum(s is not None for s in r) for r in found] == [4, 5]
    assert np.isneginf(scores[0, 4:]).all()


@pytest.mark.parametrize("factory", ["HNSW16,Flat", "IVF256,Flat"])
def test_ann_overlap_with_exact_on_clustered_data(factory):
    x, ids, q = clustered_data()
    vi = VectorIndex.build(x, ids, cfg(factory), "sha")
    found, _ = vi.search(q, 50)
    want, _ = oracle_ids(x, q, 50)
    assert recall_at_k(found, want, 50) >= 0.95
    ex = [set(r[:10]) for r in want]
    found_ex, _ = vi.search(q, 50, exclude=ex)
    assert all(sum(s is not None for s in r) == 50 and not set(r) & e for r, e in zip(found_ex, ex))


def test_ivfpq_builds_and_searches():
    x, ids, q = clustered_data(n=3000, d=32)
    vi = VectorIndex.build(x, ids, cfg("IVF16,PQ16x4"), "sha")  # 4-bit codes: fast to train
    found, _ = vi.search(q, 20)
    assert recall_at_k(found, oracle_ids(x, q, 20)[0], 20) > 0.5  # lossy codes


def test_auto_factory_by_catalogue_size():
    c = IndexConfig(flat_max=1000, hnsw_max=10_000, ivfpq_min=100_000)
    assert auto_factory(1000, 64, c) == "Flat"
    assert auto_factory(5000, 64, c) == "HNSW32,Flat"
    assert auto_factory(50_000, 64, c) == "IVF1024,Flat"
    assert auto_factory(1_000_000, 384, c) == "IVF4096,PQ96"
    default = IndexConfig()  # HNSW is off in auto by default (see IndexConfig)
    assert auto_factory(100_000, 64, default) == "Flat"
    assert auto_factory(200_000, 64, default) == "IVF2048,Flat"
    assert auto_factory(1_000_000, 64, default) == "IVF4096,Flat"
    assert auto_factory(20_000_000, 64, default) == "IVF16384,PQ16"
    x, ids, _ = random_data(n=300)
    assert VectorIndex.build(x, ids, CPU, "sha").factory == "Flat"


@pytest.mark.parametrize("factory", ["Flat", "HNSW16,Flat", "IVF16,Flat"])
def test_add_replace_and_remove(factory):
    x, ids, q = clustered_data(n=1500, d=16, u=5)
    vi = VectorIndex.build(x, ids, cfg(factory), "sha")
    probe = -x[0:1]  # far from i0's own vector
    vi.add(probe * 3, ["i0"])  # replace i0: now it is the best match for probe
    vi.add(np.ones((1, 16), np.float32), ["new"])
    assert vi.ntotal == 1501 and "new" in vi
    found, _ = vi.search(probe, 1)
    assert found[0, 0] == "i0"
    top, _ = vi.search(q, 5)
    gone = sorted({s for r in top for s in r[:2]})
    vi.remove(gone)
    assert vi.ntotal == 1501 - len(gone) and gone[0] not in vi
    after, _ = vi.search(q, 20)
    assert not set(after.ravel()) & set(gone)
    assert all(s is not None for s in after.ravel())
    with pytest.raises(DataError, match="unknown item id 'nope'"):
        vi.remove(["nope"])


def test_hnsw_compaction_drops_tombstones():
    x, ids, q = clustered_data(n=600, d=16, u=5)
    vi = VectorIndex.build(x, ids, cfg("HNSW16,Flat"), "sha")
    vi.remove(ids[:200])
    assert vi.describe()["tombstones"][:2] == [0, 1]
    vi.remove(ids[200:400])  # more than half dead -> rebuilt
    assert vi.describe()["tombstones"] == [] and vi.describe()["faiss_ntotal"] == 200
    found, _ = vi.search(q, 10)
    want, _ = oracle_ids(x[400:], q, 10, ids=ids[400:])
    assert recall_at_k(found, want, 10) >= 0.95


@pytest.mark.parametrize("factory", ["Flat", "HNSW16,Flat", "IVF16,Flat"])
def test_save_load_round_trip(tmp_path, factory):
    x, ids, q = clustered_data(n=1000, d=16, u=8)
    vi = VectorIndex.build(x, ids, cfg(factory, nprobe=4, ef_search=64), "sha-1", metric="cosine")
    vi.remove(["i3", "i5"])
    vi.add(x[:2] * 2, ["i0", "extra"])
    vi.save(tmp_path / "index")
    meta = json.loads((tmp_path / "index" / "index.json").read_text())
    assert meta["metric"] == "cosine" and meta["dim"] == 16 and meta["ntotal"] == 999
    assert meta["encoder_sha256"] == "sha-1" and meta["factory"] == factory
    back = VectorIndex.load(tmp_path / "index", expected_encoder_sha256="sha-1")
    assert (back.metric, back.nprobe, back.ef_search) == (vi.metric, vi.nprobe, vi.ef_search)
    a, sa = vi.search(q, 15, exclude=[{"i1"}] * 8)
    b, sb = back.search(q, 15, exclude=[{"i1"}] * 8)
    assert (a == b).all()
    np.testing.assert_allclose(sa, sb)
    assert sorted(back.ids) == sorted(vi.ids)


def test_encoder_mismatch_refused(tmp_path):
    x, ids, _ = random_data()
    VectorIndex.build(x, ids, CPU, "aaaa1111").save(tmp_path)
    with pytest.raises(ArtifactError, match="item encoder aaaa1111.*bbbb2222"):
        VectorIndex.load(tmp_path, expected_encoder_sha256="bbbb2222")
    assert VectorIndex.load(tmp_path).encoder_sha256 == "aaaa1111"


def test_crash_during_save_keeps_previous_index(tmp_path, monkeypatch):
    x, ids, q = random_data()
    old = VectorIndex.build(x, ids, CPU, "sha")
    old.save(tmp_path / "index")
    new = VectorIndex.build(x[:50], ids[:50], CPU, "sha")

    def boom(tmp):
        assert (tmp / "items.faiss").exists()
        raise KeyboardInterrupt("killed mid-save")

    with pytest.raises(KeyboardInterrupt):
        new.save(tmp_path / "index", extra=boom)
    import index.vector_index as mod

    real = mod.write_json

    def fail_on_meta(path, obj):
        if path.name == "index.json":
            raise OSError("disk full")
        real(path, obj)

    monkeypatch.setattr(mod, "write_json", fail_on_meta)
    with pytest.raises(OSError):
        new.save(tmp_path / "index")
    back = VectorIndex.load(tmp_path / "index")
    assert back.ntotal == 400
    assert (back.search(q, 5)[0] == old.search(q, 5)[0]).all()
    assert [p.name for p in tmp_path.iterdir()] == ["index"]  # no temp leftovers


def test_half_written_or_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="no index here"):
        VectorIndex.load(tmp_path / "nothing")
    x, ids, _ = random_data()
    VectorIndex.build(x, ids, CPU, "sha").save(tmp_path / "ix")
    f = tmp_path / "ix" / "items.faiss"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="truncated"):
        VectorIndex.load(tmp_path / "ix")
    (tmp_path / "ix" / "index.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt JSON"):
        VectorIndex.load(tmp_path / "ix")


def test_bad_inputs():
    x, ids, q = random_data()
    vi = VectorIndex.build(x, ids, CPU, "sha")
    for k in (0, -3):
        with pytest.raises(ConfigError, match="k must be a positive integer"):
            vi.search(q, k)
    with pytest.raises(ArtifactError, match="dimension 8"):
        vi.search(q[:, :8], 5)
    with pytest.raises(DataError, match="duplicate item id 'i1'"):
        VectorIndex.build(x[:3], ["i0", "i1", "i1"], CPU, "sha")
    with pytest.raises(DataError, match="NaN"):
        VectorIndex.build(np.full((3, 4), np.nan), ["a", "b", "c"], CPU, "sha")
    with pytest.raises(ConfigError, match="not a valid FAISS factory"):
        VectorIndex.build(x, ids, cfg("Bogus42"), "sha")
    with pytest.raises(ConfigError, match="only 400 items"):
        VectorIndex.build(x, ids, cfg("IVF1024,Flat"), "sha")
    with pytest.raises(ConfigError, match="unknown metric"):
        VectorIndex.build(x, ids, CPU, "sha", metric="dot")
    with pytest.raises(ConfigError, match="use_gpu"):
        IndexConfig(use_gpu="sometimes")  # type: ignore[arg-type]


@pytest.mark.skipif(gpu_available(), reason="a GPU is present")
def test_use_gpu_always_without_gpu_is_a_config_error(caplog):
    x, ids, _ = random_data()
    with pytest.raises(ConfigError, match="use_gpu = always but"):
        VectorIndex.build(x, ids, IndexConfig(use_gpu="always"), "sha")
    caplog.set_level("INFO", logger="index.vector_index")
    assert not VectorIndex.build(x, ids, IndexConfig(use_gpu="auto"), "sha").use_gpu
    assert "use_gpu=auto -> cpu" in caplog.text


@pytest.mark.gpu
@pytest.mark.parametrize("factory", ["Flat", "IVF64,Flat"])
def test_gpu_search_matches_cpu(factory):
    if not gpu_available():
        pytest.skip("needs faiss-gpu and a GPU")
    x, ids, q = clustered_data()
    gpu = VectorIndex.build(x, ids, IndexConfig(factory=factory, use_gpu="always"), "sha")
    assert gpu.use_gpu
    found, _ = gpu.search(q, 50, exclude=[{"i1"}] * len(q))
    want, _ = oracle_ids(x, q, 50, exclude=[{"i1"}] * len(q))
    assert recall_at_k(found, want, 50) >= (0.999 if factory == "Flat" else 0.95)
    gpu.remove(["i2"])
    gpu.add(x[:1], ["copy"])
    assert "i2" not in set(gpu.search(q, 50)[0].ravel())


KILL_CHILD = """
import sys
import numpy as np
from index.config import IndexConfig
from index.vector_index import VectorIndex
x = np.random.default_rng(0).standard_normal((60_000, 32), dtype=np.float32)
vi = VectorIndex.build(x, [f"i{i}" for i in range(len(x))], IndexConfig(use_gpu="never"), "sha")
vi.save(sys.argv[1])
print("saved", flush=True)
n = 0
while True:
    n += 1
    vi.add(x[:1], [f"v{n}"])
    vi.save(sys.argv[1])
"""


@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_process_killed_during_saves_leaves_a_loadable_index(tmp_path, delay):
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    target = tmp_path / "index"
    p = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(target)], cwd=repo,
                         stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "saved"
        time.sleep(delay)
    finally:
        p.kill()
        p.wait()
    back = VectorIndex.load(target, expected_encoder_sha256="sha")
    assert back.ntotal >= 60_000 and back.search(np.ones((1, 32)), 3)[0][0, 0] is not None


def test_load_recovers_previous_version_between_the_two_renames(tmp_path):
    x, ids, q = random_data()
    VectorIndex.build(x, ids, CPU, "sha").save(tmp_path / "index")
    (tmp_path / "index").rename(tmp_path / ".index.old-123-456")  # killed between the renames
    back = VectorIndex.load(tmp_path / "index", expected_encoder_sha256="sha")
    assert back.ntotal == 400


def test_index_package_imports_neither_torch_nor_faiss_eagerly():
    import subprocess
    import sys

    code = (
        "import sys, index, index.config, index.exact, index.vector_index\n"
        "assert 'torch' not in sys.modules and 'faiss' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hnsw_inner_product_with_uneven_norms_via_l2_reduction(tmp_path):
    x, ids, q = clustered_data(n=3000, d=16, u=30)
    x = x * np.random.default_rng(1).uniform(0.5, 2.5, size=(len(x), 1)).astype(np.float32)
    vi = VectorIndex.build(x, ids, cfg("HNSW16,Flat"), "sha", metric="ip")
    assert vi.describe()["mips_norm"] == pytest.approx(np.linalg.norm(x, axis=1).max())
    found, scores = vi.search(q, 50)
    want, want_sc = oracle_ids(x, q, 50)
    assert recall_at_k(found, want, 50) >= 0.95
    np.testing.assert_allclose(scores[:, :10], want_sc[:, :10], atol=2e-3)  # true inner products
    big = 10 * q[:1] / np.linalg.norm(q[:1])  # longer than every item: M grows, graph rebuilt
    vi.add(big, ["big"])
    assert vi.search(q[:1], 1)[0][0, 0] == "big"
    vi.save(tmp_path / "ix")
    back = VectorIndex.load(tmp_path / "ix")
    assert back.dim == 16 and (back.search(q, 20)[0] == vi.search(q, 20)[0]).all()
