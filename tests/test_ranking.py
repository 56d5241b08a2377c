"""Tests of the ranking stage: time-safe pairs, losses, calibration, training, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ranking.calibrate import Calibrator, calibration_report
from ranking.losses import listwise_softmax, pointwise_bce
from ranking.metrics import auc, ece, log_loss, ndcg_at_k
from ranking.pairs import (
    PairTokenizer,
    eval_examples,
    history_texts_of,
    popularity,
    serving_groups,
    training_examples,
    training_groups,
)
from rec.data.dataset import sequences, sort_events


@pytest.fixture(scope="module")
def synth():
    from rec.data.synthetic import synthetic_dataset

    inter, items, split = synthetic_dataset(n_users=60, n_items=240, seed=1)
    return inter, items, split


def _popular_fn(split):
    items, _ = popularity(split.train)

    def fn(histories, k):
        return [[i for i in items if i not in set(h)][:k] for h in histories]

    return fn


def test_training_pairs_are_time_safe(synth):
    inter, items, split = synth
    full = sequences(sort_events(inter))
    ex = training_examples(split, positions_per_user=0)
    assert ex
    train_seqs = sequences(split.train)
    for user, hist, target in ex:
        seq = full[user]
        t = len(hist)
        assert seq[:t] == hist and seq[t] == target  # history = exactly the events before it
        assert len(hist) < len(train_seqs[user])  # targets inside the train part
    # the train part's last item is a target
    lasts = {(u, s[-1]) for u, s in train_seqs.items() if len(s) > 1}
    assert lasts <= {(u, t) for u, _, t in ex}


@pytest.mark.parametrize("part", ["valid", "test"])
def test_eval_pairs_are_time_safe(synth, part):
    inter, items, split = synth
    ex = eval_examples(split, part)
    target_df = split.valid if part == "valid" else split.test
    seq_of = {(r["user_id"], r["item_id"]): r["seq"] for r in target_df.iter_rows(named=True)}
    for user, hist, target in ex:
        pos = seq_of[(user, target)]
        assert len(hist) == pos  # every earlier event, nothing later
    # history never contains a future event: compare with the full ordered log
    full = sequences(sort_events(inter))
    for user, hist, target in ex:
        assert full[user][: len(hist)] == hist
        assert full[user][len(hist)] == target


@pytest.mark.parametrize("hard_frac", [0.5, 1.0])
def test_negatives_never_positive_or_seen(synth, hard_frac):
    inter, items, split = synth
    rng = np.random.default_rng(0)
    ex = training_examples(split, positions_per_user=3)
    pop_items, pop_counts = popularity(split.train)
    groups = training_groups(
        ex,
        _popular_fn(split),
        pop_items,
        pop_counts,
        items["item_id"].to_list(),
        negatives=7,
        hard_frac=hard_frac,
        popular_frac=0.25,
        hard_pool=20,
        rng=rng,
    )
    for g in groups:
        assert g.candidates[0] == g.target and g.labels[0] == 1.0
        assert g.labels[1:].sum() == 0 and len(g.candidates) == 8
        negs = set(g.candidates[1:])
        assert g.target not in negs and not (negs & set(g.history))
        assert len(negs) == 7


def test_serving_lists_never_insert_target(synth):
    inter, items, split = synth

    def fn(histories, k):  # a first stage that never finds anything relevant
        return [["x1", "x2", "x3"][:k] for _ in histories]

    groups = serving_groups(eval_examples(split, "test"), fn, top=3)
    assert all(g.labels.sum() == 0 and g.target not in g.candidates for g in groups)


def test_pair_tokenizer_budget(tiny_cross_encoder_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_cross_encoder_dir))
    pt = PairTokenizer(
        tok, max_tokens=16, candidate_tokens=5, history_item_tokens=3, history_items=10
    )
    hist = [f"red thing {i}" for i in range(10)]
    ids, types = pt.pair_ids(hist, "blue thing 7 . category : cat - blue")
    assert len(ids) <= 16 and len(ids) == len(types)
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    words = tok.convert_ids_to_tokens(ids)
    assert words[1:6] == ["blue", "thing", "7", ".", "category"]
    assert words[7:10] == ["red", "thing", "0"]  # most recent first
    enc = pt.encode([hist, hist[:1]], ["blue thing 1", "red thing 2"])
    assert enc["input_ids"].shape == enc["attention_mask"].shape
    assert history_texts_of(["a", "b", "c"], {"a": "A", "c": "C"}, 2) == ["C", "b"]


def test_losses():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    ls = listwise_softmax(logits, labels)  # second group has no positive: ignored
    expected = -torch.log_softmax(logits[0], 0)[0]
    assert torch.isclose(ls, expected)
    bce = pointwise_bce(logits, labels)
    assert bce > 0 and torch.isfinite(bce)


def test_metrics_hand_computed():
    assert ndcg_at_k([np.array([0, 1, 0]), np.array([0, 0, 0])], 10) == pytest.approx(
        (1 / np.log2(3)) / 2
    )
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert log_loss(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(np.log(2))
    assert ece(np.array([0.2, 0.2, 0.2, 0.2, 0.2]), np.array([0, 0, 0, 0, 1])) == pytest.approx(0)


@pytest.mark.parametrize("method", ["platt", "isotonic", "temperature"])
def test_calibration_lowers_ece(method):
    rng = np.random.default_rng(0)
    n = 20000
    true_logit = rng.normal(-3.0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(float)
    shift = 0.0 if method == "temperature" else 4.0  # temperature has no bias term
    raw = 2.5 * true_logit + shift  # over-confident (and shifted): badly miscalibrated
    fit, test = slice(0, n // 2), slice(n // 2, n)
    cal = Calibrator.fit(method, raw[fit], y[fit])
    before = ece(1 / (1 + np.exp(-raw[test])), y[test])
    after = ece(cal.transform(raw[test]), y[test])
    assert after < before
    assert after < 0.02
    back = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert np.allclose(back.transform(raw[:50]), cal.transform(raw[:50]))
    rep = calibration_report(cal.transform(raw[test]), y[test])
    assert set(rep) >= {"auc", "log_loss", "ece"}


def test_rank_fusion_uses_rank():
    rng = np.random.default_rng(0)
    ranks = np.tile(np.arange(20), 500)
    y = (rng.random(len(ranks)) < 0.3 / (1 + ranks)).astype(float)
    logits = rng.normal(size=len(ranks))  # an uninformative cross-encoder
    cal = Calibrator.fit("platt", logits, y, ranks, use_rank=True)
    assert cal.weights[2] < 0  # later retrieval rank -> lower click probability


def test_train_save_load_predict(trained_rank_run: Path):
    from ranking.model import Reranker
    from rec.artifacts import RunDir

    run = RunDir(trained_rank_run)
    rdir = run.stage("ranking")
    assert (rdir / "ranking.json").is_file() and (rdir / "reliability_valid.png").is_file()
    assert (rdir / "config.json").is_file() and (rdir / "tokenizer.json").is_file()
    m = run.manifest()
    assert "ranking" in m["parts"] and m["metrics"]["ranking_train"]["steps"] > 0
    for q in ("none", "int8"):
        rr = Reranker.load(rdir, quantize=q)
        p = rr.predict(["red thing 3", "red thing 2"], ["red thing 4", "blue thing 9"])
        assert p.shape == (2,) and np.all((p > 0) & (p < 1))


def test_training_learns_on_synthetic(trained_rank_run: Path):
    from rec.artifacts import read_json

    meta = read_json(trained_rank_run / "ranking" / "ranking.json")
    valid = meta["valid"]
    # calibrated probabilities on the served validation lists beat the raw sigmoid
    assert valid["calibration"]["ece"] < valid["calibration_uncalibrated"]["ece"]
    # the cross-encoder alone ranks the positive above chance within the served lists
    assert valid["calibration"]["auc"] > 0.6


def test_evaluate_and_recommend(trained_rank_run: Path):
    from rec.pipeline.rank import evaluate_reranker, recommend, rerank

    out = evaluate_reranker(trained_rank_run, "test", progress=False)
    assert out["users"] > 0 and 0 <= out["ceiling@rerank_top"] <= 1
    assert out["reranked"]["ndcg@10"] <= out["ceiling@rerank_top"] + 1e-9
    rows = recommend(trained_rank_run, "u3", k=12)
    assert [r["rank"] for r in rows] == list(range(1, 13))
    assert len({r["item_id"] for r in rows}) == 12
    probs = [r["click_probability"] for r in rows if r["click_probability"] is not None]
    assert len(probs) == 10 and all(0 < p < 1 for p in probs)
    again = rerank(trained_rank_run, "u3", candidates=["i1", "i2"])
    assert {r["item_id"] for r in again} == {"i1", "i2"}


def test_cli_json(trained_rank_run: Path, tmp_path: Path):
    from click.testing import CliRunner

    from rec.cli import _register, cli

    _register()
    runner = CliRunner()
    res = runner.invoke(
        cli, ["recommend", "--run-dir", str(trained_rank_run), "--user", "u5", "-k", "5"]
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 5 and set(rows[0]) >= {"rank", "item_id", "title", "click_probability"}
    cands = tmp_path / "c.jsonl"
    cands.write_text('{"item_id": "i7"}\n{"item_id": "i8"}\n')
    res = runner.invoke(
        cli,
        [
            "rerank",
            "--run-dir",
            str(trained_rank_run),
            "--user",
            "u5",
            "--candidates",
            str(cands),
            "--format",
            "table",
        ],
    )
    assert res.exit_code == 0 and "click_probability" in res.stdout
    res = runner.invoke(
        cli,
        ["rerank", "--run-dir", str(trained_rank_run), "--user", "u5", "--candidates", "-"],
        input='{"item_id": "i7"}\n',
    )
    assert res.exit_code == 0 and json.loads(res.stdout.splitlines()[0])["item_id"] == "i7"
    res = runner.invoke(
        cli, ["recommend", "--run-dir", str(trained_rank_run), "--user", "nobody", "-k", "3"]
    )
    assert res.exit_code != 0 and "rec: error:" in res.stderr and "Traceback" not in res.output
    res = runner.invoke(
        cli,
        [
            "recommend",
            "--run-dir",
            str(trained_rank_run),
            "--user",
            "nobody",
            "--history",
            "i1,i2",
            "-k",
            "3",
        ],
    )
    assert res.exit_code == 0 and len(res.stdout.splitlines()) == 3


def test_cli_train_reranker(synth_rank_run: Path):
    from click.testing import CliRunner

    from rec.cli import _register, cli

    _register()
    res = CliRunner().invoke(
        cli,
        [
            "train",
            "reranker",
            "--run-dir",
            str(synth_rank_run),
            "--device",
            "cpu",
            "--set",
            "ranking.max_steps=3",
            "--set",
            'ranking.finetune="lora"',
            "--set",
            'ranking.loss="bce"',
            "--set",
            "ranking.valid_users=10",
        ],
    )
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout.splitlines()[-1])
    assert row["steps"] == 3 and row["candidates"] == "cooccurrence"
    res = CliRunner().invoke(
        cli, ["train", "reranker", "--run-dir", str(synth_rank_run), "--recalibrate"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[-1])["recalibrated"] is True
    res = CliRunner().invoke(
        cli, ["train", "reranker", "--run-dir", str(synth_rank_run), "--set", "ranking.nope=1"]
    )
    assert res.exit_code != 0 and "unknown config key" in res.stderr


def test_serving_encoder_int8_close(tiny_cross_encoder_dir: Path):
    from ranking.config import RankingConfig
    from ranking.model import CrossEncoder
    from ranking.train import serving_encoder, serving_precision

    cfg = RankingConfig(num_layers=0, quantize="int8")
    enc = CrossEncoder.from_pretrained(str(tiny_cross_encoder_dir), cfg)
    served = serving_encoder(enc, cfg, "cpu")
    assert served is not enc and serving_precision(cfg, "cpu") == "int8"
    hist = [["red thing 1", "red thing 2"]] * 4
    cands = ["red thing 3", "blue thing 4", "gold thing 5", "jazz thing 6"]
    a, b = enc.logits(hist, cands), served.logits(hist, cands)
    assert np.abs(a - b).max() < 0.1
    assert serving_encoder(enc, RankingConfig(quantize="none"), "cpu") is enc
