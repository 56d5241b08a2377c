"""Tiny local models for tests, built offline (auto-loaded by conftest as a pytest plugin).

- ``tiny_vocab``: words of the synthetic dataset's item texts (rec.data.synthetic) + specials.
- ``tiny_st_dir``: a sentence-transformers model made of a word-level tokenizer and a
  StaticEmbedding (dim 16): fast, deterministic text vectors for item-tower tests.
- ``tiny_bert_dir``: a 1-layer BertModel (hidden 32) with a WordPiece tokenizer saved by
  ``save_pretrained`` (reusable as a cross-encoder backbone by the ranking stage).
- ``tiny_bert_st_dir``: the tiny BERT wrapped as a sentence-transformers model (mean pooling),
  for the fine-tune / LoRA item-tower modes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _vocab() -> list[str]:
    from rec.data.synthetic import WORDS

    words = [w.lower() for w in WORDS]
    words += ["thing", "category", "cat", "genres", "title", "item", "new", "the", "a", "of"]
    words += [str(i) for i in range(1000)]
    words += [".", ",", ":", "-", "(", ")", "'", "&", "!", "?"]
    return SPECIALS + sorted(set(words) - set(SPECIALS))


@pytest.fixture(scope="session")
def tiny_vocab() -> list[str]:
    """Vocabulary shared by the tiny models."""
    return _vocab()


def build_tiny_static_st(out: Path, dim: int = 16, seed: int = 0) -> Path:
    """Save a StaticEmbedding sentence-transformers model with a word-level tokenizer to ``out``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {w: i for i, w in enumerate(_vocab())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    try:
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    except ImportError:  # older sentence-transformers
        from sentence_transformers.models import StaticEmbedding
    g = torch.Generator().manual_seed(seed)
    weights = torch.randn(len(vocab), dim, generator=g)
    emb = StaticEmbedding(tok, embedding_weights=weights)
    model = SentenceTransformer(modules=[emb], device="cpu")
    model.save(str(out))
    return out


def build_tiny_bert(out: Path, seed: int = 0) -> Path:
    """Save a 1-layer BertModel (hidden 32) and a WordPiece tokenizer to ``out``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(_vocab()) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(_vocab()),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_st_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny StaticEmbedding sentence-transformers model directory."""
    return build_tiny_static_st(tmp_path_factory.mktemp("tiny-st") / "model")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 1-layer BERT (hidden 32) + WordPiece tokenizer saved with save_pretrained."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(scope="session")
def tiny_bert_st_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT as a sentence-transformers model (mean pooling)."""
    from sentence_transformers import SentenceTransformer, models

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tr = models.Transformer(str(tiny_bert_dir), max_seq_length=32)
    dim_fn = getattr(tr, "get_embedding_dimension", None) or tr.get_word_embedding_dimension
    pool = models.Pooling(dim_fn(), pooling_mode="mean")
    out = tmp_path_factory.mktemp("tiny-bert-st") / "model"
    SentenceTransformer(modules=[tr, pool], device="cpu").save(str(out))
    return out
