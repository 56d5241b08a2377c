"""Configuration of the two-tower retrieval stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class RetrievalConfig:
    """Two-tower retrieval: item tower (text + ID + attributes), user tower (causal transformer).

    Defaults are the best validated choice on ml-latest-small 5-core (see BENCHMARKS.md).
    """

    # --- item tower -------------------------------------------------------------------------
    encoder: str = "packaged:all-MiniLM-L6-v2"  # local path, hub name, or the packaged MiniLM
    features: tuple[str, ...] = ("text", "id", "attr")  # any non-empty subset
    fusion: Literal["concat_mlp", "gated_sum"] = "gated_sum"
    lm_mode: Literal["frozen", "finetune", "lora"] = "frozen"
    finetune_layers: int = 1  # lm_mode=finetune: top transformer layers that train
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lm_lr: float = 5e-5  # learning rate of the language model parameters (finetune / lora)
    text_max_tokens: int = 64
    text_batch_size: int = 64
    text_cache_dir: str = ""  # "" -> $REC_CACHE_DIR/text-emb or ~/.cache/rec/text-emb
    id_dropout: float = 0.2  # share of items whose ID embedding is hidden per step (cold start)
    price_buckets: int = 8
    max_attr_tokens: int = 16
    # --- user tower -------------------------------------------------------------------------
    dim: int = 64
    max_len: int = 200
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.3
    attn_dropout: float = 0.0  # dropout on attention weights (costly on CPU)
    time_buckets: int = 16  # log-spaced gap buckets; 0 disables time-gap embeddings
    time_dropout: float = 0.1  # share of training sequences seen without timestamps
    # --- training ---------------------------------------------------------------------------
    loss: Literal["auto", "full_softmax", "sampled_softmax"] = "auto"
    full_softmax_max_items: int = 20_000  # loss=auto: full softmax up to this catalogue size
    n_negatives: int = 512  # sampled softmax: extra negatives beside the in-batch ones
    negative_sampler: Literal["uniform", "popularity"] = "uniform"
    logq: bool = True  # subtract log expected sampling count (sampled softmax)
    temperature: float = 1.0
    batch_size: int = 16  # windows (of up to max_len + 1 events) per step
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    epochs: int = 200
    eval_every: int = 2  # epochs between validation runs
    patience: int = 5  # validation runs without improvement before stopping
    max_minutes: float = 0.0  # wall-clock training budget; 0 = unlimited
    eval_filter_seen: bool = True  # remove history items when ranking validation targets
    cold_item_frac: float = 0.0  # experiment: hold out this share of items from training
    num_threads: int = 0  # torch CPU threads; 0 = leave torch's default
    bf16: bool = False  # bfloat16 autocast for training (CPUs with avx512_bf16 / AMX, GPUs)
