"""Run tables, reports, exports, the pipeline (with stand-in model stages) and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from eval.config import EvalConfig
from eval.evaluate import evaluate_run_table, run_table_ranks
from rec.errors import DataError

FAST = EvalConfig(bootstrap=50, ease_lambdas=(10.0, 100.0))


def _run(rows: list[tuple[str, str, int, str]]) -> pl.DataFrame:
    u, i, r, s = zip(*rows)
    return pl.DataFrame(
        {"user_id": u, "item_id": i, "rank": r, "score": [-float(x) for x in r], "stage": s}
    )


TRUTH = pl.DataFrame({"user_id": ["a", "b", "c"], "item_id": ["x", "y", "z"]})


def test_run_table_by_hand():
    run = _run(
        [
            ("a", "x", 0, "retrieval"),
            ("a", "q", 1, "retrieval"),
            ("b", "q", 0, "retrieval"),
            ("b", "y", 1, "retrieval"),
            ("c", "q", 0, "retrieval"),  # c's target not in the list
            ("a", "q", 0, "reranked"),
            ("a", "x", 1, "reranked"),
            ("b", "y", 0, "reranked"),  # c has no reranked list at all
        ]
    )
    ranks = run_table_ranks(run, TRUTH)
    assert ranks["retrieval"].tolist() == [0.0, 1.0, math.inf]
    assert ranks["reranked"].tolist() == [1.0, 0.0, math.inf]
    m = evaluate_run_table(run, TRUTH, ks=(1, 5))
    assert m["retrieval"]["recall@1"] == pytest.approx(1 / 3)
    assert m["retrieval"]["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert m["retrieval"]["mrr"] == pytest.approx(1.5 / 3)
    assert m["retrieval"]["n_users"] == 3 and "ceiling" not in m["retrieval"]
    assert m["reranked"]["ceiling"] == pytest.approx(2 / 3)
    assert m["reranked"]["recall@1"] == pytest.approx(1 / 3)


def test_run_table_order_comes_from_rank_and_duplicates_keep_first():
    run = _run(
        [("a", "q", 5, "s"), ("a", "x", 9, "s"), ("a", "q", 7, "s"), ("b", "y", 3, "s")]
    )  # 1-based or sparse ranks are fine: only order counts
    assert run_table_ranks(run, TRUTH)["s"].tolist() == [1.0, 0.0, math.inf]


def test_run_table_errors():
    with pytest.raises(DataError, match="one target per user"):
        run_table_ranks(_run([("a", "x", 0, "s")]), pl.concat([TRUTH, TRUTH]))
    with pytest.raises(DataError, match="lacks column"):
        run_table_ranks(pl.DataFrame({"user_id": ["a"], "item_id": ["x"]}), TRUTH)


# ---------------------------------------------------------------------------------------------
# the pipeline on the synthetic dataset, with stand-ins for the model stages


class FakeRetrieval:
    """Knows the planted walk: the item after the last one in its cluster scores highest."""

    def __init__(self, item_ids: list[str]) -> None:
        self.item_ids = list(reversed(item_ids))  # another order than the evaluator's
        self.index = {it: i for i, it in enumerate(self.item_ids)}
        self.encoder_sha256 = "fake"
        self.n = len(item_ids)
        self.noise = 0.01 * np.random.default_rng(0).random(self.n).astype(np.float32)

    def _next(self, hist: list[str]) -> int:
        last = int(hist[-1][1:])
        return self.index.get(f"i{(last + 6) % self.n}", 0)

    def encode_users(self, histories, timestamps=None):
        out = np.zeros((len(histories), self.n), dtype=np.float32)
        for u, h in enumerate(histories):
            out[u, self._next(h)] = 1.0
        return out + self.noise  # item vectors are the identity: user vector = scores

    def score_all(self, histories, timestamps=None):
        assert timestamps is not None and len(timestamps) == len(histories)
        return self.encode_users(histories)


class FakeIndex:
    def __init__(self, model: FakeRetrieval) -> None:
        self.ids = np.array(model.item_ids, dtype=object)

    def describe(self):
        return {"factory": "fake"}

    def search(self, q, k, exclude=None):
        s = np.asarray(q, dtype=np.float32).copy()
        for u, ex in enumerate(exclude or []):
            s[u, [i for i, x in enumerate(self.ids) if x in ex]] = -np.inf
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return self.ids[top], np.take_along_axis(s, top, axis=1)


@pytest.fixture
def run_dir(tmp_path: Path, synth_dataset_dir: Path) -> Path:
    from rec.artifacts import RunDir
    from rec.config import DataConfig, RunConfig

    cfg = RunConfig(name="t", data=DataConfig(dataset_dir=str(synth_dataset_dir)), eval=FAST)
    run = RunDir(tmp_path / "run")
    run.update_manifest(config=cfg)
    return run.path


def test_evaluate_run_floors_only(run_dir: Path, tmp_path: Path):
    from rec.artifacts import RunDir
    from rec.pipeline.evaluate import evaluate_run

    export = tmp_path / "rankings.parquet"
    metrics = evaluate_run(run_dir, "test", export_rankings=export)
    assert list(metrics) == [
        "popularity",
        "popularity:unfiltered",
        "ease",
        "ease:unfiltered",
        "markov",
        "markov:unfiltered",
    ]
    assert all(m["n_users"] == 200 for m in metrics.values())
    ev = run_dir / "eval"
    assert json.loads((ev / "metrics.json").read_text()) == metrics
    details = json.loads((ev / "details.json").read_text())
    assert details["protocol"]["filter_seen"] is True
    assert details["protocol"]["ease_lambda"] in (10.0, 100.0)
    report = (ev / "report.md").read_text()
    assert "Leave-one-out" in report and "| markov |" in report
    assert (ev / "recall_at_k.png").stat().st_size > 1000
    ranks = pl.read_parquet(export)
    assert ranks.columns == ["user_id", "item_id", "rank", "score", "stage"]
    assert ranks.group_by("stage", "user_id").len()["len"].max() == 100
    assert set(ranks["stage"].unique()) == {"popularity", "ease", "markov"}
    # the exported rankings re-score to the same metrics (top-100 is enough for @K <= 100)
    truth = pl.read_parquet(Path(RunDir(run_dir).dataset_dir()) / "splits/loo/test.parquet")
    again = evaluate_run_table(ranks, truth.select("user_id", "item_id"))
    assert again["markov"]["ndcg@10"] == pytest.approx(metrics["markov"]["ndcg@10"], abs=1e-9)
    assert RunDir(run_dir).manifest()["metrics"]["eval"] == metrics


def test_evaluate_run_with_stand_in_stages(run_dir: Path, monkeypatch):
    import index.vector_index as vi_mod
    import retrieval.model as rm
    from rec.data import load_split
    from rec.pipeline.evaluate import evaluate_run

    split = load_split(
        json.loads((run_dir / "manifest.json").read_text())["config"]["data"]["dataset_dir"], "loo"
    )
    items = sorted(
        set(split.train["item_id"].to_list())
        | set(split.test["item_id"].to_list())
        | set(split.valid["item_id"].to_list())
    )
    model = FakeRetrieval(items)
    monkeypatch.setattr(rm.RetrievalModel, "load", classmethod(lambda cls, d, device="cpu": model))
    monkeypatch.setattr(
        vi_mod.VectorIndex,
        "load",
        classmethod(lambda cls, d, expected_encoder_sha256=None, cfg=None: FakeIndex(model)),
    )
    (run_dir / "retrieval").mkdir()
    (run_dir / "retrieval" / "model.json").write_text("{}")
    (run_dir / "index").mkdir()
    (run_dir / "index" / "index.json").write_text("{}")
    metrics = evaluate_run(run_dir, "valid", sampled=20)
    assert {
        "retrieval",
        "retrieval:unfiltered",
        "retrieval:sampled20",
        "retrieval_ann",
        "popularity:sampled20",
    } <= set(metrics)
    assert metrics["retrieval"]["ndcg@10"] > metrics["popularity"]["ndcg@10"] + 0.2
    # the index path and the exact path agree for this exact stand-in index
    assert metrics["retrieval_ann"]["recall@10"] == pytest.approx(metrics["retrieval"]["recall@10"])
    assert metrics["retrieval:sampled20"]["recall@10"] >= metrics["retrieval"]["recall@10"]
    details = json.loads((run_dir / "eval" / "valid" / "details.json").read_text())
    assert details["significance"]["retrieval"]["p_bootstrap"] < 0.05
    assert [s["step"].split()[0] for s in details["funnel"]] == [
        "catalogue",
        "candidates",
        "top",
    ]
    assert (run_dir / "eval" / "valid" / "funnel.png").is_file()
    assert "reranked" not in metrics  # RUN/ranking absent: stage skipped
    assert "reliability.png" not in {p.name for p in (run_dir / "eval" / "valid").iterdir()}
    only = evaluate_run(run_dir, "valid", stages=["retrieval_ann"])
    assert "retrieval_ann" in only and "retrieval" not in only
    assert not (run_dir / "eval" / "valid" / "funnel.png").exists()  # no stale plot survives


def test_cli_baselines_and_evaluate(synth_dataset_dir: Path, run_dir: Path):
    from rec.cli import _register, cli

    _register()
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "baselines",
            "--data",
            str(synth_dataset_dir),
            "--split",
            "valid",
            "--no-filter-seen",
            "--knn",
            "itemknn",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [r["stage"] for r in rows] == [
        "popularity",
        "popularity:filtered",
        "itemknn",
        "itemknn:filtered",
        "markov",
        "markov:filtered",
    ]
    assert rows[0]["filter_seen"] is False and rows[0]["n_users"] == 200
    res = runner.invoke(cli, ["evaluate", "--run-dir", str(run_dir), "--format", "table"])
    assert res.exit_code == 0, res.output
    assert "ndcg@10" in res.stdout and "markov" in res.stdout
    res = runner.invoke(cli, ["evaluate", "--run-dir", str(run_dir / "nope")])
    assert res.exit_code != 0 and "rec: error:" in res.output
    res = runner.invoke(cli, ["baselines", "--data", str(run_dir)])
    assert res.exit_code != 0 and "not a prepared dataset" in res.output


@pytest.mark.slow
def test_reranked_stage_with_a_trained_tiny_reranker(trained_rank_run: Path, monkeypatch):
    """The `reranked` hook against the ranking stage's real Reranker (tiny, trained)."""
    import retrieval.model as rm
    from rec.artifacts import RunDir
    from rec.data import load_split
    from rec.pipeline.evaluate import evaluate_run

    split = load_split(RunDir(trained_rank_run).dataset_dir(), "loo")
    items = sorted(
        set(split.train["item_id"].to_list())
        | set(split.valid["item_id"].to_list())
        | set(split.test["item_id"].to_list())
    )
    model = FakeRetrieval(items)
    monkeypatch.setattr(rm.RetrievalModel, "load", classmethod(lambda cls, d, device="cpu": model))
    (trained_rank_run / "retrieval").mkdir(exist_ok=True)
    (trained_rank_run / "retrieval" / "model.json").write_text("{}")
    metrics = evaluate_run(trained_rank_run, "valid", stages=["retrieval", "reranked"])
    rr, ret = metrics["reranked"], metrics["retrieval"]
    assert rr["ceiling"] == pytest.approx(ret["recall@10"])  # rerank_top = 10 candidates
    assert rr["recall@10"] == pytest.approx(rr["ceiling"])  # a reorder of the same 10
    assert rr["recall@5"] <= rr["ceiling"]
    details = json.loads((trained_rank_run / "eval" / "valid" / "details.json").read_text())
    assert 0.0 <= details["calibration"]["ece"] <= 1.0
    assert (trained_rank_run / "eval" / "valid" / "reliability.png").is_file()


@pytest.mark.slow
def test_retrieval_stage_with_a_real_tiny_model(run_dir: Path, tiny_st_dir: Path, tmp_path: Path):
    """The `retrieval` stage through the real RetrievalModel API, cross-checked against the
    retrieval stage's own evaluator (an independent implementation of the same protocol)."""
    from rec.artifacts import RunDir
    from rec.data import load_split
    from rec.pipeline.evaluate import evaluate_run
    from retrieval.config import RetrievalConfig
    from retrieval.metrics import evaluate
    from retrieval.model import RetrievalModel
    from retrieval.train import train_retrieval

    data_dir = RunDir(run_dir).dataset_dir()
    cfg = RetrievalConfig(
        encoder=str(tiny_st_dir),
        text_cache_dir=str(tmp_path / "cache"),
        dim=32,
        max_len=20,
        n_heads=2,
        epochs=8,
        eval_every=4,
        patience=2,
        batch_size=32,
        warmup_steps=10,
        num_threads=1,
    )
    train_retrieval(data_dir, run_dir / "retrieval", cfg, seed=0, device="cpu", progress=False)
    metrics = evaluate_run(run_dir, "test", stages=["retrieval"])
    ref, _ = evaluate(RetrievalModel.load(run_dir / "retrieval"), load_split(data_dir), "test")
    assert metrics["retrieval"]["n_users"] == 200
    assert metrics["retrieval"]["ndcg@10"] == pytest.approx(ref["ndcg@10"], abs=1e-4)
    assert metrics["retrieval"]["recall@10"] == pytest.approx(ref["recall@10"], abs=1e-4)
