"""Two-tower retrieval: towers, losses, training on planted structure, save/load, cold start, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from rec.data import load_split
from rec.errors import ConfigError, RecError
from retrieval.config import RetrievalConfig
from retrieval.losses import NegativeSampler, full_softmax_loss, sampled_softmax_loss
from retrieval.metrics import evaluate, summarize, target_ranks
from retrieval.model import RetrievalModel
from retrieval.text import encode_texts_cached
from retrieval.towers import AttrVocab, gap_buckets
from retrieval.train import train_retrieval, training_windows


def tiny_cfg(encoder: Path, cache: Path, **kw: object) -> RetrievalConfig:
    base = dict(
        encoder=str(encoder),
        text_cache_dir=str(cache),
        dim=32,
        max_len=20,
        n_heads=2,
        epochs=16,
        eval_every=4,
        patience=2,
        batch_size=32,
        dropout=0.1,
        warmup_steps=10,
        num_threads=1,
    )
    base.update(kw)
    return RetrievalConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def synth_module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rec.data import save_dataset
    from rec.data.synthetic import synthetic_dataset

    inter, items, split = synthetic_dataset(n_users=200, n_items=120, seed=0)
    out = tmp_path_factory.mktemp("synth") / "synth"
    return save_dataset(out, inter, items, {"source": "synthetic"}, splits=[split])


@pytest.fixture(scope="module")
def trained(
    synth_module_dir: Path, tiny_st_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("trained")
    cfg = tiny_cfg(tiny_st_dir, root / "cache")
    out = root / "model"
    metrics = train_retrieval(synth_module_dir, out, cfg, seed=0, device="cpu", progress=False)
    return out, metrics


# --- units ------------------------------------------------------------------------------------


def test_gap_buckets_unknown_first_and_monotone() -> None:
    b = gap_buckets([0, 1, 100, 100_000, None, 5], 16)
    assert b[0] == 0 and b[4] == 0 and b[5] == 0
    assert 1 <= b[1] < b[2] < b[3] <= 16
    assert gap_buckets([1, 2], 0) == [0, 0]


def test_training_windows_cover_every_target_once() -> None:
    seq = list(range(23))
    wins = training_windows([(seq, [0] * 23)], max_len=5)
    targets = sorted(t for w, _ in wins for t in w[1:])
    assert targets == seq[1:]
    assert all(len(w) <= 6 for w, _ in wins)


def test_attr_vocab_tokens_and_price_buckets() -> None:
    items = pl.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "genres": [["x", "y"], ["x"], ["y"], []],
            "price": [1.0, 2.0, 100.0, None],
        }
    )
    v = AttrVocab.build(items, price_buckets=2, max_tokens=4)
    enc = v.encode(items)
    assert enc.shape == (4, 4)
    assert (enc[0] > 0).sum() >= 2 and (enc[3] == 0).all()
    assert AttrVocab.from_json(v.to_json()).encode(items).tolist() == enc.tolist()


def test_sampled_softmax_equals_full_softmax_over_all_items() -> None:
    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(7, 8, generator=g), torch.randn(11, 8, generator=g)
    tgt = torch.randint(0, 11, (7,), generator=g)
    full = full_softmax_loss(users, items, tgt, 0.5)
    samp = sampled_softmax_loss(users, items, tgt, None, 0.5)
    assert torch.allclose(full, samp)
    s = NegativeSampler(np.array([10, 1, 0]), "uniform", 0)
    q = s.log_q(np.array([0, 1, 2]), n_pos=4, n_neg=3)
    assert q[0] > q[1] > q[2]


def test_ranks_and_metrics_by_hand() -> None:
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.5], [0.1, 0.2, 0.3, 0.4]])
    ranks = target_ranks(scores, torch.tensor([1, 0]), seen=[[0], []])
    assert ranks.tolist() == [0, 3]
    m = summarize(ranks, ks=(1, 5))
    assert m["recall@1"] == 0.5 and m["recall@5"] == 1.0
    assert m["ndcg@5"] == pytest.approx((1 + 1 / np.log2(5)) / 2)
    assert m["mrr"] == pytest.approx((1 + 0.25) / 2)


def test_text_cache_encodes_only_new_texts(tiny_st_dir: Path, tmp_path: Path) -> None:
    a = encode_texts_cached(["red thing 1", "blue thing 2"], str(tiny_st_dir), cache_dir=tmp_path)

    class Boom:
        def encode(self, texts: list[str], **kw: object) -> np.ndarray:
            if len(texts) != 1:
                raise AssertionError(f"re-encoded cached texts: {texts}")
            return np.ones((1, a.shape[1]), dtype=np.float32)

    b = encode_texts_cached(
        ["blue thing 2", "gold thing 3", "red thing 1"],
        str(tiny_st_dir),
        cache_dir=tmp_path,
        model=Boom(),
    )
    assert np.array_equal(b[0], a[1]) and np.array_equal(b[2], a[0])
    assert list(tmp_path.rglob("*.npz"))


# --- trained model ----------------------------------------------------------------------------


def test_trained_beats_popularity_on_planted_structure(
    trained: tuple[Path, dict], synth_module_dir: Path
) -> None:
    out, metrics = trained
    model = RetrievalModel.load(out)
    split = load_split(synth_module_dir)
    m, _ = evaluate(model, split, "test")
    # popularity baseline with the same protocol (seen items filtered)
    counts = split.train.group_by("item_id").len()
    pop = dict(zip(counts["item_id"].to_list(), counts["len"].to_list()))
    scores = torch.tensor([[float(pop.get(i, 0)) for i in model.item_ids]] * split.test.height)
    from retrieval.data import eval_inputs

    _, hists, _, targets = eval_inputs(split, "test")
    seen = [[model.index[i] for i in h] for h in hists]
    pranks = target_ranks(scores, torch.tensor([model.index[t] for t in targets]), seen)
    pop_r10 = float((pranks < 10).mean())
    assert m["recall@10"] > pop_r10 + 0.2, (m["recall@10"], pop_r10)
    assert metrics["valid"]["ndcg@10"] > 0 and metrics["best_epoch"] > 0


def test_save_load_identical_vectors(
    trained: tuple[Path, dict], tmp_path: Path, synth_module_dir: Path
) -> None:
    out, _ = trained
    a = RetrievalModel.load(out)
    a.save(tmp_path / "copy")
    b = RetrievalModel.load(tmp_path / "copy")
    assert a.encoder_sha256 == b.encoder_sha256
    assert a.metric == "ip" and a.item_ids == b.item_ids
    np.testing.assert_array_equal(a.item_vectors(), b.item_vectors())
    items = pl.read_parquet(synth_module_dir / "items.parquet")
    va, vb = a.encode_items(items), b.encode_items(items)
    assert va.dtype == np.float32 and va.shape == (len(items), 32)
    np.testing.assert_array_equal(va, vb)
    np.testing.assert_allclose(va, a.item_vectors(), atol=1e-5)
    h = [["i0", "i6", "i12"], ["i5"]]
    np.testing.assert_array_equal(a.encode_users(h), b.encode_users(h))


def test_cold_item_and_new_user(trained: tuple[Path, dict]) -> None:
    model = RetrievalModel.load(trained[0])
    new = pl.DataFrame(
        {
            "item_id": ["brand-new"],
            "text": ["red thing 999. Category: cat-red."],
            "categories": [["cat-red"]],
            "price": [8.0],
        }
    )
    v = model.encode_items(new)
    assert v.shape == (1, 32) and np.isfinite(v).all() and np.abs(v).sum() > 0
    u = model.encode_users([["nope", "i0", "i6"]], timestamps=[[1, 2, 3]])
    np.testing.assert_allclose(
        u, model.encode_users([["i0", "i6"]], timestamps=[[2, 3]]), atol=1e-5
    )
    with pytest.raises(RecError, match="no item known"):
        model.encode_users([["nope"]])
    ids, scores = model.recommend([["i0", "i6"]], k=5)
    assert len(ids[0]) == 5 and not {"i0", "i6"} & set(ids[0])
    assert (np.diff(scores[0]) <= 0).all()
    assert model.score_all([["i0"]]).shape == (1, len(model.item_ids))


def test_load_refuses_tampered_weights(trained: tuple[Path, dict], tmp_path: Path) -> None:
    from rec.errors import ArtifactError

    model = RetrievalModel.load(trained[0])
    d = model.save(tmp_path / "m")
    meta = json.loads((d / "model.json").read_text())
    meta["encoder_sha256"] = "0" * 64
    (d / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="hash"):
        RetrievalModel.load(d)
    with pytest.raises(ArtifactError, match="model.json"):
        RetrievalModel.load(tmp_path)


def test_cold_item_training_and_resume(
    synth_module_dir: Path, tiny_st_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retrieval import train as T

    cfg = tiny_cfg(
        tiny_st_dir,
        tmp_path / "cache",
        epochs=4,
        eval_every=1,
        patience=9,
        cold_item_frac=0.1,
        dim=16,
    )
    calls = {"n": 0}
    real = T._Trainer.validate

    def crash_on_second(self: T._Trainer) -> dict:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(T._Trainer, "validate", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        train_retrieval(synth_module_dir, tmp_path / "m", cfg, seed=1, device="cpu", progress=False)
    assert (tmp_path / ".m.ckpt" / "state.json").is_file()
    monkeypatch.setattr(T._Trainer, "validate", real)
    m = train_retrieval(synth_module_dir, tmp_path / "m", cfg, seed=1, device="cpu", progress=False)
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3, 4]
    assert not (tmp_path / ".m.ckpt").exists()
    model = RetrievalModel.load(tmp_path / "m")
    cold = model.info["cold_items"]
    assert len(cold) == 12
    assert all(int(model.cat_ids[model.index[c]]) == 0 for c in cold)
    assert np.isfinite(model.item_vectors()).all()


@pytest.mark.parametrize("mode", ["lora", "finetune"])
def test_trainable_text_modes(
    mode: str, synth_module_dir: Path, tiny_bert_st_dir: Path, tmp_path: Path
) -> None:
    cfg = tiny_cfg(
        tiny_bert_st_dir,
        tmp_path / "cache",
        lm_mode=mode,
        epochs=1,
        dim=16,
        loss="sampled_softmax",
        n_negatives=16,
        batch_size=100,
        features=("text", "id"),
        fusion="concat_mlp",
    )
    train_retrieval(synth_module_dir, tmp_path / "m", cfg, seed=0, device="cpu", progress=False)
    model = RetrievalModel.load(tmp_path / "m")
    assert (tmp_path / "m" / "encoder").is_dir()
    v = model.encode_items(pl.DataFrame({"item_id": ["x"], "text": ["gold thing 5"]}))
    assert np.isfinite(v).all()


def test_bad_config_is_rejected(synth_module_dir: Path, tiny_st_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(tiny_st_dir, tmp_path)
    with pytest.raises(ConfigError, match="features"):
        train_retrieval(
            synth_module_dir, tmp_path / "m", replace(cfg, features=("pixels",)), device="cpu"
        )
    with pytest.raises(ConfigError, match="needs 'text'"):
        train_retrieval(
            synth_module_dir,
            tmp_path / "m",
            replace(cfg, features=("id",), lm_mode="lora"),
            device="cpu",
        )


# --- CLI --------------------------------------------------------------------------------------


def _cli() -> object:
    from rec.cli import _register, cli

    _register()
    return cli


def test_cli_train_retrieval_end_to_end(
    synth_dataset_dir: Path, tiny_st_dir: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    run = tmp_path / "run"
    args = [
        "train",
        "retrieval",
        "--data",
        str(synth_dataset_dir),
        "--run-dir",
        str(run),
        "--device",
        "cpu",
        "--quiet",
        "--set",
        f'retrieval.encoder="{tiny_st_dir}"',
        "--set",
        f'retrieval.text_cache_dir="{tmp_path / "cache"}"',
        "--set",
        "retrieval.epochs=2",
        "--set",
        "retrieval.eval_every=1",
        "--set",
        "retrieval.dim=16",
        "--set",
        "retrieval.max_len=10",
        "--set",
        "retrieval.num_threads=1",
    ]
    res = CliRunner().invoke(_cli(), args)  # type: ignore[arg-type]
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout.strip().splitlines()[-1])
    assert row["stage"] == "retrieval" and 0 <= row["valid_recall@10"] <= 1
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["parts"]["retrieval"]["sha256"]
    assert manifest["config"]["retrieval"]["dim"] == 16
    assert manifest["config"]["data"]["dataset_dir"] == str(synth_dataset_dir)
    assert (run / "config.toml").is_file()
    assert RetrievalModel.load(run / "retrieval").cfg.dim == 16


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--data", "/nonexistent/data"], "not a prepared dataset"),
        (["--set", "retrieval.nope=1"], "unknown config key"),
        (["--set", "retrieval.dim=big"], "expected an integer"),
    ],
)
def test_cli_bad_input_one_line(
    extra: list[str], needle: str, synth_dataset_dir: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    args = ["train", "retrieval", "--run-dir", str(tmp_path / "run"), "--device", "cpu"]
    if "--data" not in extra:
        args += ["--data", str(synth_dataset_dir)]
    res = CliRunner().invoke(_cli(), [*args, *extra])  # type: ignore[arg-type]
    assert res.exit_code != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rec: error:") and needle in lines[0]


# --- slow: packaged MiniLM and real data ------------------------------------------------------


@pytest.mark.slow
def test_packaged_minilm_text_vectors(tmp_path: Path) -> None:
    v = encode_texts_cached(
        [
            "Toy Story (1995). Genres: Animation, Children.",
            "Heat (1995). Genres: Action, Crime, Thriller.",
        ],
        "packaged:all-MiniLM-L6-v2",
        cache_dir=tmp_path,
    )
    assert v.shape == (2, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-3)


@pytest.mark.slow
def test_real_movielens_small_beats_popularity(real_data: Path, tmp_path: Path) -> None:
    from rec.data import leave_one_out, save_dataset

    r = pl.read_csv(real_data / "ml-latest-small" / "ratings.csv").with_row_index("order")
    r = r.select(
        pl.col("userId").cast(str).alias("user_id"),
        pl.col("movieId").cast(str).alias("item_id"),
        pl.col("timestamp").cast(pl.Int64),
        pl.col("order").cast(pl.Int64),
    )
    m = pl.read_csv(real_data / "ml-latest-small" / "movies.csv").select(
        pl.col("movieId").cast(str).alias("item_id"),
        "title",
        pl.format("{}. Genres: {}.", "title", pl.col("genres").str.replace_all(r"\|", ", ")).alias(
            "text"
        ),
    )
    d = save_dataset(tmp_path / "ml", r, m, {"source": "test"}, splits=[leave_one_out(r)])
    cfg = RetrievalConfig(
        epochs=6, eval_every=3, num_threads=2, text_cache_dir=str(tmp_path / "cache")
    )
    met = train_retrieval(d, tmp_path / "m", cfg, seed=0, device="cpu", progress=False)
    assert met["valid"]["recall@10"] > 0.05
