"""Fixtures of the ranking stage: a tiny local BERT cross-encoder and a synthetic run directory."""

from __future__ import annotations

from pathlib import Path

import pytest

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def ranking_vocab(n_items: int = 300) -> list[str]:
    """Special tokens, punctuation and every word of the synthetic item texts."""
    from rec.data.synthetic import WORDS

    words = ["thing", "category", "cat", "-", ".", ":", ";", ",", "|"]
    words += [w for w in WORDS] + [str(i) for i in range(n_items)]
    return SPECIALS + list(dict.fromkeys(words))


def build_tiny_cross_encoder(out: Path, seed: int = 0) -> Path:
    """A 1-layer BERT (hidden 32, 2 heads) with a word-level WordPiece tokenizer, saved with
    ``save_pretrained`` (no network)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(ranking_vocab())}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
    )
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
    )
    model = BertForSequenceClassification(cfg)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce") / "model")


def make_synthetic_run(
    root: Path, model_dir: Path, n_users: int = 120, n_items: int = 240, extra: tuple[str, ...] = ()
) -> Path:
    """A run directory over a synthetic dataset, with a tiny-model ranking config."""
    from rec.artifacts import RunDir
    from rec.config import load_config
    from rec.data import save_dataset
    from rec.data.synthetic import synthetic_dataset

    inter, items, split = synthetic_dataset(n_users=n_users, n_items=n_items, seed=0)
    data_dir = save_dataset(root / "data", inter, items, {"source": "synthetic"}, splits=[split])
    cfg = load_config(
        None,
        (
            f'data.dataset_dir="{data_dir}"',
            f'ranking.model="{model_dir}"',
            "ranking.num_layers=0",
            "ranking.lr=0.003",
            "ranking.epochs=2",
            "ranking.eval_every=20",
            "ranking.patience=5",
            "ranking.rerank_top=10",
            "ranking.retrieve_top=20",
            "ranking.hard_pool=10",
            "ranking.negatives=5",
            "ranking.batch_groups=8",
            "ranking.warmup_steps=2",
            "ranking.valid_users=60",
            "ranking.quantize=none",
            *extra,
        ),
    )
    run = RunDir(root / "run")
    run.update_manifest(config=cfg)
    return run.path


@pytest.fixture
def synth_rank_run(tmp_path: Path, tiny_cross_encoder_dir: Path) -> Path:
    """A synthetic run directory (no retriever: candidates by co-occurrence), not yet trained."""
    return make_synthetic_run(tmp_path, tiny_cross_encoder_dir)


@pytest.fixture(scope="session")
def trained_rank_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_cross_encoder_dir: Path
) -> Path:
    """A synthetic run with a trained tiny reranker (shared by the read-only tests)."""
    from rec.pipeline.rank import train_reranker

    run = make_synthetic_run(tmp_path_factory.mktemp("rank-run"), tiny_cross_encoder_dir)
    train_reranker(run, device="cpu", progress=False)
    return run
