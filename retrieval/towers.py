"""The two towers.

Item tower: text vector (pretrained sentence encoder, frozen / top layers tuned / LoRA) projected
to ``dim``, fused with a learned item-ID embedding and attribute features (genres, categories,
tags, brand, price bucket) by concat+MLP or a gated sum. An item with no trained ID (cold start)
uses its text and attributes alone; ID-embedding dropout during training keeps such vectors in
the same space.

User tower: a causal pre-LN transformer (SASRec-like) over the user's last ``max_len`` item
vectors with learned positions (counted from the start of the window, so a prefix in training
looks exactly like a short history at inference) and time-gap bucket embeddings.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn

from retrieval.config import RetrievalConfig

LIST_ATTRS = ("genres", "categories", "tags")
STR_ATTRS = ("brand",)


# ---------------------------------------------------------------------------------------------
# attribute features


class AttrVocab:
    """Attribute tokens (``genres=Comedy``, ``price=3``, ...) of a catalogue, and price edges."""

    def __init__(self, tokens: list[str], price_edges: list[float], max_tokens: int) -> None:
        self.tokens = tokens
        self.index = {t: i + 1 for i, t in enumerate(tokens)}  # 0 = padding
        self.price_edges = price_edges
        self.max_tokens = max_tokens

    @classmethod
    def build(
        cls, items: pl.DataFrame, price_buckets: int, max_tokens: int, min_count: int = 2
    ) -> AttrVocab:
        """Tokens occurring in at least ``min_count`` items; price quantile edges."""
        edges: list[float] = []
        if "price" in items.columns and price_buckets > 1:
            prices = items["price"].drop_nulls().drop_nans().to_numpy()
            if len(prices):
                qs = np.quantile(prices, np.linspace(0, 1, price_buckets + 1)[1:-1])
                edges = sorted({float(q) for q in qs})
        counts = Counter(t for row in _raw_tokens(items, edges) for t in set(row))
        tokens = sorted(t for t, c in counts.items() if c >= min_count)
        return cls(tokens, edges, max_tokens)

    def encode(self, items: pl.DataFrame) -> np.ndarray:
        """int64 [n, max_tokens] token ids (0 = padding) for an items frame."""
        out = np.zeros((len(items), max(1, self.max_tokens)), dtype=np.int64)
        for r, row in enumerate(_raw_tokens(items, self.price_edges)):
            ids = [self.index[t] for t in dict.fromkeys(row) if t in self.index]
            ids = ids[: self.max_tokens]
            out[r, : len(ids)] = ids
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "price_edges": self.price_edges,
            "max_tokens": self.max_tokens,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AttrVocab:
        return cls(list(d["tokens"]), [float(x) for x in d["price_edges"]], int(d["max_tokens"]))


def _raw_tokens(items: pl.DataFrame, price_edges: list[float]) -> list[list[str]]:
    n = len(items)
    rows: list[list[str]] = [[] for _ in range(n)]
    for col in LIST_ATTRS:
        if col in items.columns and items[col].dtype == pl.List(pl.Utf8):
            for r, vals in enumerate(items[col].to_list()):
                rows[r].extend(f"{col}={v}" for v in vals or [] if v)
    for col in STR_ATTRS:
        if col in items.columns and items[col].dtype == pl.Utf8:
            for r, v in enumerate(items[col].to_list()):
                if v:
                    rows[r].append(f"{col}={v}")
    if price_edges and "price" in items.columns and items["price"].dtype.is_numeric():
        for r, v in enumerate(items["price"].cast(pl.Float64).to_list()):
            if v is not None and not math.isnan(v):
                rows[r].append(f"price={int(np.searchsorted(price_edges, v, side='right'))}")
    return rows


# ---------------------------------------------------------------------------------------------
# time gaps


def gap_buckets(timestamps: list[int | None] | None, n_buckets: int) -> list[int]:
    """Bucket ids of the gaps between consecutive events: 0 = unknown / first event,
    1..n_buckets = log2-spaced gaps (each bucket spans 32 / n_buckets octaves of seconds)."""
    if timestamps is None or n_buckets <= 0:
        return [0] * (len(timestamps) if timestamps is not None else 0)
    out = [0]
    for prev, cur in zip(timestamps[:-1], timestamps[1:]):
        if prev is None or cur is None:
            out.append(0)
            continue
        gap = max(0, int(cur) - int(prev))
        b = int(math.log2(gap + 1) * n_buckets / 32.0)
        out.append(1 + min(n_buckets - 1, b))
    return out[: len(timestamps)]


# ---------------------------------------------------------------------------------------------
# towers


class ItemTower(nn.Module):
    """(text vector, ID index, attribute tokens) -> item vector [m, dim]."""

    def __init__(self, cfg: RetrievalConfig, text_dim: int, n_ids: int, n_attr: int) -> None:
        super().__init__()
        d = cfg.dim
        self.features = tuple(cfg.features)
        self.fusion = cfg.fusion
        parts = 0
        if "text" in self.features:
            self.text_proj = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, d))
            parts += 1
        if "id" in self.features:
            self.id_emb = nn.Embedding(n_ids + 1, d, padding_idx=0)
            nn.init.normal_(self.id_emb.weight, std=0.02)
            with torch.no_grad():
                self.id_emb.weight[0].zero_()
            parts += 1
        if "attr" in self.features:
            self.attr_emb = nn.EmbeddingBag(n_attr + 1, d, mode="mean", padding_idx=0)
            nn.init.normal_(self.attr_emb.weight, std=0.02)
            parts += 1
        self.n_parts = parts
        if cfg.fusion == "concat_mlp":
            self.mlp = nn.Sequential(nn.Linear(parts * d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        else:
            self.gate = nn.Linear(parts * d, parts * d)

    def forward(
        self, text: torch.Tensor | None, ids: torch.Tensor, attrs: torch.Tensor
    ) -> torch.Tensor:
        parts = []
        if "text" in self.features:
            assert text is not None
            parts.append(self.text_proj(text))
        if "id" in self.features:
            parts.append(self.id_emb(ids))
        if "attr" in self.features:
            parts.append(self.attr_emb(attrs))
        x = torch.cat(parts, dim=-1)
        if self.fusion == "concat_mlp":
            return self.mlp(x) + sum(parts)
        g = torch.sigmoid(self.gate(x)).view(*x.shape[:-1], self.n_parts, -1)
        return (g * x.view_as(g)).sum(dim=-2)


class Block(nn.Module):
    """Pre-LN transformer block: causal self-attention (SDPA) and a GELU feed-forward."""

    def __init__(self, d: int, n_heads: int, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.attn_dropout = attn_dropout
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (
            self.qkv(self.ln1(x))
            .view(b, t, 3, self.n_heads, d // self.n_heads)
            .permute(2, 0, 3, 1, 4)
        )
        a = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.attn_dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class UserTower(nn.Module):
    """Causal pre-LN transformer: item vectors [B, T, d] -> user vectors [B, T, d]."""

    def __init__(self, cfg: RetrievalConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.pos = nn.Embedding(cfg.max_len, d)
        self.time = nn.Embedding(cfg.time_buckets + 1, d) if cfg.time_buckets > 0 else None
        nn.init.normal_(self.pos.weight, std=0.02)
        if self.time is not None:
            nn.init.normal_(self.time.weight, std=0.02)
        self.in_norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(d, cfg.n_heads, cfg.dropout, cfg.attn_dropout) for _ in range(cfg.n_layers)
        )
        self.out_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.in_norm(x) + self.pos.weight[:t].unsqueeze(0)
        if self.time is not None:
            h = h + self.time(gaps)
        h = self.drop(h)
        for block in self.blocks:
            h = block(h)
        return self.out_norm(h)


class TrainableText(nn.Module):
    """A sentence-transformers encoder whose top layers or LoRA adapters train (texts -> [m, t])."""

    def __init__(self, st_model: Any, cfg: RetrievalConfig) -> None:
        super().__init__()
        self.st = st_model
        hf = st_model[0].auto_model
        for p in st_model.parameters():
            p.requires_grad_(False)
        if cfg.lm_mode == "lora":
            from peft import LoraConfig, get_peft_model

            names = {n.rsplit(".", 1)[-1] for n, _ in hf.named_modules()}
            targets: Any = [t for t in ("query", "value") if t in names] or "all-linear"
            lcfg = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=targets,
            )
            st_model[0].auto_model = get_peft_model(hf, lcfg)
        elif cfg.lm_mode == "finetune":
            layers = _encoder_layers(hf)
            for layer in layers[-cfg.finetune_layers :] if cfg.finetune_layers > 0 else []:
                for p in layer.parameters():
                    p.requires_grad_(True)

    def forward(self, texts: list[str]) -> torch.Tensor:
        feats = self.st.tokenize(texts)
        dev = next(self.st.parameters()).device
        feats = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in feats.items()}
        return self.st(feats)["sentence_embedding"]

    def merged(self) -> Any:
        """The plain sentence-transformers model with LoRA adapters merged in (for saving)."""
        from peft import PeftModel

        hf = self.st[0].auto_model
        if isinstance(hf, PeftModel):
            self.st[0].auto_model = hf.merge_and_unload()
        return self.st


def _encoder_layers(hf: nn.Module) -> nn.ModuleList:
    for path in ("encoder.layer", "layers", "transformer.layer", "encoder.layers"):
        mod: Any = hf
        for part in path.split("."):
            mod = getattr(mod, part, None)
            if mod is None:
                break
        if isinstance(mod, nn.ModuleList):
            return mod
    from rec.errors import ConfigError

    raise ConfigError("lm_mode=finetune: cannot find the transformer layers of this encoder")
