"""build-index / retrieve / index add with a tiny *trained* two-tower model (retrieval/).

The exact Flat index must return what the model's own exact matmul ranking returns.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

pytest.importorskip("retrieval.model")
pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rec.artifacts import RunDir
    from rec.config import DataConfig, RunConfig
    from rec.data import save_dataset
    from rec.data.synthetic import synthetic_dataset
    from retrieval.config import RetrievalConfig
    from retrieval.train import train_retrieval
    from tests.fixtures_models import build_tiny_static_st

    root = tmp_path_factory.mktemp("real-index")
    st = build_tiny_static_st(root / "st")
    inter, items, split = synthetic_dataset(n_users=60, n_items=50, seed=0)
    ds = save_dataset(root / "data", inter, items, {"source": "synthetic"}, splits=[split])
    rcfg = RetrievalConfig(encoder=str(st), epochs=1, dim=16, n_layers=1, max_len=20,
                           eval_every=1, text_cache_dir=str(root / "cache"), num_threads=1,
                           warmup_steps=1)  # fmt: skip
    run = RunDir(root / "run")
    run.update_manifest(config=RunConfig(data=DataConfig(dataset_dir=str(ds)), retrieval=rcfg))
    train_retrieval(ds, run.stage("retrieval"), rcfg, device="cpu", progress=False)
    return run.path


def test_retrieve_matches_model_exact_ranking(trained_run):
    from rec.artifacts import RunDir
    from rec.data import load_dataset, sort_events
    from rec.pipeline.index import build_index, retrieve
    from retrieval.model import RetrievalModel

    info = build_index(trained_run)
    assert info["ntotal"] == 50 and info["factory"] == "Flat" and info["metric"] == "ip"
    model = RetrievalModel.load(trained_run / "retrieval")
    assert info["encoder_sha256"] == model.encoder_sha256
    ds = load_dataset(RunDir(trained_run).dataset_dir())
    ev = sort_events(ds.interactions.filter(pl.col("user_id") == "u7"))
    want, want_sc = model.recommend(
        [ev["item_id"].to_list()], 10, timestamps=[ev["timestamp"].to_list()]
    )
    rows = retrieve(trained_run, user="u7", k=10)
    assert [r["item_id"] for r in rows] == want[0]
    np.testing.assert_allclose([r["score"] for r in rows], want_sc[0], rtol=1e-4, atol=1e-5)


def test_add_item_from_text_and_cli(trained_run, tmp_path):
    import rec.cli.index  # noqa: F401
    from rec.cli import cli
    from rec.pipeline.index import build_index

    build_index(trained_run)
    f = tmp_path / "new.jsonl"
    f.write_text(json.dumps({"item_id": "fresh", "title": "Fresh", "text": "red thing 3"}) + "\n")
    r = CliRunner().invoke(cli, ["index", "add", "--run-dir", str(trained_run), "--items", str(f)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ntotal"] == 51
    r = CliRunner().invoke(
        cli, ["retrieve", "--run-dir", str(trained_run), "--history", "i0,i6", "-k", "51"]
    )
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 49 and {"i0", "i6"}.isdisjoint(x["item_id"] for x in rows)
    assert next(x for x in rows if x["item_id"] == "fresh")["title"] == "Fresh"
