"""build-index / retrieve / index add / index remove over a run directory, library and CLI.

The retrieval model is a small fake with the RetrievalModel interface (item vectors from hashed
words of the item text, user vector = mean of history item vectors), so these tests are exact
and fast; tests/test_index_real_model.py runs the same path with a tiny trained model.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

import rec.pipeline.index as pipe
from index.exact import exact_topk
from rec.artifacts import RunDir
from rec.config import DataConfig, RunConfig
from rec.errors import ArtifactError, ConfigError, DataError, RecError


class FakeModel:
    """The RetrievalModel interface: item_ids, metric, encoder_sha256, encode_items/users."""

    metric = "ip"
    dim = 16

    def __init__(self, items: pl.DataFrame, sha: str) -> None:
        self.item_ids = items["item_id"].to_list()
        self.encoder_sha256 = sha
        self._text = dict(zip(self.item_ids, items["text"].to_list()))

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        for w in text.lower().replace(".", " ").split():
            v += np.random.default_rng(zlib.crc32(w.encode())).standard_normal(self.dim)
        return v / max(np.linalg.norm(v), 1e-6)

    def encode_items(self, df: pl.DataFrame) -> np.ndarray:
        return np.stack([self._vec(t) for t in df["text"].to_list()]).astype(np.float32)

    def encode_users(self, histories, timestamps=None) -> np.ndarray:
        out = []
        for h in histories:
            known = [self._vec(self._text[i]) for i in h if i in self._text]
            if not known:
                raise RecError("history has no item known to the model")
            out.append(np.mean(known, 0))
        return np.stack(out).astype(np.float32)


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run with the synthetic dataset (+ one never-clicked item) and a fake retrieval model."""
    from rec.data import save_dataset
    from rec.data.synthetic import synthetic_dataset

    inter, items, split = synthetic_dataset(n_users=40, n_items=60, seed=0)
    lonely = pl.DataFrame(
        {
            "item_id": ["lonely"],
            "title": ["Lonely item"],
            "text": ["lonely gold thing nobody clicked"],
        }
    )
    items = pl.concat([items, lonely], how="diagonal_relaxed")
    ds = save_dataset(tmp_path / "data", inter, items, {"source": "synthetic"}, splits=[split])
    run = RunDir(tmp_path / "run")
    run.update_manifest(config=RunConfig(data=DataConfig(dataset_dir=str(ds))))
    (run.stage("retrieval")).mkdir()
    (run.stage("retrieval") / "model.json").write_text(json.dumps({"sha": "enc-1"}))

    def fake_load(folder: Path, device: str = "cpu") -> FakeModel:
        sha = json.loads((folder / "model.json").read_text())["sha"]
        return FakeModel(items.filter(pl.col("item_id") != "lonely"), sha)

    monkeypatch.setattr(pipe, "load_retrieval_model", fake_load)
    return run.path


def user_history(run_dir: Path, user: str) -> list[str]:
    from rec.data import load_dataset, sort_events

    ds = load_dataset(RunDir(run_dir).dataset_dir())
    return sort_events(ds.interactions.filter(pl.col("user_id") == user))["item_id"].to_list()


def test_build_index_covers_whole_catalogue_and_records_manifest(run_dir):
    info = pipe.build_index(run_dir)
    assert info["ntotal"] == 61 and info["factory"] == "Flat" and info["metric"] == "ip"
    assert (run_dir / "index" / "items.faiss").is_file()
    meta = json.loads((run_dir / "index" / "index.json").read_text())
    assert meta["encoder_sha256"] == "enc-1" and meta["dim"] == 16
    part = RunDir(run_dir).manifest()["parts"]["index"]
    assert part["ntotal"] == 61 and part["sha256"]
    rows = pipe.retrieve(run_dir, history=["i5"], k=61)
    assert "lonely" in {r["item_id"] for r in rows}  # never clicked, still indexed


def test_retrieve_user_equals_exact_oracle_without_history(run_dir):
    pipe.build_index(run_dir)
    hist = user_history(run_dir, "u3")
    rows = pipe.retrieve(run_dir, user="u3", k=10)
    assert [r["rank"] for r in rows] == list(range(1, 11))
    assert not {r["item_id"] for r in rows} & set(hist)
    from rec.data import load_dataset

    items = load_dataset(RunDir(run_dir).dataset_dir()).items
    model = pipe.load_retrieval_model(run_dir / "retrieval")
    ids = items["item_id"].to_list()
    pos = {s: i for i, s in enumerate(ids)}
    top, sc = exact_topk(
        model.encode_items(items),
        model.encode_users([hist]),
        10,
        exclude=[[pos[h] for h in set(hist)]],
    )
    assert [r["item_id"] for r in rows] == [ids[j] for j in top[0]]
    np.testing.assert_allclose([r["score"] for r in rows], sc[0], rtol=1e-5)
    titles = dict(zip(ids, items["title"].to_list()))
    assert all(r["title"] == titles[r["item_id"]] for r in rows)


def test_retrieve_errors(run_dir):
    with pytest.raises(ArtifactError, match="no index here"):
        pipe.retrieve(run_dir, user="u1")
    pipe.build_index(run_dir)
    with pytest.raises(DataError, match="unknown user 'nobody'"):
        pipe.retrieve(run_dir, user="nobody")
    with pytest.raises(DataError, match="unknown item 'zzz'"):
        pipe.retrieve(run_dir, history=["i1", "zzz"])
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        pipe.retrieve(run_dir, user="u1", k=0)
    with pytest.raises(ConfigError, match="either a user"):
        pipe.retrieve(run_dir)
    model_json = run_dir / "retrieval" / "model.json"
    model_json.write_text(json.dumps({"sha": "enc-2"}))  # the towers were retrained
    with pytest.raises(ArtifactError, match="built with item encoder enc-1"):
        pipe.retrieve(run_dir, user="u1")
    with pytest.raises(ArtifactError, match="run directory not found"):
        pipe.retrieve(run_dir / "missing", user="u1")


def test_add_remove_items_survive_rebuild(run_dir, tmp_path):
    pipe.build_index(run_dir)
    f = tmp_path / "new.jsonl"
    f.write_text(
        json.dumps({"item_id": "n1", "title": "Brand new", "text": "jazz jazz thing"})
        + "\n"
        + json.dumps({"item_id": "i1", "text": "space ocean"})
        + "\n"
    )
    assert pipe.add_items(run_dir, f) == {"added": 1, "replaced": 1, "ntotal": 62}
    rows = pipe.retrieve(run_dir, history=["i4"], k=62)
    by_id = {r["item_id"]: r for r in rows}
    assert by_id["n1"]["title"] == "Brand new" and "i1" in by_id
    assert pipe.remove_items(run_dir, ["n1", "i2"]) == {"removed": 2, "ntotal": 60}
    with pytest.raises(DataError, match="unknown item id 'n1'"):
        pipe.remove_items(run_dir, ["n1"])
    pipe.add_items(run_dir, f)
    pipe.remove_items(run_dir, ["i7"])
    info = pipe.build_index(run_dir)  # a rebuild keeps added items and removals
    assert info["ntotal"] == 60
    ids = {r["item_id"] for r in pipe.retrieve(run_dir, history=["i4"], k=100)}
    assert "n1" in ids and "i1" in ids and not {"i2", "i7"} & ids


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_items_file_formats_and_errors(tmp_path, suffix):
    df = pl.DataFrame({"item_id": ["a", "b"], "text": ["x y", "z"]})
    p = tmp_path / f"items{suffix}"
    df.write_csv(p) if suffix == ".csv" else df.write_parquet(p)
    out = pipe.read_items_file(p)
    assert out.columns[:3] == ["item_id", "text", "title"] and out["title"].null_count() == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"item_id": "a", "text": "ok"}\n{"item_id": "b", "text": ""}\n')
    with pytest.raises(DataError, match="bad.jsonl:2: empty item_id or text"):
        pipe.read_items_file(bad)
    with pytest.raises(DataError, match="missing column 'text'"):
        (tmp_path / "t.csv").write_text("item_id,title\na,b\n")
        pipe.read_items_file(tmp_path / "t.csv")
    with pytest.raises(DataError, match="unsupported items file"):
        (tmp_path / "x.txt").write_text("x")
        pipe.read_items_file(tmp_path / "x.txt")


def test_index_candidates_batches_histories(run_dir):
    pipe.build_index(run_dir)
    fn = pipe.index_candidates(run_dir, batch=2)
    hists = [["i1", "i2"], ["i3"], ["i5", "i6", "i7"]]
    out = fn(hists, 5)
    assert [len(r) for r in out] == [5, 5, 5]
    assert all(not set(r) & set(h) for r, h in zip(out, hists))
    assert out[1] == [r["item_id"] for r in pipe.retrieve(run_dir, history=["i3"], k=5)]


# --------------------------------------------------------------------------------- CLI


def invoke(*args: str):
    import rec.cli.index  # noqa: F401  (attaches the commands)
    from rec.cli import cli

    return CliRunner().invoke(cli, list(args))


def test_cli_build_retrieve_add_remove(run_dir, tmp_path):
    r = invoke("build-index", "--run-dir", str(run_dir))
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ntotal"] == 61
    r = invoke("retrieve", "--run-dir", str(run_dir), "--user", "u2", "-k", "7")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["rank"] for row in rows] == list(range(1, 8))
    assert set(rows[0]) == {"rank", "item_id", "score", "title"}
    assert not {row["item_id"] for row in rows} & set(user_history(run_dir, "u2"))
    r = invoke(
        "retrieve", "--run-dir", str(run_dir), "--history", "i1,i2", "-k", "3", "--format", "table"
    )
    assert r.exit_code == 0 and r.stdout.splitlines()[0].split() == [
        "rank",
        "item_id",
        "score",
        "title",
    ]
    f = tmp_path / "new.jsonl"
    f.write_text(json.dumps({"item_id": "n9", "title": "T", "text": "red red"}) + "\n")
    r = invoke("index", "add", "--run-dir", str(run_dir), "--items", str(f))
    assert r.exit_code == 0 and json.loads(r.stdout) == {"added": 1, "replaced": 0, "ntotal": 62}
    r = invoke("index", "remove", "--run-dir", str(run_dir), "--items", "n9,i3")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"removed": 2, "ntotal": 60}


@pytest.mark.parametrize(
    "case",
    [
        "unknown-user",
        "unknown-item",
        "k0",
        "no-run",
        "no-index",
        "half-written",
        "mismatch",
        "remove-unknown",
    ],
)
def test_cli_errors_are_one_line(run_dir, tmp_path, case):
    if case not in ("no-index",):
        assert invoke("build-index", "--run-dir", str(run_dir)).exit_code == 0
    args = ["retrieve", "--run-dir", str(run_dir), "--user", "u1"]
    expect = {
        "unknown-user": "unknown user 'ghost'",
        "unknown-item": "unknown item 'nope'",
        "k0": "k must be a positive integer",
        "no-run": "run directory not found",
        "no-index": "no index here",
        "half-written": "truncated",
        "mismatch": "built with item encoder enc-1",
        "remove-unknown": "unknown item id 'x1'",
    }[case]
    if case == "unknown-user":
        args[-1] = "ghost"
    elif case == "unknown-item":
        args[-2:] = ["--history", "i1,nope"]
    elif case == "k0":
        args += ["-k", "0"]
    elif case == "no-run":
        args[2] = str(tmp_path / "nope")
    elif case == "half-written":
        f = run_dir / "index" / "items.faiss"
        f.write_bytes(f.read_bytes()[:10])
    elif case == "mismatch":
        (run_dir / "retrieval" / "model.json").write_text(json.dumps({"sha": "enc-2"}))
    elif case == "remove-unknown":
        args = ["index", "remove", "--run-dir", str(run_dir), "--items", "x1"]
    r = invoke(*args)
    assert r.exit_code != 0
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rec: error:") and expect in lines[0], r.stderr
    assert "Traceback" not in r.output
