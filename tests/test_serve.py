"""The HTTP API (rec.serve) over a tiny run: fake retrieval model + FAISS index + an untrained
tiny cross-encoder reranker, through fastapi.testclient.TestClient.

Rows are checked against the pipeline (``rec.pipeline.index.retrieve``) and against the
reranker applied by hand, so the server is exact, not only "returns 200".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

import rec.pipeline.index as pipe
from rec.artifacts import RunDir
from tests.test_index_pipeline import FakeModel

RERANK_TOP = 5
JSON = {"content-type": "application/json"}


def make_serve_run(root: Path, cross_encoder_dir: Path, reranker: bool = True) -> Path:
    """Synthetic data, a fake retrieval model (model.json names its encoder), a built index and,
    with ``reranker``, an untrained tiny cross-encoder saved as RUN/ranking (no calibration)."""
    from rec.config import load_config
    from rec.data import save_dataset
    from rec.data.synthetic import synthetic_dataset

    inter, items, split = synthetic_dataset(n_users=40, n_items=60, seed=0)
    data = save_dataset(root / "data", inter, items, {"source": "synthetic"}, splits=[split])
    cfg = load_config(
        None,
        (
            f'data.dataset_dir="{data}"',
            'name="serve-test"',
            'device="cpu"',
            f'ranking.model="{cross_encoder_dir}"',
            f"ranking.rerank_top={RERANK_TOP}",
            "ranking.retrieve_top=10",
            "ranking.quantize=none",
        ),
    )
    run = RunDir(root / "run")
    run.update_manifest(config=cfg)
    run.stage("retrieval").mkdir()
    (run.stage("retrieval") / "model.json").write_text(json.dumps({"sha": "enc-1"}))
    pipe.build_index(run.path)
    if reranker:
        from ranking.calibrate import Calibrator
        from ranking.model import CrossEncoder, write_meta

        out = run.stage("ranking")
        enc = CrossEncoder.from_pretrained(str(cross_encoder_dir), cfg.ranking, for_training=False)
        out.mkdir()
        enc.save(out)
        write_meta(out, cfg.ranking, Calibrator(), {"base_model": str(cross_encoder_dir)})
    return run.path


def _fake_loader(run_path: Path):
    from rec.data import load_dataset

    items = load_dataset(RunDir(run_path).dataset_dir()).items

    def load(folder: Path, device: str = "cpu") -> FakeModel:
        return FakeModel(items, json.loads((folder / "model.json").read_text())["sha"])

    return load


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, tiny_cross_encoder_dir: Path
) -> Iterator[tuple[Path, TestClient]]:
    """(run dir, client) shared by the read-only tests."""
    from rec.serve import create_app

    root = tmp_path_factory.mktemp("serve")
    with pytest.MonkeyPatch.context() as mp:
        # the fake reads the dataset, which make_serve_run writes before it builds the index
        mp.setattr(
            pipe,
            "load_retrieval_model",
            lambda folder, device="cpu": _fake_loader(root / "run")(folder, device),
        )
        run = make_serve_run(root, tiny_cross_encoder_dir)
        with TestClient(create_app(run), raise_server_exceptions=False) as client:
            yield run, client


def history_of(run: Path, user: str) -> list[str]:
    from rec.data import load_dataset, sort_events

    ds = load_dataset(RunDir(run).dataset_dir())
    return sort_events(ds.interactions.filter(pl.col("user_id") == user))["item_id"].to_list()


def test_health(served):
    run, client = served
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["run"] == "serve-test"
    assert body["stages"] == ["retrieval", "index", "ranking"]
    assert body["n_items"] == 60 and body["n_users"] == 40


def test_retrieve_matches_pipeline(served):
    run, client = served
    r = client.get("/retrieve", params={"user": "u3", "k": 7})
    assert r.status_code == 200
    body = r.json()
    assert body["stage"] == "retrieval" and body["latency_ms"] >= 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipe, "load_retrieval_model", _fake_loader(run))
        expected = pipe.retrieve(run, user="u3", k=7)
    got = body["items"]
    assert [x["item_id"] for x in got] == [x["item_id"] for x in expected]
    assert [x["title"] for x in got] == [x["title"] for x in expected]
    np.testing.assert_allclose([x["score"] for x in got], [x["score"] for x in expected], 1e-5)
    assert not {x["item_id"] for x in got} & set(history_of(run, "u3"))


def test_recommend_by_user_is_reranked_retrieval(served):
    from ranking.model import Reranker
    from ranking.pairs import history_texts_of

    run, client = served
    r = client.get("/recommend", params={"user": "u3", "k": 8})
    assert r.status_code == 200
    body = r.json()
    assert body["stage"] == "reranked"
    rows = body["items"]
    assert [x["rank"] for x in rows] == list(range(1, 9))
    retrieved = client.get("/retrieve", params={"user": "u3", "k": 8}).json()["items"]
    head = [x["item_id"] for x in retrieved[:RERANK_TOP]]
    # the first RERANK_TOP are the retrieved head reordered by the reranker, then retrieval order
    assert sorted(x["item_id"] for x in rows[:RERANK_TOP]) == sorted(head)
    assert [x["item_id"] for x in rows[RERANK_TOP:]] == [x["item_id"] for x in retrieved[5:]]
    assert all(x["click_probability"] is None for x in rows[RERANK_TOP:])
    rr = Reranker.load(run / "ranking")
    from rec.data import load_dataset

    items = load_dataset(RunDir(run).dataset_dir()).items
    text = dict(zip(items["item_id"].to_list(), items["text"].to_list()))
    title = dict(zip(items["item_id"].to_list(), items["title"].to_list()))
    hist = history_texts_of(history_of(run, "u3"), title, rr.cfg.history_items)
    probs = rr.predict(hist, [text[i] for i in head])
    order = np.argsort(-probs, kind="stable")
    assert [x["item_id"] for x in rows[:RERANK_TOP]] == [head[j] for j in order]
    np.testing.assert_allclose(
        [x["click_probability"] for x in rows[:RERANK_TOP]], probs[order], atol=1e-5
    )


def test_recommend_post_history_and_no_rerank(served):
    run, client = served
    r = client.post("/recommend", json={"history": ["i4", "i5"], "k": 3, "rerank": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stage"] == "retrieval" and len(body["items"]) == 3
    assert {"rank", "item_id", "title", "score"} <= set(body["items"][0])
    assert not {x["item_id"] for x in body["items"]} & {"i4", "i5"}
    by_user = client.post("/recommend", json={"user": "u3", "k": 4}).json()
    assert by_user["stage"] == "reranked"
    get = client.get("/recommend", params={"user": "u3", "k": 4}).json()
    assert [x["item_id"] for x in by_user["items"]] == [x["item_id"] for x in get["items"]]


def test_item_lookup(served):
    run, client = served
    r = client.get("/items/i4")
    assert r.status_code == 200
    assert r.json()["item_id"] == "i4" and r.json()["in_index"] is True and r.json()["text"]
    r = client.get("/items/nope")
    assert r.status_code == 404 and r.json() == {"error": "unknown item 'nope'"}


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "error"),
    [
        ("get", "/recommend", {"params": {"user": "nobody"}}, 404, "unknown user 'nobody'"),
        ("post", "/recommend", {"json": {"user": "nobody"}}, 404, "unknown user 'nobody'"),
        ("get", "/retrieve", {"params": {"user": "nobody"}}, 404, "unknown user 'nobody'"),
        ("get", "/recommend", {"params": {"user": "u3", "k": 0}}, 422, "k must be a positive"),
        ("post", "/recommend", {"json": {"user": "u3", "k": -1}}, 422, "k must be a positive"),
        ("get", "/retrieve", {"params": {"user": "u3", "k": 5000}}, 422, "k must be at most"),
        ("get", "/recommend", {"params": {"user": "u3", "k": "x"}}, 422, "query.k: "),
        ("get", "/recommend", {}, 422, "query.user: Field required"),
        ("post", "/recommend", {"json": {"history": ["i1", "zz"]}}, 422, "unknown item 'zz'"),
        ("post", "/recommend", {"json": {"history": []}}, 422, "the history is empty"),
        ("post", "/recommend", {"json": {}}, 422, "give either a user id or a history"),
        ("post", "/recommend", {"json": {"user": "u3", "history": ["i1"]}}, 422, "give either"),
        ("post", "/recommend", {"json": {"user": "u3", "kk": 3}}, 422, "kk: Extra inputs"),
        (
            "post",
            "/recommend",
            {"content": b"{not json", "headers": JSON},
            422,
            "JSON decode error",
        ),
        ("get", "/nowhere", {}, 404, "Not Found"),
    ],
)
def test_errors_are_one_line_json(served, method, url, kwargs, status, error):
    run, client = served
    r = getattr(client, method)(url, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"] and error in body["error"]
    assert "\n" not in body["error"] and "Traceback" not in r.text


def test_internal_error_is_500_without_traceback(served):
    run, client = served
    rec = client.app.state.recommender
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rec.model, "encode_users", lambda *a, **kw: 1 / 0)
        r = client.get("/retrieve", params={"user": "u3"})
    assert r.status_code == 500 and "Traceback" not in r.text
    assert r.json() == {"error": "internal server error (see the server log)"}


def test_run_without_reranker_and_add_items(tmp_path, tiny_cross_encoder_dir, monkeypatch):
    from rec.serve import create_app

    monkeypatch.setattr(
        pipe,
        "load_retrieval_model",
        lambda folder, device="cpu": _fake_loader(tmp_path / "run")(folder, device),
    )
    run = make_serve_run(tmp_path, tiny_cross_encoder_dir, reranker=False)
    client = TestClient(create_app(run), raise_server_exceptions=False)
    assert client.get("/health").json()["stages"] == ["retrieval", "index"]
    r = client.get("/recommend", params={"user": "u3", "k": 3})
    assert r.status_code == 200 and r.json()["stage"] == "retrieval"
    r = client.get("/recommend", params={"user": "u3", "rerank": True})
    assert r.status_code == 409 and "no reranker" in r.json()["error"]

    new = {"item_id": "n1", "title": "Brand new", "text": "jazz jazz thing"}
    r = client.post("/items", json={"items": [new, {"item_id": "i1", "text": "space ocean"}]})
    assert r.status_code == 200, r.text
    assert r.json() == {"added": 1, "replaced": 1, "ntotal": 61}
    assert client.get("/health").json()["n_items"] == 61
    assert client.get("/items/n1").json()["title"] == "Brand new"
    ids = [
        x["item_id"]
        for x in client.post("/retrieve", json={"history": ["i4"], "k": 61}).json()["items"]
    ]
    assert "n1" in ids
    r = client.post("/items", json={"items": [new, new]})
    assert r.status_code == 422 and r.json() == {"error": "items: duplicate item id 'n1'"}
    r = client.post("/items", json={"items": []})
    assert r.status_code == 422 and r.json()["error"].startswith("items: ")

    # a change on disk by someone else (another worker, `rec index add`) is picked up
    pipe.remove_items(run, ["n1"])
    assert client.get("/health").json()["n_items"] == 60
    assert client.get("/items/n1").status_code == 404


def test_cli_serve_broken_run_is_one_line(tmp_path):
    from click.testing import CliRunner

    from rec.cli import _register, cli

    _register()
    res = CliRunner().invoke(cli, ["serve", "--run-dir", str(tmp_path / "missing")])
    assert res.exit_code != 0
    assert res.output.strip().startswith("rec: error: ") and "Traceback" not in res.output
